#!/bin/sh
# backup.sh — the pre-upgrade backup of the data dir (+ the separate v0.1.x KMS
# dir), in one of two modes (PDB_BACKUP_MODE):
#
# snapshot (binary mode's default): nothing is stopped and nothing is sent to
#   S3 here. The data dirs are copied with rsync, while the service runs, to
#   <dbPath>.backup-snapshot/ (the warm copy); the step that stops the service
#   for the upgrade (install.sh, or migrate.sh when the data format is crossed)
#   copies what changed since (the cold delta) before it changes anything, and
#   offsite.sh uploads the snapshot once the service runs again. Falls back to
#   stream, with a warning, when rsync is missing or the snapshot does not fit
#   beside the data dir with deployment.binary.minFreeMb left over.
# stream (container mode, a restore, backup.offsiteBeforeStart, the fallback):
#   the service is stopped, the tar is streamed through zstd -T0 (gzip when the
#   host has no zstd) straight into S3 (no copy on the host), hashed in the
#   stream, and verified (size in S3, "<key>.sha256" sidecar) before the script
#   ends; the service is left STOPPED for the install. If anything fails after
#   the stop, the EXIT trap restarts the service on the release it was running
#   and the script exits 3 (4 if that restart failed).
#
# Archive members are the absolute paths without the leading "/" (e.g.
# var/lib/progressdb/...), plus progressdb-backup.json at the root. By hand:
#   aws s3 cp s3://<bucket>/<key>.tar.zst - | zstd -dc | tar -xf - -C /
#   aws s3 cp s3://<bucket>/<key>.tar.gz - | tar -xzf - -C /   (older backups)
# The KMS master key is never on disk in these dirs; a config file in the data
# dir, progressdb.env and 0.2.x crash dumps are left out.
#
# Retention: the next upgrade's preflight tags this backup's predecessors
# superseded (not this script: nothing here may lengthen the time the service
# is stopped).
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_KMS_DATA_DIR PDB_SERVICE_MANAGER
#   PDB_SERVICE_NAME PDB_SUPERVISORCTL_CONFIG PDB_STOP_TIMEOUT PDB_AWS
#   PDB_VERSION PDB_STACK PDB_S3_BUCKET PDB_S3_PREFIX PDB_S3_ENDPOINT
#   PDB_S3_REGION PDB_GZIP_LEVEL PDB_HEALTH_URL (to confirm a restart after failure)
#   PDB_DOCKER_HOST (docker mode: DOCKER_HOST for the docker CLI on the host; "" = its default)
#   PDB_RUN_KEY (one per upgrade: the version and restore request it is for)
#   PDB_SERVICE_USER PDB_CONFIG_FILE (a restart after a failure gives the files to the service user)
#   PDB_SUPERVISOR_CONF_DIR PDB_SYSTEMD_UNIT_DIR (a service this program did not install is never stopped)
#   PDB_BACKUP_MODE (snapshot|stream) PDB_MIN_FREE_MB (what the snapshot must leave free)
# Stdin: optional AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
# Stdout: stream: {"uri":..,"bucket":..,"key":..,"size":N,"sha256":..,"fromVersion":..,"toVersion":..,"at":..}
#     snapshot: {"snapshot":<dir>,"key":..,"fromVersion":..,"toVersion":..,"at":..} (offsite.sh uploads it)
#     or {"skipped":true,"reason":..} when there is no data yet.
# Exit: 0 ok; 1 failed before anything was stopped; 2 bad parameters;
#   3 failed after stopping, service restarted on its old version;
#   4 failed after stopping AND the restart failed.
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}"
: "${PDB_VERSION:?}" "${PDB_STACK:?}" "${PDB_S3_BUCKET:?}"
: "${PDB_KMS_DATA_DIR=}" "${PDB_SUPERVISORCTL_CONFIG=}" "${PDB_STOP_TIMEOUT:=30}" "${PDB_AWS:=aws}"
: "${PDB_S3_PREFIX=}" "${PDB_S3_ENDPOINT=}" "${PDB_S3_REGION:=us-east-1}" "${PDB_GZIP_LEVEL:=6}"
: "${PDB_HEALTH_URL=}" "${PDB_DOCKER_HOST=}" "${PDB_RUN_KEY:?}" "${PDB_SERVICE_USER:?}" "${PDB_CONFIG_FILE=}"
: "${PDB_SUPERVISOR_CONF_DIR:=/etc/supervisor/conf.d}" "${PDB_SYSTEMD_UNIT_DIR:=/etc/systemd/system}"
: "${PDB_BACKUP_MODE:=stream}" "${PDB_MIN_FREE_MB:=0}"
PDB_SCRIPT=${PDB_SCRIPT:-backup}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets

