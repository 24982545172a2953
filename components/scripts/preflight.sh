#!/bin/sh
# preflight.sh — everything that can be checked before the service is
# touched: required tools, free disk, S3 reachability with the host's
# credentials, and the release archive downloaded to the staging dir and
# verified against checksums.txt (or a pinned sha256). Never stops anything.
# Idempotent: an already staged archive with the right sha256 is reused.
#
# Parameters (header prepended by components/hostScripts.ts):
#   PDB_INSTALL_DIR PDB_DB_PATH PDB_KMS_DATA_DIR PDB_SERVICE_MANAGER
#   PDB_SERVICE_NAME PDB_CONFIG_FILE PDB_SUPERVISORCTL_CONFIG PDB_AWS
#   PDB_VERSION PDB_ARTIFACT_URL PDB_CHECKSUMS_URL PDB_ARCHIVE_NAME
#   PDB_SHA256 PDB_MIN_FREE_MB PDB_S3_BUCKET PDB_S3_ENDPOINT PDB_S3_REGION
# Stdin: optional AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
# Stdout: {"archive":"<staged path>","sha256":"<hex>","reused":<bool>}
# Exit: 0 ok; 1 a check failed (nothing was changed); 2 bad parameters.
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}"
: "${PDB_VERSION:?}" "${PDB_ARTIFACT_URL:?}" "${PDB_ARCHIVE_NAME:?}" "${PDB_MIN_FREE_MB:?}"
: "${PDB_KMS_DATA_DIR=}" "${PDB_CONFIG_FILE=}" "${PDB_SUPERVISORCTL_CONFIG=}" "${PDB_AWS:=aws}"
: "${PDB_CHECKSUMS_URL=}" "${PDB_SHA256=}" "${PDB_S3_BUCKET=}" "${PDB_S3_ENDPOINT=}" "${PDB_S3_REGION:=us-east-1}"
PDB_SCRIPT=${PDB_SCRIPT:-preflight}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets
log "preflight for $PDB_SERVICE_NAME $PDB_VERSION in $PDB_INSTALL_DIR (service manager: $PDB_SERVICE_MANAGER)"

# 1. Tools.
missing=''
for tool in tar gzip sha256sum mkfifo tee wc df awk sed cmp mktemp readlink; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
case $PDB_SERVICE_MANAGER in
  systemd) command -v systemctl >/dev/null 2>&1 || missing="$missing systemctl" ;;
  supervisor) command -v supervisorctl >/dev/null 2>&1 || missing="$missing supervisorctl" ;;
  process) command -v setsid >/dev/null 2>&1 || missing="$missing setsid" ;;
  *) fail 2 "unknown service manager '$PDB_SERVICE_MANAGER' (expected systemd, supervisor or process)" ;;
esac
if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
  missing="$missing curl-or-wget"
fi
if [ -n "$PDB_S3_BUCKET" ] && ! command -v "$PDB_AWS" >/dev/null 2>&1; then
  missing="$missing aws($PDB_AWS)"
fi
if [ -n "$missing" ]; then
  fail 1 "required tools missing on the host:$missing — install them and re-run (nothing was changed)"
fi

if [ -n "$PDB_CONFIG_FILE" ] && [ ! -r "$PDB_CONFIG_FILE" ]; then
  fail 1 "config file $PDB_CONFIG_FILE (--config) does not exist or is not readable (nothing was changed)"
fi

# 2. Free disk.
low=''
for dir in "$PDB_INSTALL_DIR" "$(dirname -- "$PDB_DB_PATH")"; do
  have=$(free_mb "$dir")
  if [ "$have" -lt "$PDB_MIN_FREE_MB" ]; then
    low="$low; $dir: ${have} MB free, ${PDB_MIN_FREE_MB} MB required"
  fi
done
if [ -n "$low" ]; then
  fail 1 "not enough free disk${low} (nothing was changed)"
fi

# 3. S3 reachable with the host's credentials.
if [ -n "$PDB_S3_BUCKET" ]; then
  if ! err=$(aws_s3 s3api head-bucket --bucket "$PDB_S3_BUCKET" 2>&1 >/dev/null); then
    err=$(printf '%s' "$err" | tr '\n' ' ' | sed 's/  */ /g')
    fail 1 "S3 bucket s3://$PDB_S3_BUCKET is not reachable ($(s3_where)) with the host's credentials: $err (nothing was changed)"
  fi
  log "S3 bucket s3://$PDB_S3_BUCKET reachable ($(s3_where))"
fi

# 4. Release archive, verified.
stage="$PDB_INSTALL_DIR/staging/$PDB_VERSION"
archive="$stage/$PDB_ARCHIVE_NAME"
mkdir -p -- "$stage"
if [ -n "$PDB_SHA256" ]; then
  expected=$(printf '%s' "$PDB_SHA256" | tr 'A-F' 'a-f')
  source="the pinned sha256"
else
  [ -n "$PDB_CHECKSUMS_URL" ] || fail 2 "neither a pinned sha256 nor a checksums URL was given"
  if ! err=$(fetch "$PDB_CHECKSUMS_URL" "$stage/checksums.txt.part"); then
    rm -f -- "$stage/checksums.txt.part"
    fail 1 "download of $PDB_CHECKSUMS_URL failed: $err (nothing was changed)"
  fi
  mv -f -- "$stage/checksums.txt.part" "$stage/checksums.txt"
  expected=$(awk -v f="$PDB_ARCHIVE_NAME" '$2 == f || $2 == "*" f { print tolower($1); exit }' "$stage/checksums.txt")
  [ -n "$expected" ] || fail 1 "$PDB_CHECKSUMS_URL has no entry for $PDB_ARCHIVE_NAME (nothing was changed)"
  source="$PDB_CHECKSUMS_URL"
fi
case $expected in
  *[!0-9a-f]* | '') fail 1 "expected sha256 '$expected' from $source is not a sha256 hex digest" ;;
esac
[ "${#expected}" -eq 64 ] || fail 1 "expected sha256 '$expected' from $source is not 64 hex characters"

reused=false
if [ -f "$archive" ] && [ "$(sha256_of "$archive")" = "$expected" ]; then
  reused=true
  log "reusing verified archive $archive"
else
  rm -f -- "$archive" "$archive.sha256"
  log "downloading $PDB_ARTIFACT_URL"
  if ! err=$(fetch "$PDB_ARTIFACT_URL" "$archive.part"); then
    rm -f -- "$archive.part"
    fail 1 "download of $PDB_ARTIFACT_URL failed: $err (nothing was changed)"
  fi
  actual=$(sha256_of "$archive.part")
  if [ "$actual" != "$expected" ]; then
    rm -f -- "$archive.part"
    fail 1 "sha256 mismatch for $PDB_ARCHIVE_NAME downloaded from $PDB_ARTIFACT_URL: expected $expected (from $source), actual $actual — the archive was discarded (nothing was changed)"
  fi
  mv -f -- "$archive.part" "$archive"
fi
printf '%s  %s\n' "$expected" "$PDB_ARCHIVE_NAME" >"$archive.sha256"
log "archive verified: $archive sha256 $expected"

printf '{"archive":%s,"sha256":%s,"reused":%s}\n' "$(json_str "$archive")" "$(json_str "$expected")" "$reused"
