#!/bin/sh
# preflight.sh — everything that can be checked before the service is
# touched: required tools, free disk, S3 reachability with the host's
# credentials, and the release archive downloaded to the staging dir and
# verified against checksums.txt (or a pinned sha256). Never stops anything.
# Idempotent: an already staged archive with the right sha256 is reused.
# Binary modes: refuses a service name whose unit, supervisor program,
# launcher or pidfile this program did not write; creates the service user if
# absent and checks it can reach the data dirs, the install dir and the config.
#
# Parameters (header prepended by components/hostScripts.ts):
#   PDB_INSTALL_DIR PDB_DB_PATH PDB_KMS_DATA_DIR PDB_SERVICE_MANAGER
#   PDB_SERVICE_NAME PDB_SERVICE_USER PDB_CONFIG_FILE PDB_SUPERVISOR_CONF_DIR
#   PDB_SUPERVISORCTL_CONFIG PDB_SYSTEMD_UNIT_DIR PDB_AWS
#   PDB_VERSION PDB_ARTIFACT_URL PDB_CHECKSUMS_URL PDB_ARCHIVE_NAME
#   PDB_SHA256 PDB_MIN_FREE_MB PDB_S3_BUCKET PDB_S3_ENDPOINT PDB_S3_REGION
#   PDB_LISTEN_ADDR PDB_TARGET_LAYOUT (root|store) PDB_TOOL_URL PDB_TOOL_ARCHIVE
#   (the target release's prgcli, when the data must be migrated)
#   PDB_CFG_DB_KEY PDB_CFG_REQUIRED (how to check an operator's config file)
#   PDB_S3_CHECK_SETTINGS (1: the stack does not manage the bucket; warn when it is
#   not versioned or has no default encryption)
#   PDB_SUPERSEDE_PREFIX (<prefix>/<stack>/ in a bucket the stack created: tag all
#   but the newest backup there superseded)
#   PDB_BACKUP_MODE (snapshot|stream|"": how the backup will be taken; snapshot
#   needs rsync and room beside the data dir, or the backup falls back to stream)
# Container mode (PDB_SERVICE_MANAGER=docker) has no archive: PDB_ARTIFACT_URL is "".
# Stdin: optional AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
# Stdout: {"archive":"<staged path>","sha256":"<hex>","reused":<bool>,"layout":"root|store|empty",
#   "plan":"start|migrate|swap-back","tool":"<staged prgcli archive or \"\">","warnings":["..."],
#   "backup":"snapshot|stream|none"}
# Exit: 0 ok; 1 a check failed (nothing was changed); 2 bad parameters.
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}"
: "${PDB_VERSION:?}" "${PDB_MIN_FREE_MB:?}" "${PDB_ARTIFACT_URL=}" "${PDB_ARCHIVE_NAME=}"
: "${PDB_LISTEN_ADDR=}" "${PDB_TARGET_LAYOUT:?}" "${PDB_TOOL_URL=}" "${PDB_TOOL_ARCHIVE=}"
: "${PDB_CFG_DB_KEY=}" "${PDB_CFG_REQUIRED=}" "${PDB_S3_CHECK_SETTINGS=}" "${PDB_SUPERSEDE_PREFIX=}"
: "${PDB_KMS_DATA_DIR=}" "${PDB_CONFIG_FILE=}" "${PDB_SUPERVISORCTL_CONFIG=}" "${PDB_AWS:=aws}" "${PDB_SERVICE_USER:?}"
: "${PDB_SUPERVISOR_CONF_DIR:=/etc/supervisor/conf.d}" "${PDB_SYSTEMD_UNIT_DIR:=/etc/systemd/system}"
: "${PDB_CHECKSUMS_URL=}" "${PDB_SHA256=}" "${PDB_S3_BUCKET=}" "${PDB_S3_ENDPOINT=}" "${PDB_S3_REGION:=us-east-1}"
: "${PDB_BACKUP_MODE=}"
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
  docker) command -v docker >/dev/null 2>&1 || missing="$missing docker" ;;
  *) fail 2 "unknown service manager '$PDB_SERVICE_MANAGER' (expected systemd, supervisor, process or docker)" ;;
