#!/bin/sh
# restore.sh — put a backup taken by backup.sh back in place of the data dir
# (and the separate v0.1.x KMS dir), for a rollback past a data migration.
#
# The request is "s3://<bucket>/<key>.tar.gz", or "before:<version>": the
# newest backup of this stack taken before upgrading to <version> (keys end in
# "-to-<version>.tar.gz"). The object is streamed from S3, hashed in the stream
# and extracted into a staging dir next to the data dir; only when its sha256
# matches the one recorded at backup time (object metadata, else the .sha256
# sidecar) is anything touched. Then the service is stopped, the current data
# dir is moved aside to "<dbPath>.before-restore-<UTC time>" (never deleted),
# and the restored tree is moved into place.
#
# If the release that "current" points to is the requested version, the
# service is started on the restored data and must report ready; otherwise it
# stays stopped and install.sh starts the requested version.
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_KMS_DATA_DIR PDB_SERVICE_MANAGER
#   PDB_SERVICE_NAME PDB_SUPERVISORCTL_CONFIG PDB_STOP_TIMEOUT PDB_AWS
#   PDB_RESTORE PDB_VERSION PDB_STACK PDB_S3_BUCKET PDB_S3_PREFIX
#   PDB_S3_ENDPOINT PDB_S3_REGION PDB_HEALTH_URL
#   PDB_DOCKER_HOST (docker mode: DOCKER_HOST for the docker CLI on the host; "" = its default)
# Stdin: optional AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
# Stdout: {"restored":..,"sha256":..,"size":N,"movedAside":[..],"started":bool}
# Exit: 0 ok; 1 failed before the data was touched; 2 bad parameters;
#   3 the data was restored but the service did not come up on it.
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}"
: "${PDB_RESTORE:?}" "${PDB_VERSION:?}" "${PDB_STACK:?}"
: "${PDB_KMS_DATA_DIR=}" "${PDB_SUPERVISORCTL_CONFIG=}" "${PDB_STOP_TIMEOUT:=30}" "${PDB_AWS:=aws}"
: "${PDB_S3_BUCKET=}" "${PDB_S3_PREFIX=}" "${PDB_S3_ENDPOINT=}" "${PDB_S3_REGION:=us-east-1}" "${PDB_HEALTH_URL=}" "${PDB_DOCKER_HOST=}"
PDB_SCRIPT=${PDB_SCRIPT:-restore}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets

# Which object.
case $PDB_RESTORE in
  s3://*/*)
    rest=${PDB_RESTORE#s3://}
    bucket=${rest%%/*}
    key=${rest#*/}
    ;;
  before:*)
    [ -n "$PDB_S3_BUCKET" ] || fail 2 "restore $PDB_RESTORE needs the backup bucket (progressdb:backup.bucket)"
    bucket=$PDB_S3_BUCKET
    prefix=$(printf '%s' "$PDB_S3_PREFIX" | sed -e 's#^/*##' -e 's#/*$##')
    dir="${prefix:+$prefix/}$PDB_STACK/"
    target=${PDB_RESTORE#before:}
    if ! listing=$(aws_s3 s3api list-objects-v2 --bucket "$bucket" --prefix "$dir" --query 'Contents[].Key' --output text 2>&1); then
      fail 1 "could not list s3://$bucket/$dir ($(s3_where)): $listing"
    fi
    # Keys start with a UTC timestamp, so the last in sort order is the newest.
    key=$(printf '%s\n' "$listing" | tr '\t' '\n' | grep -E -- "-to-$(printf '%s' "$target" | sed 's/\./\\./g')\.tar\.gz$" | sort | tail -n 1 || true)
    [ -n "$key" ] || fail 1 "no backup taken before upgrading to $target under s3://$bucket/$dir — list them with: aws s3 ls s3://$bucket/$dir"
    ;;
  *) fail 2 "restore request must be s3://<bucket>/<key>.tar.gz or before:<version>, got '$PDB_RESTORE'" ;;
esac
uri="s3://$bucket/$key"

# The sha256 recorded at backup time.
expected=$(aws_s3 s3api head-object --bucket "$bucket" --key "$key" --query 'Metadata.sha256' --output text 2>&1) ||
  fail 1 "cannot read $uri ($(s3_where)): $expected"
case $expected in
  *[!0-9a-f]* | '')
    expected=$(aws_s3 s3 cp --only-show-errors "$uri.sha256" - 2>/dev/null | cut -d' ' -f1 || true)
    ;;
esac
case $expected in *[!0-9a-f]* | '') fail 1 "$uri has no recorded sha256 (metadata or $uri.sha256 sidecar): refusing to restore an unverifiable backup" ;; esac