# One backup per upgrade. The step is re-run without a version change only
# when one of its other inputs changed (S3 settings, credentials, connection):
# those take effect at the next upgrade, and this run repeats the recorded
# result without stopping anything.
# (A new upgrade, even back to an earlier version, has another key than the last.)
if recorded_result backup; then
  log "the backup for this upgrade ($PDB_RUN_KEY) was already taken: nothing is stopped; changed backup settings apply to the next upgrade"
  exit 0
fi

check_service_files
from=$(current_version)
if [ ! -d "$PDB_DB_PATH" ] || [ -z "$(ls -A -- "$PDB_DB_PATH" 2>/dev/null)" ]; then
  log "no data at $PDB_DB_PATH: nothing to back up (fresh host)"
  record_result backup "$(printf '{"skipped":true,"reason":%s,"fromVersion":%s}' \
    "$(json_str "no data at $PDB_DB_PATH")" "$(json_str "$from")")"
  exit 0
fi
[ -n "$from" ] || from=unknown

ts=$(date -u +%Y%m%dT%H%M%SZ)
prefix=$(printf '%s' "$PDB_S3_PREFIX" | sed -e 's#^/*##' -e 's#/*$##')
key="${prefix:+$prefix/}$PDB_STACK/$ts-$from-to-$PDB_VERSION.tar.$(backup_codec)"
uri="s3://$PDB_S3_BUCKET/$key"
[ "$(backup_codec)" = zst ] || log "WARNING: zstd is not installed on the host: the backup is compressed with gzip (slower)"

# What goes into the archive (paths relative to /).
backup_members
set -- "${PDB_DB_ABS#/}"
[ -z "$PDB_KMS_ABS" ] || set -- "$@" "${PDB_KMS_ABS#/}"

if [ "$PDB_BACKUP_MODE" = snapshot ] && ! snapshot_room; then
  log "WARNING: no room for the backup snapshot ($PDB_SNAPSHOT_WHY): falling back to the streaming backup, with the service stopped for the whole upload"
  PDB_BACKUP_MODE=stream
fi

# A complete snapshot of an earlier upgrade that was never uploaded is that upgrade's only backup: never overwritten.
case $(snapshot_status) in
  sealed | released)
    [ "$(snapshot_key)" = "$PDB_RUN_KEY" ] ||
      fail 1 "$(snapshot_dir) holds the backup of an earlier upgrade ($(snapshot_key)) that was never uploaded: run that upgrade again (pulumi up) so that it is uploaded, or move it away if it is not needed (nothing was stopped)" ;;
esac