esac
if [ "$PDB_SERVICE_MANAGER" != docker ]; then
  for tool in setpriv getent groupadd useradd find chown; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
  done
fi
if ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
  missing="$missing curl-or-wget"
fi
if [ -n "$PDB_S3_BUCKET" ] && ! command -v "$PDB_AWS" >/dev/null 2>&1; then
  missing="$missing aws($PDB_AWS)"
fi
if [ -n "$missing" ]; then
  fail 1 "required tools missing on the host:$missing — install them and re-run (nothing was changed)"
fi

# 1a. The service name is ours to manage, and its user can reach what it runs on.
check_service_files
if [ "$PDB_SERVICE_MANAGER" != docker ]; then
  ensure_service_user
  # The data dirs themselves are given to the user by the install: their parents must let it through.
  for path in "$PDB_DB_PATH" ${PDB_KMS_DATA_DIR:+"$PDB_KMS_DATA_DIR"} "$PDB_INSTALL_DIR/releases" ${PDB_CONFIG_FILE:+"$PDB_CONFIG_FILE"}; do
    blocker=$(service_user_blocker "$(dirname -- "$path")")
    [ -z "$blocker" ] ||
      fail 1 "the service runs as $PDB_SERVICE_USER (progressdb:deployment.binary.serviceUser), which cannot enter $blocker ($(stat -c '%A %U:%G' -- "$blocker")), on the way to $path: ProgressDB would not start. Let others search it (chmod o+x $blocker), or move the path elsewhere (nothing was changed)"
  done
fi

if [ -n "$PDB_CONFIG_FILE" ]; then
  [ -r "$PDB_CONFIG_FILE" ] || fail 1 "config file $PDB_CONFIG_FILE (deployment.binary.configFile) does not exist or is not readable (nothing was changed)"
  # The operator manages this file: check that the target release can read it
  # and that it agrees with the stack (values are never printed: they may be keys).
  cfg_keys=$(yaml_keys "$PDB_CONFIG_FILE")
  cfg_get() { printf '%s\n' "$cfg_keys" | awk -v k="$1" 'index($0, k "=") == 1 { print substr($0, length(k) + 2); exit }'; }
  problems=''
  got_db=$(cfg_get "$PDB_CFG_DB_KEY")
  [ "$got_db" = "$PDB_DB_PATH" ] ||
    problems="$problems; $PDB_CFG_DB_KEY is '${got_db}' but progressdb:storage.dbPath is '$PDB_DB_PATH'"
  got_addr="$(cfg_get server.address):$(cfg_get server.port)"
  case $got_addr in :*) got_addr="0.0.0.0$got_addr" ;; esac
  case $got_addr in *:) got_addr="${got_addr}8080" ;; esac
  [ "$got_addr" = "$PDB_LISTEN_ADDR" ] ||
    problems="$problems; server.address:server.port is $got_addr but progressdb:deployment.binary.listenAddr is $PDB_LISTEN_ADDR (the health URL must reach it)"
  for key in $PDB_CFG_REQUIRED; do
    # An empty list or a null is as good as unset ("signing: []" crashes 0.2.x too).
    case $(cfg_get "$key") in
      '' | '[]' | '~' | null | '{}') problems="$problems; $key is not set (release $PDB_VERSION needs it: without it it crashes, panics or answers 429)" ;;
    esac
  done
  [ -z "$problems" ] || fail 1 "config file $PDB_CONFIG_FILE does not fit $PDB_VERSION${problems} — fix the file, or remove deployment.binary.configFile to let the program write it (nothing was changed)"
  if [ "$PDB_SERVICE_MANAGER" != docker ] && ! as_service_user test -r "$PDB_CONFIG_FILE"; then
    fail 1 "the service runs as $PDB_SERVICE_USER (progressdb:deployment.binary.serviceUser), which cannot read the config file $PDB_CONFIG_FILE (deployment.binary.configFile): give it to that user, keeping it private: chown $PDB_SERVICE_USER $PDB_CONFIG_FILE && chmod 0600 $PDB_CONFIG_FILE (nothing was changed)"
  fi
  log "config file $PDB_CONFIG_FILE fits $PDB_VERSION ($PDB_CFG_DB_KEY, listen address, required keys)"
