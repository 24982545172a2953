#!/bin/sh
# migrate.sh — cross the 0.1.x → 0.2.x data format offline, with the target
# release's own prgcli (`migrate --format pebble`), while the service is
# stopped (it stops it, then completes the backup's warm snapshot of the old
# data; or the streaming backup stopped it). The old directory is kept intact beside the
# new one, under a name that says which versions it belongs to:
#   <dbPath>            the migrated 0.2.x data (what the new release opens)
#   <dbPath>.v<from>-kept-before-v<to>   the 0.1.x data, untouched
# and <installDir>/kept-data records it, so a rollback of the version line (or
# an auto-revert) runs the old release on it again without an S3 round trip.
# The result is checked by content, not by prgcli's exit code: declining its
# prompt exits 0, so the summary lines and the new store must be there, and
# the thread and message counts must be no lower than what the old version
# served: the 0.2.1 prgcli silently skips a record it cannot parse.
# Nothing to migrate (the data is already 0.2.x, or empty): prints
# {"migrated":false,...} and changes nothing.
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_SERVICE_MANAGER PDB_SERVICE_NAME
#   PDB_SUPERVISORCTL_CONFIG PDB_STOP_TIMEOUT PDB_DOCKER_HOST PDB_VERSION
#   PDB_TOOL_ARCHIVE PDB_EXPECT_THREADS PDB_EXPECT_MESSAGES ("" when unknown) PDB_CONFIG_FILE PDB_RUN_KEY
#   PDB_LISTEN_ADDR PDB_HEALTH_URL (to prove the old version answers again after a failure)
#   PDB_SERVICE_USER (owns the migrated data) PDB_KMS_DATA_DIR
# Stdout: {"migrated":true,"kept":"…","from":"0.1.2","to":"0.2.1","threads":N,"messages":M,"at":"…"}
# Exit: 0 ok; 1 failed, nothing changed (the old data is in place); 2 bad parameters.
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}" "${PDB_VERSION:?}"
: "${PDB_TOOL_ARCHIVE:?}" "${PDB_EXPECT_THREADS=}" "${PDB_EXPECT_MESSAGES=}" "${PDB_SUPERVISORCTL_CONFIG=}" "${PDB_STOP_TIMEOUT:=30}"
: "${PDB_DOCKER_HOST=}" "${PDB_CONFIG_FILE=}" "${PDB_RUN_KEY:?}" "${PDB_LISTEN_ADDR=}" "${PDB_HEALTH_URL=}"
: "${PDB_SERVICE_USER:?}" "${PDB_KMS_DATA_DIR=}"
PDB_SCRIPT=${PDB_SCRIPT:-migrate}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets
umask 077
trap '' HUP PIPE
# One migration per upgrade: a re-run for the same upgrade (another input of
# the step changed) repeats the recorded result. Not when the data is in the
# 0.1.x layout again: a rollback swapped the kept data back since, and this is
# a new upgrade to the same version (same key), which must migrate it again.
if [ "$(data_layout "$PDB_DB_PATH")" != root ] && recorded_result migrate; then
  exit 0
fi
from=$(current_version)
layout=$(data_layout "$PDB_DB_PATH")
if [ "$layout" != root ]; then
  log "data dir $PDB_DB_PATH has layout '$layout': nothing to migrate for $PDB_VERSION"
  record_result migrate "$(printf '{"migrated":false,"layout":%s,"from":%s,"to":%s}' "$(json_str "$layout")" "$(json_str "$from")" "$(json_str "$PDB_VERSION")")"
  exit 0
fi
[ -n "$from" ] || from=unknown
kept="$PDB_DB_PATH.v$from-kept-before-v$PDB_VERSION"
new="$PDB_DB_PATH.migrating-v$PDB_VERSION"
work=$(mktemp -d "$PDB_INSTALL_DIR/staging/.migrate-XXXXXX")
cleanup() {
  rc=$?
  trap - EXIT
  rm -rf -- "$work"
  if [ "$rc" -ne 0 ]; then
    rm -rf -- "$new"
    log "migration failed: $PDB_DB_PATH is unchanged (0.1.x data, $from); starting $from again"
    # The backup left the service stopped for this step: an update must not end with it down.
    if svc_start && wait_ready "$from" "$PDB_STOP_TIMEOUT"; then
      log "$from is running again on its data; nothing was upgraded"
    else
      log "FAILED to start $from again — the service is DOWN; see $(svc_where_logs)"
    fi
    snapshot_release
  fi
  exit "$rc"
}
trap cleanup EXIT

snapshot_claim
[ ! -e "$kept" ] || fail 1 "$kept already exists (data kept by an earlier migration): move it away or remove it, then re-run (nothing was changed)"
if svc_is_running; then
  log "stopping $PDB_SERVICE_NAME: the migration reads the data offline"
  svc_stop || fail 1 "could not stop $PDB_SERVICE_NAME before migrating (nothing was changed)"
fi
# The backup's warm snapshot of the old data: what changed since, now that nothing writes.
if snapshot_waiting; then
  snapshot_seal || fail 1 "could not complete the backup snapshot $(snapshot_dir) (rsync failed; see above) (nothing was changed)"
fi

# The tool, from the archive the preflight verified.
[ -f "$PDB_TOOL_ARCHIVE" ] || fail 1 "the verified migration tool $PDB_TOOL_ARCHIVE is missing: re-run the preflight (nothing was changed)"
[ "$(sha256_of "$PDB_TOOL_ARCHIVE")" = "$(cut -c1-64 <"$PDB_TOOL_ARCHIVE.sha256" 2>/dev/null)" ] ||
  fail 1 "$PDB_TOOL_ARCHIVE does not match the sha256 the preflight verified (nothing was changed)"
