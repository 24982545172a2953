#!/bin/sh
# offsite.sh — puts this upgrade's backup in S3 and verifies it, after the
# service runs again. The engine starts it beside the migration and the install
# (it depends on the backup only), so it runs, and records its result, whether
# the install succeeds or fails and reverts: `restore.backup: before:<version>`
# finds the backup of a failed upgrade.
#
# - The backup for this run key was streamed (backup.sh's stream mode): its
#   verified result is repeated.
# - It is a snapshot (backup.sh's snapshot mode): waits until the step that
#   stopped the service has completed the snapshot and ended (released), then
#   streams it through zstd (gzip without zstd) into S3 with its sha256 measured
#   in the stream, verifies the object's size, writes the "<key>.sha256"
#   sidecar, records the result, and only then removes the local snapshot. No
#   aws process starts before the release: none runs while the service is stopped.
#   An upgrade that ended before stopping the service (abandoned) has nothing new
#   to back up: the step fails, naming it; the next run completes and uploads it.
# A lost SSH session does not stop the upload: it finishes and records its
# result on the host, which the next run repeats.
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_KMS_DATA_DIR PDB_AWS PDB_VERSION
#   PDB_STACK PDB_S3_BUCKET PDB_S3_ENDPOINT PDB_S3_REGION PDB_RUN_KEY
#   PDB_WAIT_SECONDS (how long to wait for the release)
# Stdin: optional AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
# Stdout: {"uri":..,"bucket":..,"key":..,"size":N,"sha256":..,"fromVersion":..,"toVersion":..,"at":..}
#     or {"skipped":true,...} when the backup had nothing to back up.
# Exit: 0 ok; 1 failed (the local snapshot, if any, is kept); 2 bad parameters.
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_VERSION:?}" "${PDB_STACK:?}" "${PDB_S3_BUCKET:?}" "${PDB_RUN_KEY:?}"
: "${PDB_KMS_DATA_DIR=}" "${PDB_AWS:=aws}" "${PDB_S3_ENDPOINT=}" "${PDB_S3_REGION:=us-east-1}" "${PDB_WAIT_SECONDS:=7200}"
PDB_SCRIPT=${PDB_SCRIPT:-offsite}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets
trap '' HUP PIPE
# One upload at a time: a run started while an earlier one (its session lost) still uploads
# waits for it, then repeats its result.
mkdir -p -- "$PDB_INSTALL_DIR/run"
exec 8>>"$PDB_INSTALL_DIR/run/offsite.lock"
if command -v flock >/dev/null 2>&1; then
  flock 8
fi
if recorded_result offsite; then
  exit 0
fi
backup=$(recorded_result backup) || fail 1 "no backup is recorded on the host for this upgrade ($PDB_RUN_KEY): the backup step did not run"
case $backup in
  *'"snapshot":'*) ;;
  *)
    # Streamed and verified by the backup step (or nothing to back up).
    record_result offsite "$backup"
    exit 0
    ;;
esac
field() {
  printf '%s' "$backup" | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"
}
key=$(field key)
from=$(field fromVersion)
ts=$(field at)
snap=$(field snapshot)
uri="s3://$PDB_S3_BUCKET/$key"

deadline=$(($(date +%s) + PDB_WAIT_SECONDS))
# "abandoned" when this step starts may be an earlier run's: the install or migration of this
# run claims it back (pending) as it starts. It counts once this step has seen another status,
# or after a grace period in which no step claimed it.
grace=$(($(date +%s) + 30))
seen=''
said=''
while :; do
  [ "$(snapshot_key)" = "$PDB_RUN_KEY" ] ||
    fail 1 "the backup snapshot of this upgrade ($PDB_RUN_KEY) is gone from $snap (the host records '$(snapshot_key)' in $(snapshot_file))"
  status=$(snapshot_status)
  case $status in
    released) break ;;
    abandoned)
      if [ -n "$seen" ] || [ "$(date +%s)" -ge "$grace" ]; then
        fail 1 "the upgrade ended before $PDB_DB_PATH was stopped, so the snapshot in $snap was not completed and nothing was uploaded (the data was not changed); the next run of the upgrade completes and uploads it"
      fi ;;
    *) seen=1 ;;
  esac
  if [ "$(date +%s)" -ge "$deadline" ]; then
    fail 1 "the backup snapshot in $snap was not completed within ${PDB_WAIT_SECONDS}s (status: $status): the step that stops the service did not run or did not end"
  fi
  if [ -z "$said" ]; then
    log "waiting for the upgrade to stop the service, complete the snapshot in $snap and start it again (status: $status)"
    said=1
  fi
  sleep 0.2
done

work=$(mktemp -d "${TMPDIR:-/tmp}/progressdb-offsite.XXXXXX")
published=''
on_exit() {
  rc=$?
  trap - EXIT
  upload_abort
  [ "$rc" -eq 0 ] || [ -z "$published" ] || drop_backup "$key"
  rm -rf -- "$work"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

backup_members
set -- "${PDB_DB_ABS#/}"
[ -z "$PDB_KMS_ABS" ] || set -- "$@" "${PDB_KMS_ABS#/}"
for m in "$@"; do
  [ -d "$snap/tree/$m" ] || fail 1 "the backup snapshot $snap has no $m/: nothing was uploaded"
done
log "uploading the snapshot of $PDB_DB_ABS${PDB_KMS_ABS:+ and $PDB_KMS_ABS} ($from, taken for $PDB_VERSION) to $uri"
PDB_UP_FROM=$from
published=1
upload_backup "$key" "$work" "$snap" "$snap/tree" "$@" || fail 1 "$PDB_UP_ERROR (the snapshot is kept in $snap; the next run uploads it)"
published=''
log "verified $uri ($PDB_UP_SIZE bytes, sha256 $PDB_UP_SHA)"
record_result offsite "$(printf '{"uri":%s,"bucket":%s,"key":%s,"size":%s,"sha256":%s,"fromVersion":%s,"toVersion":%s,"at":%s}' \
  "$(json_str "$uri")" "$(json_str "$PDB_S3_BUCKET")" "$(json_str "$key")" "$PDB_UP_SIZE" "$(json_str "$PDB_UP_SHA")" \
  "$(json_str "$from")" "$(json_str "$PDB_VERSION")" "$(json_str "$ts")")" >/dev/null
# The offsite copy is verified: the local one is no longer needed.
snapshot_forget
rm -rf -- "$snap"
log "removed the local snapshot $snap"
recorded_result offsite