fi

# 1b. What the data dir holds, and whether the target release can read it.
layout=$(data_layout "$PDB_DB_PATH")
plan=start
case $layout:$PDB_TARGET_LAYOUT in
  root:store)
    [ -n "$PDB_TOOL_URL" ] || fail 1 "$PDB_DB_PATH holds 0.1.x data (a Pebble DB at its root); $PDB_VERSION reads only the 0.2.x layout (store/) and would start on an EMPTY store, serving none of it. The data must be migrated offline with the release's prgcli first (nothing was changed)"
    plan=migrate ;;
  store:root | mixed:root)
    kept=$(kept_field path)
    if [ "$(kept_field from)" = "$PDB_VERSION" ] && [ -f "$kept/CURRENT" ]; then
      plan=swap-back
      log "rollback across the data format: $PDB_VERSION will run on its data kept at $kept since $(kept_field at) (writes made after that are not in it)"
    else
      gone=''
      [ -n "$kept" ] && gone=" The data kept by the migration ($kept, for $(kept_field from)) does not fit or is gone."
      fail 1 "$PDB_DB_PATH holds 0.2.x data (store/); $PDB_VERSION reads only the 0.1.x layout and would start on an empty database.$gone Restore the backup taken before the upgrade instead: pulumi config set --path progressdb:restore.backup before:$(current_version) (nothing was changed)"
    fi ;;
  mixed:store)
    fail 1 "$PDB_DB_PATH holds both 0.1.x data at its root and a 0.2.x store/: a 0.2.x release was started on 0.1.x data without a migration and serves none of it. Move store/ index/ wal/ kms/ state/ aside (they hold only what was written since), then re-run to migrate (nothing was changed)" ;;
esac
log "data dir $PDB_DB_PATH: layout '$layout'; target reads '$PDB_TARGET_LAYOUT'; plan: $plan"

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

# 3b. A bucket the stack does not manage: warn (never fail) when a lost or
# overwritten backup could not be recovered, or backups are stored unencrypted.
warnings=''
warn() {
  log "WARNING: $1"
  warnings="$warnings${warnings:+,}$(json_str "$1")"
}
if [ -n "$PDB_S3_BUCKET" ] && [ "$PDB_S3_CHECK_SETTINGS" = 1 ]; then
  b="progressdb:backup.bucket s3://$PDB_S3_BUCKET"
  if ! status=$(aws_s3 s3api get-bucket-versioning --bucket "$PDB_S3_BUCKET" --query Status --output text 2>&1); then
    warn "$b: could not read its versioning with the host's credentials ($(printf '%s' "$status" | tr '\n' ' ')): a deleted or overwritten backup may not be recoverable"
  elif [ "$status" != Enabled ]; then
    warn "$b has versioning off: a deleted or overwritten backup cannot be recovered — turn it on: aws s3api put-bucket-versioning --bucket $PDB_S3_BUCKET --versioning-configuration Status=Enabled"
  fi
  if ! err=$(aws_s3 s3api get-bucket-encryption --bucket "$PDB_S3_BUCKET" 2>&1 >/dev/null); then
    case $err in
      *ServerSideEncryptionConfigurationNotFound*) why="has no default encryption" ;;
      *) why="has no readable default encryption ($(printf '%s' "$err" | tr '\n' ' '))" ;;
    esac
    warn "$b $why: backups may be stored unencrypted — turn it on: aws s3api put-bucket-encryption --bucket $PDB_S3_BUCKET --server-side-encryption-configuration '{\"Rules\":[{\"ApplyServerSideEncryptionByDefault\":{\"SSEAlgorithm\":\"AES256\"}}]}'"
  fi