tar -xzf "$PDB_TOOL_ARCHIVE" -C "$work" -- || fail 1 "cannot extract $PDB_TOOL_ARCHIVE (nothing was changed)"
prgcli=$(find "$work" -type f -name prgcli | head -n 1)
[ -n "$prgcli" ] || fail 1 "$PDB_TOOL_ARCHIVE has no prgcli (nothing was changed)"
chmod 0700 "$prgcli"

# prgcli takes the old data path and key from a 0.1.x config (--old-config), so
# no key goes on its command line. It needs a valid key even for unencrypted
# data: the old release's own config has it when the KMS is on; otherwise a
# throwaway key is written for this run only.
old_config="$PDB_INSTALL_DIR/releases/$from/config.yaml"
[ -z "$PDB_CONFIG_FILE" ] || old_config=$PDB_CONFIG_FILE
key_line=''
[ -r "$old_config" ] && key_line=$(grep -E '^[[:space:]]+encryption_key:' "$old_config" | head -n 1 || true)
{
  printf 'storage:\n  db_path: "%s"\n' "$PDB_DB_PATH"
  if [ -n "$key_line" ]; then
    printf 'security:\n%s\n' "$key_line"
    sed -n '/^[[:space:]]*fields:/,/^[[:space:]]*[a-z_]*:[[:space:]]*$/p' "$old_config" | grep -E '^[[:space:]]+(fields:|- path:|algorithm:)' || true
  else
    printf 'security:\n  encryption_key: "%s"\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
  fi
} >"$work/old-config.yaml"

rm -rf -- "$new"
log "migrating $PDB_DB_PATH ($from, 0.1.x layout) into $new with prgcli ($PDB_VERSION) — this reads every record"
started=$(date +%s)
if ! printf 'y\n' | "$prgcli" migrate --old-config "$work/old-config.yaml" --to "$new" --format pebble --interactive=false >"$work/out.log" 2>&1; then
  sed 's/^/    /' "$work/out.log" | tail -n 20 >&2
  fail 1 "prgcli migrate failed (exit non-zero); output above (nothing was changed)"
fi
sed 's/^/    /' "$work/out.log" | tail -n 8 >&2
grep -q 'Migration cancelled' "$work/out.log" && fail 1 "prgcli cancelled the migration at its prompt (it exits 0 when it does) (nothing was changed)"
threads=$(sed -n 's/.*Threads migrated: *\([0-9][0-9]*\).*/\1/p' "$work/out.log" | tail -n 1)
messages=$(sed -n 's/.*Messages migrated: *\([0-9][0-9]*\).*/\1/p' "$work/out.log" | tail -n 1)
if [ -z "$threads" ] || [ -z "$messages" ]; then
  fail 1 "prgcli printed no 'Threads migrated:'/'Messages migrated:' summary: the migration did not run (nothing was changed)"
fi
[ "$(data_layout "$new")" = store ] || fail 1 "prgcli did not produce a 0.2.x data dir (no store/ in $new) (nothing was changed)"
if [ -n "$PDB_EXPECT_THREADS" ] && [ "$threads" -lt "$PDB_EXPECT_THREADS" ]; then
  fail 1 "prgcli migrated $threads threads, but $from served $PDB_EXPECT_THREADS before the upgrade (nothing was changed)"
fi
# 0.1.x counts every stored message version in /admin/stats, and prgcli reads
# every one: fewer means it skipped some. The 0.2.1 prgcli takes an encrypted
# value whose first byte is '{' or '[' (about 1 in 128) for plaintext JSON,
# fails to parse it and goes on without it.
if [ -n "$PDB_EXPECT_MESSAGES" ] && [ "$messages" -lt "$PDB_EXPECT_MESSAGES" ]; then
  fail 1 "prgcli migrated $messages message versions, but $from held $PDB_EXPECT_MESSAGES before the upgrade: it skipped $((PDB_EXPECT_MESSAGES - messages)) it could not read (the 0.2.1 prgcli misreads encrypted values that begin with '{' or '['); the migration would lose data (nothing was changed)"
fi
log "prgcli migrated $threads threads and $messages messages in $(($(date +%s) - started))s"

# Swap: the old directory is kept as it is; the new one, which prgcli wrote as
# root, takes its place, owned by the service's user.
[ "$PDB_SERVICE_MANAGER" = docker ] || chown -R -- "$PDB_SERVICE_USER:$PDB_SERVICE_USER" "$new"
mv -- "$PDB_DB_PATH" "$kept"
mv -- "$new" "$PDB_DB_PATH"
at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
printf '{"path":%s,"from":%s,"to":%s,"at":%s}\n' "$(json_str "$kept")" "$(json_str "$from")" "$(json_str "$PDB_VERSION")" "$(json_str "$at")" \
  >"$PDB_INSTALL_DIR/kept-data"
log "kept the $from data at $kept; $PDB_DB_PATH now holds the migrated data"
record_result migrate "$(printf '{"migrated":true,"kept":%s,"from":%s,"to":%s,"threads":%s,"messages":%s,"at":%s}' "$(json_str "$kept")" \
  "$(json_str "$from")" "$(json_str "$PDB_VERSION")" "$threads" "$messages" "$(json_str "$at")")"
