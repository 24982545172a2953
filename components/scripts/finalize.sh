#!/bin/sh
# finalize.sh — the last step of an upgrade, after the HealthCheck: commit it,
# or, when the data-continuity gate failed (the new version answers but does
# not serve the data the old one served), put the previous release back on its
# own data and fail the update with the gate's finding.
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_SERVICE_MANAGER PDB_SERVICE_NAME
#   PDB_LISTEN_ADDR PDB_SUPERVISORCTL_CONFIG PDB_STOP_TIMEOUT PDB_DOCKER_HOST
#   PDB_VERSION PDB_PREVIOUS_VERSION PDB_CONTINUITY (passed|failed|skipped: …)
#   PDB_FINDING PDB_HEALTH_URL PDB_SERVICE_USER PDB_KMS_DATA_DIR PDB_CONFIG_FILE
# Stdout: {"version":"0.2.1","committed":true}
# Exit: 0 committed; 7 the gate failed and the previous version runs again on
#   its data; 6 the gate failed and the revert did not bring it back.
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}" "${PDB_VERSION:?}"
: "${PDB_LISTEN_ADDR=}" "${PDB_PREVIOUS_VERSION=}" "${PDB_CONTINUITY:=skipped}" "${PDB_FINDING=}" "${PDB_HEALTH_URL=}"
: "${PDB_SUPERVISORCTL_CONFIG=}" "${PDB_STOP_TIMEOUT:=30}" "${PDB_DOCKER_HOST=}"
: "${PDB_SERVICE_USER:?}" "${PDB_KMS_DATA_DIR=}" "${PDB_CONFIG_FILE=}"
PDB_SCRIPT=${PDB_SCRIPT:-finalize}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets
trap '' HUP PIPE
# The switch install.sh made is settled either way (committed, or reverted below).
rm -f -- "$PDB_INSTALL_DIR/run/unverified-switch"
if [ "$PDB_CONTINUITY" != failed ]; then
  log "$PDB_VERSION committed (data continuity: $PDB_CONTINUITY)"
  printf '{"version":%s,"committed":true}\n' "$(json_str "$PDB_VERSION")"
  exit 0
fi

prev=$PDB_PREVIOUS_VERSION
current=$(current_version)
why="data-continuity gate: $PDB_FINDING"
if [ "$current" != "$PDB_VERSION" ]; then
  fail 7 "$why. Already reverted: $current runs on $PDB_DB_PATH. Fix the cause, or revert progressdb:version to $current"
fi
if [ -z "$prev" ] || [ "$prev" = "$PDB_VERSION" ] || [ ! -x "$PDB_INSTALL_DIR/releases/$prev/progressdb" ]; then
  fail 6 "$why. There is no previous release to revert to: $PDB_VERSION is still running. Restore the pre-upgrade backup (progressdb:restore.backup before:$PDB_VERSION)"
fi
if [ "$(kept_field to)" = "$PDB_VERSION" ] && [ "$(kept_field from)" = "$prev" ] && [ ! -d "$(kept_field path)" ]; then
  # $prev cannot read the migrated data: reverting would serve an empty database.
  fail 6 "$why. The data kept for $prev by the migration is gone, so $PDB_VERSION was left running (reverting would start $prev on data it cannot read). Restore the pre-upgrade backup (progressdb:restore.backup before:$PDB_VERSION)"
fi
log "$why — reverting to $prev"
svc_stop || true
switch_current "$prev"
if [ "$(kept_field to)" = "$PDB_VERSION" ] && [ "$(kept_field from)" = "$prev" ]; then
  swap_data_back failed-continuity
fi
svc_start || true
if wait_ready "$prev" "$PDB_STOP_TIMEOUT"; then
  fail 7 "$why. AUTO-REVERTED: $prev runs again on its own data ($PDB_PROOF). Revert progressdb:version to $prev to match, or fix the cause and re-run"
fi
svc_tail_logs
fail 6 "$why. Reverted current -> releases/$prev, but it was not proved to answer (last seen: $PDB_LAST_RESPONSE). Restore the pre-upgrade backup (progressdb:restore.backup before:$PDB_VERSION)"
