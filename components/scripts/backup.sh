#!/bin/sh
# backup.sh — stop the service (no writes during the copy), stream a tar of
# the data dir (+ the separate v0.1.x KMS dir) through gzip straight into S3
# (no temp copy on the host), hash it in the stream, publish it with its
# sha256 as object metadata plus a "<key>.sha256" sidecar, then download it
# back and re-verify size, sha256 and that it is a readable tar.gz.
#
# Upload protocol: the stream goes to "<key>.partial"; once it is complete,
# a server-side copy with --metadata-directive REPLACE writes the final key
# with its metadata (aws s3 cp does a multipart copy above 5 GB, so this has
# no size limit), then the partial is deleted. The final key therefore only
# ever exists complete and with its sha256 metadata.
#
# Archive members are the absolute paths without the leading "/" (e.g.
# var/lib/progressdb/...), plus progressdb-backup.json at the root. Restore:
#   aws s3 cp s3://<bucket>/<key> - | tar -xzf - -C /
# The KMS master key is never on disk in these dirs; a file named
# progressdb.env (the service env file) is excluded anyway.
#
# Retention: the next upgrade's preflight tags this backup's predecessors
# superseded (not this script: nothing here may lengthen the time the service
# is stopped). The partial upload's leftover version is tagged here.
#
# On success the service is left STOPPED (install starts the new version).
# If anything fails after the stop, the EXIT trap restarts the service on the
# release it was running and the script exits 3 (4 if that restart failed).
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_KMS_DATA_DIR PDB_SERVICE_MANAGER
#   PDB_SERVICE_NAME PDB_SUPERVISORCTL_CONFIG PDB_STOP_TIMEOUT PDB_AWS
#   PDB_VERSION PDB_STACK PDB_S3_BUCKET PDB_S3_PREFIX PDB_S3_ENDPOINT
#   PDB_S3_REGION PDB_GZIP_LEVEL PDB_HEALTH_URL (to confirm a restart after failure)
#   PDB_DOCKER_HOST (docker mode: DOCKER_HOST for the docker CLI on the host; "" = its default)
#   PDB_RUN_KEY (one per upgrade: the version and restore request it is for)
#   PDB_SERVICE_USER PDB_CONFIG_FILE (a restart after a failure gives the files to the service user)
#   PDB_SUPERVISOR_CONF_DIR PDB_SYSTEMD_UNIT_DIR (a service this program did not install is never stopped)
# Stdin: optional AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
# Stdout: {"uri":..,"bucket":..,"key":..,"size":N,"sha256":..,"fromVersion":..,"toVersion":..,"at":..}
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
key="${prefix:+$prefix/}$PDB_STACK/$ts-$from-to-$PDB_VERSION.tar.gz"
partial="$key.partial"
uri="s3://$PDB_S3_BUCKET/$key"

# What goes into the archive (paths relative to /).
db_abs=$(cd -- "$PDB_DB_PATH" && pwd -P)
set -- "${db_abs#/}"
kms_abs=''
if [ -n "$PDB_KMS_DATA_DIR" ] && [ -d "$PDB_KMS_DATA_DIR" ]; then
  kms_abs=$(cd -- "$PDB_KMS_DATA_DIR" && pwd -P)
  case "$kms_abs/" in
    "$db_abs"/*) kms_abs='' ;; # already inside the data dir
    *) set -- "$@" "${kms_abs#/}" ;;
  esac
fi

SUPERSEDED='TagSet=[{Key=progressdb-backup,Value=superseded}]'
# drop_partial: tagged first, so that in a versioned bucket its now noncurrent version expires too.
drop_partial() {
  aws_s3 s3api put-object-tagging --bucket "$PDB_S3_BUCKET" --key "$partial" --tagging "$SUPERSEDED" || true
  aws_s3 s3 rm --only-show-errors "s3://$PDB_S3_BUCKET/$partial"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/progressdb-backup.XXXXXX")
stopped=0
uploaded_partial=0
on_exit() {
  rc=$?
  trap - EXIT
  trap '' PIPE HUP
  if [ "$rc" -ne 0 ] && [ "$uploaded_partial" = 1 ]; then
    drop_partial >&2 2>/dev/null || true
  fi
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

printf '{"format":1,"createdAt":%s,"host":%s,"fromVersion":%s,"toVersion":%s,"dbPath":%s,"kmsDataDir":%s}\n' \
  "$(json_str "$ts")" "$(json_str "$(hostname 2>/dev/null || echo unknown)")" "$(json_str "$from")" \
  "$(json_str "$PDB_VERSION")" "$(json_str "$db_abs")" "$(json_str "$kms_abs")" >"$work/progressdb-backup.json"

# Upper bound for the stream size (aws s3 cp - needs it above ~50 GB).
est_kb=$(du -skL -- "$PDB_DB_PATH" ${kms_abs:+"$kms_abs"} 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
expected_size=$((est_kb * 1024 + est_kb * 11 + 1048576))

log "streaming $db_abs${kms_abs:+ and $kms_abs} (~$((est_kb / 1024)) MB) to $uri"
digest_start "$work"
uploaded_partial=1
{
  rc=0
  # Never in a backup: a service env file, a config file in the data dir (container
  # mode keeps it at /data/config.yaml: it holds the keys), and 0.2.x crash
  # dumps (they print the process environment).
  tar -cf - --exclude=progressdb.env --exclude="${db_abs#/}/config.yaml" --exclude='*/state/crash' --exclude='*/state/abort' \
    -C "$work" progressdb-backup.json -C / -- "$@" || rc=$?
  echo "$rc" >"$work/tar.rc"
} | {
  rc=0
  gzip -c "-$PDB_GZIP_LEVEL" || rc=$?
  echo "$rc" >"$work/gzip.rc"
} | {
  rc=0
  digest_tee "$work" || rc=$?
  echo "$rc" >"$work/tee.rc"
} | {
  rc=0
  aws_s3 s3 cp --only-show-errors --expected-size "$expected_size" --content-type application/gzip \
    - "s3://$PDB_S3_BUCKET/$partial" 2>"$work/upload.err" || rc=$?
  echo "$rc" >"$work/upload.rc"
}
digest_result "$work"
for stage in tar gzip tee upload; do
  rc=$(cat "$work/$stage.rc" 2>/dev/null || echo missing)
  if [ "$rc" != 0 ]; then
    detail=''
    [ "$stage" = upload ] && detail=": $(tr '\n' ' ' <"$work/upload.err")"
    fail 1 "backup stream failed at $stage (exit $rc) while writing s3://$PDB_S3_BUCKET/$partial ($(s3_where))$detail"
  fi