fi

# 3c. Retention, when the stack created the bucket (its lifecycle rule expires
# only objects tagged superseded): every backup of this instance but the newest,
# with its sidecar, is tagged. Done here, not after the backup, so that no S3
# round trip lengthens the time the service is stopped. Keys start with their
# UTC time, so the newest sorts last. A failure only warns: untagged backups are
# kept, not lost, and the next preflight tries again.
if [ -n "$PDB_S3_BUCKET" ] && [ -n "$PDB_SUPERSEDE_PREFIX" ]; then
  where="s3://$PDB_S3_BUCKET/$PDB_SUPERSEDE_PREFIX"
  if ! keys=$(aws_s3 s3api list-objects-v2 --bucket "$PDB_S3_BUCKET" --prefix "$PDB_SUPERSEDE_PREFIX" --query 'Contents[].Key' --output text 2>&1); then
    warn "could not list $where to tag older backups superseded (they are kept, not expired): $(printf '%s' "$keys" | tr '\n' ' ')"
    keys=''
  fi
  newest=$(printf '%s\n' "$keys" | tr -s '[:space:]' '\n' | grep -E '\.tar\.(zst|gz)$' | sort | tail -n 1)
  tag_err=$(mktemp)
  pids=''
  for k in $keys; do
    case $k in "$newest" | "$newest.sha256" | None) continue ;; esac
    aws_s3 s3api put-object-tagging --bucket "$PDB_S3_BUCKET" --key "$k" --tagging 'TagSet=[{Key=progressdb-backup,Value=superseded}]' >/dev/null 2>>"$tag_err" &
    pids="$pids $!"
  done
  untagged=0
  for p in $pids; do wait "$p" || untagged=$((untagged + 1)); done
  if [ "$untagged" -gt 0 ]; then
    warn "$untagged older backup object(s) under $where could not be tagged superseded (they are kept, not expired; the next preflight tries again): $(tr '\n' ' ' <"$tag_err")"
  elif [ -n "$pids" ]; then
    log "backups under $where older than ${newest##*/} tagged superseded: they expire after the bucket's retention"
  fi
  rm -f -- "$tag_err"
fi

# 3d. How the backup will be taken. A snapshot needs rsync and room for a copy
# of the data beside the data dir; without them the backup streams to S3 with
# the service stopped (longer downtime), which is said here, before anything stops.
backup=none
if [ -n "$PDB_S3_BUCKET" ] && [ -n "$PDB_BACKUP_MODE" ] && [ "$layout" != empty ]; then
  backup=$PDB_BACKUP_MODE
  if [ "$backup" = snapshot ] && ! snapshot_room; then
    warn "no room for the backup snapshot ($PDB_SNAPSHOT_WHY): the backup falls back to streaming to S3 with the service stopped, so the downtime grows with the data"
    backup=stream
  fi
  [ "$(backup_codec)" = zst ] || warn "zstd is not installed on the host: backups are compressed with gzip, which is slower (apt-get install zstd)"
  log "backup: $backup"
fi