if [ "$PDB_BACKUP_MODE" = snapshot ]; then
  snap=$(snapshot_dir)
  # A snapshot left by an earlier upgrade (its upload never ran) is refreshed: rsync copies only what changed.
  snapshot_set copying "$PDB_RUN_KEY"
  (umask 077 && mkdir -p -- "$snap") && chmod 0700 "$snap"
  backup_manifest "$snap/progressdb-backup.json" "$ts" "$from"
  log "copying $PDB_DB_ABS${PDB_KMS_ABS:+ and $PDB_KMS_ABS} (~$(($(data_kb) / 1024)) MB) to $snap while $PDB_SERVICE_NAME runs"
  t0=$(date +%s)
  rc=0
  snapshot_copy || rc=$?
  # 24: files vanished during the copy (the service deletes obsolete files): the cold delta settles it.
  [ "$rc" = 0 ] || [ "$rc" = 24 ] || fail 1 "the copy of $PDB_DB_PATH to $snap failed (rsync exit $rc); nothing was stopped"
  # On disk now, while nothing is stopped: the cold delta then has only its own few writes to flush.
  sync -f "$snap" 2>/dev/null || true
  if svc_is_running; then
    snapshot_set pending
    log "warm copy done in $(($(date +%s) - t0)) s; the step that stops $PDB_SERVICE_NAME completes it"
  else
    # Nothing writes the data: the copy is already what the old version left. It is uploaded
    # once the install (which starts the service) has ended.
    snapshot_set sealed
    log "copy done in $(($(date +%s) - t0)) s ($PDB_SERVICE_NAME is not running: the copy is complete)"
  fi
  record_result backup "$(printf '{"snapshot":%s,"key":%s,"fromVersion":%s,"toVersion":%s,"at":%s}' \
    "$(json_str "$snap")" "$(json_str "$key")" "$(json_str "$from")" "$(json_str "$PDB_VERSION")" "$(json_str "$ts")")"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/progressdb-backup.XXXXXX")
stopped=0
on_exit() {
  rc=$?
  trap - EXIT
  trap '' PIPE HUP
  upload_abort
  [ "$rc" -eq 0 ] || [ -z "${published:-}" ] || drop_backup "$key"
  rm -rf -- "$work"
  if [ "$rc" -ne 0 ] && [ "$stopped" = 1 ]; then
    log "backup failed after $PDB_SERVICE_NAME was stopped: restarting it on the release it was running ($from)"
    if svc_start && wait_ready "$from" "$PDB_STOP_TIMEOUT"; then
      log "$PDB_SERVICE_NAME is running again on $from; no upgrade was attempted"
      rc=3
    elif svc_is_running; then
      log "$PDB_SERVICE_NAME was restarted on $from but did not report ready ($PDB_LAST_RESPONSE)"
      rc=3
    else
      log "FAILED to restart $PDB_SERVICE_NAME on $from — the service is DOWN; see $(svc_where_logs)"
      rc=4
    fi
  fi
  exit "$rc"
}
trap on_exit EXIT
# A lost SSH session (HUP, or SIGPIPE on the next log line) aborts the backup
# and the EXIT trap starts the old version again.
trap 'exit 130' INT TERM HUP
trap 'exit 141' PIPE

# Stop writes.
if svc_is_running; then
  log "stopping $PDB_SERVICE_NAME ($from) for a consistent backup"
  stopped=1
  svc_stop || fail 1 "could not stop $PDB_SERVICE_NAME"
else
  log "$PDB_SERVICE_NAME is not running; backing up the data as it is"
fi

backup_manifest "$work/progressdb-backup.json" "$ts" "$from"
log "streaming $PDB_DB_ABS${PDB_KMS_ABS:+ and $PDB_KMS_ABS} (~$(($(data_kb) / 1024)) MB) to $uri"
PDB_UP_FROM=$from
published=1
upload_backup "$key" "$work" "$work" / "$@" || fail 1 "$PDB_UP_ERROR"
published=''
log "verified $uri ($PDB_UP_SIZE bytes, sha256 $PDB_UP_SHA); $PDB_SERVICE_NAME stays stopped for the install"

record_result backup "$(printf '{"uri":%s,"bucket":%s,"key":%s,"size":%s,"sha256":%s,"fromVersion":%s,"toVersion":%s,"at":%s}' \
  "$(json_str "$uri")" "$(json_str "$PDB_S3_BUCKET")" "$(json_str "$key")" "$PDB_UP_SIZE" "$(json_str "$PDB_UP_SHA")" \
  "$(json_str "$from")" "$(json_str "$PDB_VERSION")" "$(json_str "$ts")")"