done
sha=$PDB_DIGEST_SHA
size=$PDB_DIGEST_SIZE
case $sha in *[!0-9a-f]* | '') fail 1 "could not compute the sha256 of the stream" ;; esac
log "uploaded $size bytes, sha256 $sha; publishing $uri with metadata"

meta=$(printf '{"sha256":%s,"size":%s,"from-version":%s,"to-version":%s,"stack":%s}' \
  "$(json_str "$sha")" "$(json_str "$size")" "$(json_str "$from")" "$(json_str "$PDB_VERSION")" "$(json_str "$PDB_STACK")")
if ! err=$(aws_s3 s3 cp --only-show-errors --metadata "$meta" --metadata-directive REPLACE \
  --content-type application/gzip "s3://$PDB_S3_BUCKET/$partial" "$uri" 2>&1); then
  fail 1 "could not publish $uri from its partial upload: $err"
fi

# The rest runs in parallel (each aws CLI call costs ~1 s of start-up):
# delete the partial; write + read back the sidecar; head-object; and a fresh
# download that is re-hashed, counted and listed (gzip -t + tar -t).
drop_partial >"$work/rm.log" 2>&1 &
rm_pid=$!
(
  printf '%s  %s\n' "$sha" "${key##*/}" | aws_s3 s3 cp --only-show-errors --content-type text/plain - "$uri.sha256"
  aws_s3 s3 cp --only-show-errors "$uri.sha256" -
) >"$work/sidecar.out" 2>"$work/sidecar.err" &
sidecar_pid=$!
aws_s3 s3api head-object --bucket "$PDB_S3_BUCKET" --key "$key" \
  --query '[ContentLength, Metadata.sha256]' --output text >"$work/head.out" 2>&1 &
head_pid=$!

digest_start "$work"
{
  rc=0
  aws_s3 s3 cp --only-show-errors "$uri" - 2>"$work/download.err" || rc=$?
  echo "$rc" >"$work/download.rc"
} | {
  rc=0
  digest_tee "$work" || rc=$?
  echo "$rc" >"$work/vtee.rc"
} | {
  rc=0
  gzip -dc | tar -tf - -- >/dev/null || rc=$?
  echo "$rc" >"$work/list.rc"
}
digest_result "$work"
head_rc=0
wait "$head_pid" || head_rc=$?
sidecar_rc=0
wait "$sidecar_pid" || sidecar_rc=$?
wait "$rm_pid" || log "WARNING: could not delete s3://$PDB_S3_BUCKET/$partial: $(tr '\n' ' ' <"$work/rm.log")"
uploaded_partial=0

[ "$head_rc" = 0 ] || fail 1 "head-object $uri failed: $(tr '\n' ' ' <"$work/head.out")"
head_size=$(awk '{ print $1 }' <"$work/head.out")
head_sha=$(awk '{ print $2 }' <"$work/head.out")
[ "$head_size" = "$size" ] || fail 1 "verification failed: $uri is $head_size bytes in S3, $size were streamed"
[ "$head_sha" = "$sha" ] || fail 1 "verification failed: $uri metadata sha256 is '$head_sha', expected $sha"
[ "$sidecar_rc" = 0 ] || fail 1 "could not write/read the sidecar $uri.sha256: $(tr '\n' ' ' <"$work/sidecar.err")"
sidecar=$(cut -d' ' -f1 <"$work/sidecar.out")
[ "$sidecar" = "$sha" ] || fail 1 "verification failed: sidecar $uri.sha256 says '$sidecar', expected $sha"
[ "$(cat "$work/download.rc")" = 0 ] || fail 1 "verification download of $uri failed: $(tr '\n' ' ' <"$work/download.err")"
[ "$(cat "$work/list.rc")" = 0 ] || fail 1 "verification failed: $uri is not a readable tar.gz"
vsha=$PDB_DIGEST_SHA
vsize=$PDB_DIGEST_SIZE
if [ "$vsha" != "$sha" ] || [ "$vsize" != "$size" ]; then
  fail 1 "verification failed: downloaded $uri is $vsize bytes sha256 $vsha, expected $size bytes sha256 $sha"
fi
log "verified $uri ($size bytes, sha256 $sha); $PDB_SERVICE_NAME stays stopped for the install"

record_result backup "$(printf '{"uri":%s,"bucket":%s,"key":%s,"size":%s,"sha256":%s,"fromVersion":%s,"toVersion":%s,"at":%s}' \
  "$(json_str "$uri")" "$(json_str "$PDB_S3_BUCKET")" "$(json_str "$key")" "$size" "$(json_str "$sha")" \
  "$(json_str "$from")" "$(json_str "$PDB_VERSION")" "$(json_str "$ts")")"