# 4. Release archive (and the migration tool), verified.
# stage_verified <url> <file name> <pinned sha256 or "">: downloads <url> into
# the staging dir (reusing a verified copy) and checks its sha256 against the
# pinned one or checksums.txt. Sets PDB_STAGED_PATH, PDB_STAGED_SHA, PDB_STAGED_REUSED.
stage_verified() {
  sv_url=$1
  sv_file=$2
  sv_path="$stage/$sv_file"
  if [ -n "$3" ]; then
    sv_expected=$(printf '%s' "$3" | tr 'A-F' 'a-f')
    sv_source="the pinned sha256"
  else
    [ -n "$PDB_CHECKSUMS_URL" ] || fail 2 "neither a pinned sha256 nor a checksums URL was given"
    if ! err=$(fetch "$PDB_CHECKSUMS_URL" "$stage/checksums.txt.part"); then
      rm -f -- "$stage/checksums.txt.part"
      fail 1 "download of $PDB_CHECKSUMS_URL failed: $err (nothing was changed)"
    fi
    mv -f -- "$stage/checksums.txt.part" "$stage/checksums.txt"
    sv_expected=$(awk -v f="$sv_file" '$2 == f || $2 == "*" f { print tolower($1); exit }' "$stage/checksums.txt")
    [ -n "$sv_expected" ] || fail 1 "$PDB_CHECKSUMS_URL has no entry for $sv_file (nothing was changed)"
    sv_source="$PDB_CHECKSUMS_URL"
  fi
  case $sv_expected in
    *[!0-9a-f]* | '') fail 1 "expected sha256 '$sv_expected' from $sv_source is not a sha256 hex digest" ;;
  esac
  [ "${#sv_expected}" -eq 64 ] || fail 1 "expected sha256 '$sv_expected' from $sv_source is not 64 hex characters"
  PDB_STAGED_REUSED=false
  if [ -f "$sv_path" ] && [ "$(sha256_of "$sv_path")" = "$sv_expected" ]; then
    PDB_STAGED_REUSED=true
    log "reusing verified $sv_path"
  else
    rm -f -- "$sv_path" "$sv_path.sha256"
    log "downloading $sv_url"
    if ! err=$(fetch "$sv_url" "$sv_path.part"); then
      rm -f -- "$sv_path.part"
      fail 1 "download of $sv_url failed: $err (nothing was changed)"
    fi
    sv_actual=$(sha256_of "$sv_path.part")
    if [ "$sv_actual" != "$sv_expected" ]; then
      rm -f -- "$sv_path.part"
      fail 1 "sha256 mismatch for $sv_file downloaded from $sv_url: expected $sv_expected (from $sv_source), actual $sv_actual — the download was discarded (nothing was changed)"
    fi
    mv -f -- "$sv_path.part" "$sv_path"
  fi
  printf '%s  %s\n' "$sv_expected" "$sv_file" >"$sv_path.sha256"
  log "verified: $sv_path sha256 $sv_expected"
  PDB_STAGED_PATH=$sv_path
  PDB_STAGED_SHA=$sv_expected
}

# stage_verified <url> <file>: downloads into the staging dir and checks the
# sha256 against checksums.txt (or the pinned one for the server archive).
stage="$PDB_INSTALL_DIR/staging/$PDB_VERSION"
archive=''
expected=''
reused=false
tool=''
if [ -n "$PDB_ARTIFACT_URL" ]; then
  mkdir -p -- "$stage"
  stage_verified "$PDB_ARTIFACT_URL" "$PDB_ARCHIVE_NAME" "$PDB_SHA256"
  archive=$PDB_STAGED_PATH
  expected=$PDB_STAGED_SHA
  reused=$PDB_STAGED_REUSED
fi
if [ "$plan" = migrate ]; then
  mkdir -p -- "$stage"
  stage_verified "$PDB_TOOL_URL" "$PDB_TOOL_ARCHIVE" ''
  tool=$PDB_STAGED_PATH
fi

printf '{"archive":%s,"sha256":%s,"reused":%s,"layout":%s,"plan":%s,"tool":%s,"warnings":[%s],"backup":%s}\n' "$(json_str "$archive")" "$(json_str "$expected")" "$reused" \
  "$(json_str "$layout")" "$(json_str "$plan")" "$(json_str "$tool")" "$warnings" "$(json_str "$backup")"
