#!/bin/sh
# restore.sh — put a backup taken by backup.sh back in place of the data dir
# (and the separate v0.1.x KMS dir), for a rollback past a data migration.
#
# Backups are tar.zst, or tar.gz when taken before zstd (or on a host
# without it): the archive's own first bytes say which.
# The program names the object (PDB_RESTORE, s3://<bucket>/<key>) and the
# sha256 it must have (PDB_SHA256: the one the stack recorded when it took the
# backup, or progressdb:restore.sha256), never the object's own metadata. The
# whole object is downloaded to a staging dir next to the data dir and hashed;
# only when it matches is it listed and extracted there. Members that are
# absolute, contain "..", are links leaving the archive, or are not plain
# files, dirs or links are refused. No path comes from the archive's manifest:
# the data dir is taken from where backup.sh stores it (its physical path
# without the leading "/"), and the KMS dir likewise. Until then nothing is
# touched. Then the service is stopped, the current data dir is moved aside to
# "<dbPath>.before-restore-<UTC time>" (never deleted), and the restored tree
# is moved into place (extracted as the script's user; the service's user is
# given it before any start).
#
# If the release that "current" points to is the requested version, the
# service is started on the restored data and must report ready; otherwise it
# stays stopped and install.sh starts the requested version.
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_KMS_DATA_DIR PDB_SERVICE_MANAGER
#   PDB_SERVICE_NAME PDB_SUPERVISORCTL_CONFIG PDB_STOP_TIMEOUT PDB_AWS
#   PDB_RESTORE PDB_SHA256 PDB_VERSION PDB_S3_ENDPOINT PDB_S3_REGION PDB_HEALTH_URL
#   PDB_DOCKER_HOST (docker mode: DOCKER_HOST for the docker CLI on the host; "" = its default)
# Stdin: optional AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
# Stdout: {"restored":..,"sha256":..,"size":N,"movedAside":[..],"started":bool}
# Exit: 0 ok; 1 failed before the data was touched; 2 bad parameters;
#   3 the data was restored but the service did not come up on it.
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}"
: "${PDB_RESTORE:?}" "${PDB_SHA256:?}" "${PDB_VERSION:?}"
: "${PDB_KMS_DATA_DIR=}" "${PDB_SUPERVISORCTL_CONFIG=}" "${PDB_STOP_TIMEOUT:=30}" "${PDB_AWS:=aws}"
: "${PDB_S3_ENDPOINT=}" "${PDB_S3_REGION:=us-east-1}" "${PDB_HEALTH_URL=}" "${PDB_DOCKER_HOST=}"
PDB_SCRIPT=${PDB_SCRIPT:-restore}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets

uri=$PDB_RESTORE
case $uri in
  s3://?*/?*) ;;
  *) fail 2 "the backup must be s3://<bucket>/<key>, got '$uri'" ;;
esac
case $PDB_SHA256 in
  *[!0-9a-f]*) fail 2 "PDB_SHA256 must be 64 lowercase hex characters" ;;