ts=$(date -u +%Y%m%dT%H%M%SZ)
db_parent=$(dirname -- "$PDB_DB_PATH")
mkdir -p -- "$db_parent"
staging=$(mktemp -d "$db_parent/.progressdb-restore.XXXXXX")
trap 'rm -rf -- "$staging"' EXIT
trap 'exit 130' INT TERM HUP

log "downloading $uri into $staging (expected sha256 $expected)"
digest_start "$staging"
mkdir "$staging/tree"
{
  rc=0
  aws_s3 s3 cp --only-show-errors "$uri" - 2>"$staging/download.err" || rc=$?
  echo "$rc" >"$staging/download.rc"
} | {
  rc=0
  digest_tee "$staging" || rc=$?
  echo "$rc" >"$staging/tee.rc"
} | {
  rc=0
  gzip -dc | tar -xf - -C "$staging/tree" || rc=$?
  echo "$rc" >"$staging/extract.rc"
}
digest_result "$staging"
[ "$(cat "$staging/download.rc")" = 0 ] || fail 1 "download of $uri failed: $(tr '\n' ' ' <"$staging/download.err")"
[ "$(cat "$staging/extract.rc")" = 0 ] || fail 1 "$uri is not a readable tar.gz (nothing was changed)"
sha=$PDB_DIGEST_SHA
size=$PDB_DIGEST_SIZE
[ "$sha" = "$expected" ] || fail 1 "sha256 mismatch for $uri: downloaded $sha, recorded $expected (nothing was changed)"
log "verified $uri ($size bytes, sha256 $sha)"

manifest="$staging/tree/progressdb-backup.json"
[ -f "$manifest" ] || fail 1 "$uri has no progressdb-backup.json: not a progressdb-upgrades backup"
# json_field <name>: a string field of the (flat, one-line) manifest.
json_field() {
  sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" "$manifest"
}
src_db=$(json_field dbPath)
src_kms=$(json_field kmsDataDir)
if [ -z "$src_db" ] || [ ! -d "$staging/tree/${src_db#/}" ]; then
  fail 1 "$uri does not contain its data dir ($src_db)"
fi
if [ -n "$src_kms" ] && [ -z "$PDB_KMS_DATA_DIR" ]; then
  fail 2 "$uri holds a separate KMS dir ($src_kms) but progressdb:storage.kmsDataDir is not set"
fi

# From here on the data is touched: stop the service first.
if svc_is_running; then
  log "stopping $PDB_SERVICE_NAME ($(current_version)) to restore its data"
  svc_stop || fail 1 "could not stop $PDB_SERVICE_NAME; nothing was changed"
fi

moved=''
# put_back <restored dir> <target dir>: moves target aside, restored into place.
put_back() {
  if [ -e "$2" ]; then
    aside="$2.before-restore-$ts"
    mv -- "$2" "$aside"
    log "moved the current $2 aside to $aside"
    moved="$moved${moved:+,}$(json_str "$aside")"
  fi
  mkdir -p -- "$(dirname -- "$2")"
  mv -- "$1" "$2"
}
put_back "$staging/tree/${src_db#/}" "$PDB_DB_PATH"
[ -z "$src_kms" ] || put_back "$staging/tree/${src_kms#/}" "$PDB_KMS_DATA_DIR"
log "restored $uri into $PDB_DB_PATH${src_kms:+ and $PDB_KMS_DATA_DIR}"

started=false
running=$(current_version)
if [ "$running" = "$PDB_VERSION" ]; then
  log "starting $PDB_SERVICE_NAME $running on the restored data"
  if ! svc_start || ! wait_ready "$running" "$PDB_STOP_TIMEOUT"; then
    svc_tail_logs
    fail 3 "$PDB_SERVICE_NAME $running did not become ready on the restored data ($PDB_LAST_RESPONSE); the previous data is kept under $PDB_DB_PATH.before-restore-$ts"
  fi
  started=true
else
  log "the installed release is ${running:-none}; the install step starts $PDB_VERSION on the restored data"
fi

result=$(printf '{"restored":%s,"sha256":%s,"size":%s,"movedAside":[%s],"started":%s}' \
  "$(json_str "$uri")" "$(json_str "$sha")" "$size" "$moved" "$started")
# Recorded for replay_result: a later change of the step's other inputs replays this, never restores again.
mkdir -p -- "$PDB_INSTALL_DIR/run"
printf '%s\n' "$result" >"$PDB_INSTALL_DIR/run/restore-last.json"
printf '%s\n' "$result"