esac
[ "${#PDB_SHA256}" -eq 64 ] || fail 2 "PDB_SHA256 must be 64 lowercase hex characters"
rest=${uri#s3://}
bucket=${rest%%/*}
key=${rest#*/}

# archived_as <dir>: the member name backup.sh gives <dir>: its physical path
# (as `pwd -P` prints it; for a dir that is gone, its parent's) without the leading "/".
archived_as() {
  if p=$(cd -- "$1" 2>/dev/null && pwd -P); then
    :
  elif p=$(cd -- "$(dirname -- "$1")" 2>/dev/null && pwd -P); then
    p="${p%/}/$(basename -- "$1")"
  else
    p=$1
  fi
  printf '%s' "${p#/}"
}
db_member=$(archived_as "$PDB_DB_PATH")
kms_member=''
if [ -n "$PDB_KMS_DATA_DIR" ]; then
  kms_member=$(archived_as "$PDB_KMS_DATA_DIR")
  case "$kms_member/" in "$db_member"/*) kms_member='' ;; esac # inside the data dir: restored with it
fi

ts=$(date -u +%Y%m%dT%H%M%SZ)
db_parent=$(dirname -- "$PDB_DB_PATH")
mkdir -p -- "$db_parent"
staging=$(mktemp -d "$db_parent/.progressdb-restore.XXXXXX")
trap 'rm -rf -- "$staging"' EXIT
trap 'exit 130' INT TERM HUP
archive="$staging/backup.tar"

# need_space <bytes> <what>: fails unless the staging dir's filesystem has room for it (+64 MB).
need_space() {
  free=$(free_mb "$staging")
  [ "$free" -ge $(($1 / 1048576 + 64)) ] ||
    fail 1 "not enough free space next to $PDB_DB_PATH for $2: $(($1 / 1048576)) MB needed, $free MB free (nothing was changed)"
}

size=$(aws_s3 s3api head-object --bucket "$bucket" --key "$key" --query ContentLength --output text 2>&1) ||
  fail 1 "cannot read $uri ($(s3_where)): $size"
case $size in '' | *[!0-9]*) fail 1 "cannot read the size of $uri ($(s3_where)): $size" ;; esac
need_space "$size" "the download of $uri"
log "downloading $uri ($size bytes) into $staging"
err=$(aws_s3 s3 cp --only-show-errors "$uri" "$archive" 2>&1) || fail 1 "download of $uri failed ($(s3_where)): $err (nothing was changed)"
sha=$(sha256_of "$archive")
size=$(wc -c <"$archive" | tr -d ' ')
[ "$sha" = "$PDB_SHA256" ] ||
  fail 1 "sha256 mismatch for $uri: downloaded $sha, expected $PDB_SHA256 (recorded when the backup was taken) (nothing was changed)"
log "verified $uri ($size bytes, sha256 $sha)"
# tar.zst (zstd) or, for backups taken before it, tar.gz: told by the bytes, not the name.
case $(archive_codec "$archive") in
  zst)
    command -v zstd >/dev/null 2>&1 || fail 1 "$uri is compressed with zstd, which is not installed on the host: install it (apt-get install zstd) and re-run (nothing was changed)"
    unzip_flag=--zstd ;;
  gz) unzip_flag=-z ;;
  *) fail 1 "$uri is neither a tar.zst nor a tar.gz (nothing was changed)" ;;
esac

# What the archive holds, before anything is extracted from it.
if ! tar "$unzip_flag" -tf "$archive" -- >"$staging/names" 2>"$staging/list.err" || ! tar "$unzip_flag" -tvf "$archive" -- >"$staging/long" 2>>"$staging/list.err"; then
  fail 1 "$uri is not a readable backup archive: $(tr '\n' ' ' <"$staging/list.err") (nothing was changed)"
fi
bad=$(grep -E -m 1 '^/|(^|/)\.\.(/|$)' "$staging/names" || true)
[ -z "$bad" ] || fail 1 "$uri holds a member outside the archive ('$bad'): refusing to extract it (nothing was changed)"
bad=$(awk '!/^[-dlh]/ || (/^[lh]/ && (/ -> \// || / link to \// || /\.\./))' "$staging/long" | head -n 1)
[ -z "$bad" ] || fail 1 "$uri holds a device, fifo or a link leaving the archive ('$bad'): refusing to extract it (nothing was changed)"
need_space "$(awk '{ s += $3 } END { printf "%d", s }' "$staging/long")" "the extracted $uri"

mkdir "$staging/tree"
tar "$unzip_flag" -xf "$archive" -C "$staging/tree" --no-same-owner -- 2>"$staging/extract.err" ||
  fail 1 "cannot extract $uri: $(tr '\n' ' ' <"$staging/extract.err") (nothing was changed)"
rm -f -- "$archive"

# The manifest is information only: where it says the data came from is never used as a path.
manifest="$staging/tree/progressdb-backup.json"
[ -f "$manifest" ] || fail 1 "$uri has no progressdb-backup.json: not a progressdb-upgrades backup (nothing was changed)"
# json_field <name>: a string field of the (flat, one-line) manifest.
json_field() {
  sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" "$manifest" | head -n 1
}
if [ -L "$staging/tree/$db_member" ] || [ ! -d "$staging/tree/$db_member" ]; then
  fail 1 "$uri does not hold the data dir $PDB_DB_PATH (member $db_member/; its manifest names '$(json_field dbPath)'): a backup is restored only to the path it was taken from (nothing was changed)"
fi
restore_kms=false
if [ -n "$kms_member" ] && [ -d "$staging/tree/$kms_member" ] && [ ! -L "$staging/tree/$kms_member" ]; then
  restore_kms=true
elif [ -n "$(json_field kmsDataDir)" ]; then
  [ -n "$kms_member" ] || fail 2 "$uri holds a separate KMS dir ($(json_field kmsDataDir)) but progressdb:storage.kmsDataDir is not set"
  fail 1 "$uri does not hold the KMS dir $PDB_KMS_DATA_DIR (member $kms_member/; its manifest names '$(json_field kmsDataDir)') (nothing was changed)"
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
put_back "$staging/tree/$db_member" "$PDB_DB_PATH"
kms_note=''
if [ "$restore_kms" = true ]; then
  put_back "$staging/tree/$kms_member" "$PDB_KMS_DATA_DIR"
  kms_note=" and $PDB_KMS_DATA_DIR"
fi
log "restored $uri into $PDB_DB_PATH$kms_note"

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
