#!/bin/sh
# install.sh — install the staged, verified release and start it.
#
# Layout: <install>/releases/<version>/progressdb, <install>/current -> releases/<v>
# (switched atomically: ln -s to a temp name + mv -T), <install>/progressdb.env
# <install>/releases/<version>/config.yaml (0600, owned by the service user, from
# stdin: the config the program renders for that release family; absent when the
# operator manages deployment.binary.configFile), <install>/bin/<service>-launch
# (process/supervisor launcher: drops to the service user), <install>/run/<service>.pid,
# <install>/logs/<service>.log. Releases are root's; the service runs as
# PDB_SERVICE_USER (created if absent), which owns dbPath and kmsDataDir.
# A unit, program, launcher or pidfile of that name that this program did not
# write is never overwritten (exit 1 before anything changes).
#
# The backup's warm snapshot (backup.sh's snapshot mode), when there is one
# for this upgrade, is completed right after the stop (the cold delta: rsync of
# what changed since), before anything else changes; when this script ends,
# however it ends, offsite.sh may upload it (see lib.sh, "the warm snapshot").
#
# Then waits up to PDB_AUTO_REVERT_SECONDS for <health>/readyz to report the
# new version; if it never does (and the value is > 0), switches current back
# to the previous release, restarts it and exits non-zero. Releases beyond
# PDB_KEEP_RELEASES are pruned only after success (never the previous one).
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_KMS_DATA_DIR PDB_SERVICE_MANAGER PDB_SERVICE_NAME
#   PDB_SERVICE_USER PDB_LISTEN_ADDR PDB_CONFIG_FILE PDB_SUPERVISOR_CONF_DIR
#   PDB_SUPERVISORCTL_CONFIG PDB_SYSTEMD_UNIT_DIR PDB_SERVICE_UNIT PDB_VERSION
#   PDB_ARCHIVE_NAME PDB_KEEP_RELEASES PDB_HEALTH_URL PDB_AUTO_REVERT_SECONDS
#   PDB_STOP_TIMEOUT PDB_BACKUP_URI PDB_TARGET_LAYOUT
# Stdin: PDB_SERVICE_CONFIG_B64 (the rendered config.yaml, base64), unless PDB_CONFIG_FILE.
# Stdout: {"version":"0.2.1","previousVersion":"0.1.2","proof":"/readyz reports \"v0.2.1\"","switched":true}
# Exit: 0 ok; 1 failed before the switch (old release untouched); 2 bad
#   parameters; 5 new version unhealthy, reverted and the previous version is
#   ready; 6 new version unhealthy and the revert did not bring back a ready
#   service (or there was nothing to revert to).
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}" "${PDB_SERVICE_USER:?}"
: "${PDB_LISTEN_ADDR:?}" "${PDB_VERSION:?}" "${PDB_ARCHIVE_NAME:?}"
: "${PDB_KMS_DATA_DIR=}" "${PDB_CONFIG_FILE=}" "${PDB_SUPERVISOR_CONF_DIR:=/etc/supervisor/conf.d}" "${PDB_SUPERVISORCTL_CONFIG=}"
: "${PDB_SYSTEMD_UNIT_DIR:=/etc/systemd/system}" "${PDB_SERVICE_UNIT=}" "${PDB_KEEP_RELEASES:=3}"
: "${PDB_HEALTH_URL=}" "${PDB_AUTO_REVERT_SECONDS:=60}" "${PDB_STOP_TIMEOUT:=30}" "${PDB_BACKUP_URI=}"
: "${PDB_TARGET_LAYOUT:=store}"
PDB_SCRIPT=${PDB_SCRIPT:-install}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets
umask 022
# A backup snapshot this upgrade stopped the service for may be uploaded once this script ends.
trap snapshot_release EXIT
snapshot_claim
# Before anything is written, and before the EXIT trap below could start a service of that name.
check_service_files
ensure_service_user
# A lost SSH session must not stop the install halfway (old release stopped,
# new one not started): it carries on, starts or reverts, and logs to
# logs/upgrade.log.
trap '' HUP PIPE
current=$(current_version)
tmp=''
switched=0
config_changed=0
# A failure before the switch leaves the old release in place; if the backup
# stopped it, start it again rather than leave the service down.
on_exit() {
  rc=$?
  trap - EXIT
  [ -z "$tmp" ] || rm -rf -- "$tmp"
  if [ "$rc" -ne 0 ] && [ "$switched" = 0 ] && [ -n "$current" ] && ! svc_is_running; then
    log "install failed before switching: starting $current again"
    if svc_start && wait_ready "$current" "$PDB_STOP_TIMEOUT"; then
      log "$current is running again; nothing was upgraded"
    else
      log "FAILED to start $current again — the service is DOWN; see $(svc_where_logs)"
    fi
  fi
  snapshot_release
  exit "$rc"
}
trap on_exit EXIT

archive="$PDB_INSTALL_DIR/staging/$PDB_VERSION/$PDB_ARCHIVE_NAME"
[ -f "$archive" ] || fail 1 "staged archive $archive not found — run the preflight for $PDB_VERSION first (nothing was changed)"
expected=$(cut -c1-64 <"$archive.sha256" 2>/dev/null || true)
actual=$(sha256_of "$archive")
if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then
  fail 1 "staged archive $archive does not match the sha256 recorded by the preflight: expected '${expected}', actual $actual — re-run the preflight (nothing was changed)"
fi

mkdir -p -- "$PDB_INSTALL_DIR/releases" "$PDB_INSTALL_DIR/bin" "$PDB_INSTALL_DIR/run" "$PDB_INSTALL_DIR/logs"
previous=$current
if [ "$current" = "$PDB_VERSION" ]; then
  # Re-run after a successful switch: report the release before it.
  previous=$(cat -- "$PDB_INSTALL_DIR/.previous-version" 2>/dev/null || true)
fi

# 1. Extract into releases/<version> (idempotent).
rel="$PDB_INSTALL_DIR/releases/$PDB_VERSION"
tmp=$(mktemp -d "$PDB_INSTALL_DIR/releases/.extract-XXXXXX")
tar -xzf "$archive" -C "$tmp" -- || fail 1 "cannot extract $archive (nothing was changed)"
if [ -f "$tmp/progressdb" ]; then
  top=$tmp
else
  top=''
  for d in "$tmp"/*/; do
    if [ -f "${d}progressdb" ]; then
      top=${d%/}
      break
    fi
  done
  [ -n "$top" ] || fail 1 "$archive has no progressdb binary (expected progressdb_<v>_linux_<arch>/progressdb) (nothing was changed)"
fi
chown -R 0:0 -- "$top"
chmod 0755 "$top/progressdb"
if [ -f "$rel/progressdb" ] && cmp -s "$rel/progressdb" "$top/progressdb"; then
  log "release $PDB_VERSION already installed at $rel"
else
  if [ -e "$rel" ]; then
    mv -- "$rel" "$tmp/replaced"
  fi
  mv -- "$top" "$rel"
  log "installed $PDB_VERSION into $rel"
fi
printf '%s  %s\n' "$actual" "$PDB_ARCHIVE_NAME" >"$rel/.archive.sha256"
touch -- "$rel"

# 2. The service's config file, next to the release it belongs to (0600): a
# rollback or an auto-revert starts the old release with its own config. It
# holds the API keys and the KMS key, so it arrives on stdin and the service
# gets no secret in its environment (0.2.x crash dumps print the environment).
if [ -z "$PDB_CONFIG_FILE" ]; then
  [ -n "$PDB_SECRET_SERVICE_CONFIG_B64" ] || fail 2 "no service config on stdin (PDB_SERVICE_CONFIG_B64) and no deployment.binary.configFile (nothing was changed)"
  (
    umask 077
    printf '%s' "$PDB_SECRET_SERVICE_CONFIG_B64" | base64 -d >"$rel/config.yaml.tmp"
  ) || fail 2 "the service config on stdin is not valid base64 (nothing was changed)"
  chmod 0600 "$rel/config.yaml.tmp"
  # The service reads it as its own user (0600: it holds the keys).
  chown -- "$PDB_SERVICE_USER:$PDB_SERVICE_USER" "$rel/config.yaml.tmp"
  if cmp -s "$rel/config.yaml.tmp" "$rel/config.yaml"; then
    rm -f -- "$rel/config.yaml.tmp"
  else
    mv -f -- "$rel/config.yaml.tmp" "$rel/config.yaml"
    config_changed=1
    log "wrote $rel/config.yaml (0600)"
  fi
fi
# Earlier versions of this program kept the KMS key in an env file the service
# loaded: the key would end up in 0.2.x crash dumps. It is in config.yaml now.
if [ -e "$PDB_INSTALL_DIR/progressdb.env" ]; then
  rm -f -- "$PDB_INSTALL_DIR/progressdb.env"
  log "removed the legacy $PDB_INSTALL_DIR/progressdb.env (secrets no longer go into the service's environment)"
fi

# 3. Launcher (process and supervisor modes): started as root, it writes the
# pidfile, then runs the release as the service user (no new privileges; the
# capability to bind a port below 1024 only when the listen port needs it)
# with a clean environment and the release dir as working dir (so no stray
# ./.env or ./config.yaml is read).
launcher=$(svc_launcher)
caps=''
[ "${PDB_LISTEN_ADDR##*:}" -ge 1024 ] || caps=' --inh-caps=+net_bind_service --ambient-caps=+net_bind_service'
{
  printf '#!/bin/sh\n# Managed by progressdb-upgrades (install.sh) — do not edit.\nset -eu\n'
  printf 'echo "$$" >%s\n' "$(sh_quote "$(svc_pidfile)")"
  printf 'cd %s\n' "$(sh_quote "$PDB_INSTALL_DIR/current")"
  printf 'exec setpriv --reuid=%s --regid=%s --init-groups --no-new-privs%s -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin ./progressdb --config %s\n' \
    "$PDB_SERVICE_USER" "$PDB_SERVICE_USER" "$caps" "$(sh_quote "$(service_config_path)")"
} >"$launcher.tmp"
chmod 0755 "$launcher.tmp"
launcher_changed=0
if cmp -s "$launcher.tmp" "$launcher"; then
  rm -f -- "$launcher.tmp"
else
  mv -f -- "$launcher.tmp" "$launcher"
  launcher_changed=1
fi

# 4. Service definition.
unit_changed=0
case $PDB_SERVICE_MANAGER in
  systemd) unit_path="$PDB_SYSTEMD_UNIT_DIR/$PDB_SERVICE_NAME.service" ;;
  supervisor) unit_path="$PDB_SUPERVISOR_CONF_DIR/$PDB_SERVICE_NAME.conf" ;;
  process) unit_path='' ;;
  *) fail 2 "unknown service manager '$PDB_SERVICE_MANAGER'" ;;
esac
if [ -n "$unit_path" ]; then
  [ -n "$PDB_SERVICE_UNIT" ] || fail 2 "no service definition was rendered for $PDB_SERVICE_MANAGER"
  mkdir -p -- "$(dirname -- "$unit_path")"
  printf '%s\n' "$PDB_SERVICE_UNIT" >"$unit_path.tmp"
  if cmp -s "$unit_path.tmp" "$unit_path"; then
    rm -f -- "$unit_path.tmp"
  else
    mv -f -- "$unit_path.tmp" "$unit_path"
    unit_changed=1
    log "wrote $unit_path"
  fi
fi

# start_release: (re)start the service on whatever current points to.
start_release() {
  case $PDB_SERVICE_MANAGER in
    systemd)
      own_service_files
      if [ "$unit_changed" = 1 ]; then
        systemctl daemon-reload
        systemctl enable "$PDB_SERVICE_NAME.service" >/dev/null 2>&1 || true
      fi
      systemd_restart
      ;;
    supervisor)
      own_service_files
      supctl reread >&2
      if [ "$unit_changed" = 1 ]; then
        # update adds/re-adds the program and autostart=true starts it.
        supctl update "$PDB_SERVICE_NAME" >&2
        unit_changed=0
        case $(supervisor_state) in
          RUNNING | STARTING) ;;
          *) supctl start "$PDB_SERVICE_NAME" >&2 ;;
        esac
      else
        supctl restart "$PDB_SERVICE_NAME" >&2
      fi
      ;;
    process) svc_start ;; # owns the files too
  esac
}

# 5. Switch and start.
if [ "$current" = "$PDB_VERSION" ] && ! snapshot_waiting && svc_is_running && [ "$unit_changed" = 0 ] && [ "$launcher_changed" = 0 ] && [ "$config_changed" = 0 ] &&
  wait_ready "$PDB_VERSION" 0; then
  log "$PDB_VERSION is already current, running and ready: nothing to restart"
else
  if svc_is_running; then
    log "stopping $PDB_SERVICE_NAME ($current)"
    svc_stop || fail 1 "could not stop $PDB_SERVICE_NAME ($current) (current still points to it)"
  fi
  # The backup's warm snapshot: what changed since, now that nothing writes (no S3 call while stopped).
  if snapshot_waiting; then
    snapshot_seal || fail 1 "could not complete the backup snapshot $(snapshot_dir) (rsync failed; see above): $current starts again, nothing was upgraded"
  fi
  # A rollback across the data format: this release runs on the data the
  # migration kept (the newer data is moved aside, not deleted).
  if [ "$PDB_TARGET_LAYOUT" = root ] && [ "$(kept_field from)" = "$PDB_VERSION" ]; then
    case $(data_layout "$PDB_DB_PATH") in
      store | mixed) swap_data_back rolled-back || fail 1 "the data kept for $PDB_VERSION is gone (nothing was changed)" ;;
    esac
  fi
  switched=1
  switch_current "$PDB_VERSION"
  if [ -n "$current" ] && [ "$current" != "$PDB_VERSION" ]; then
    printf '%s\n' "$current" >"$PDB_INSTALL_DIR/.previous-version"
  fi
  log "current -> releases/$PDB_VERSION; starting $PDB_SERVICE_NAME via $PDB_SERVICE_MANAGER"
  start_release || log "WARNING: $PDB_SERVICE_MANAGER reported a start failure for $PDB_VERSION"

  if [ "$PDB_AUTO_REVERT_SECONDS" -gt 0 ]; then
    if wait_ready "$PDB_VERSION" "$PDB_AUTO_REVERT_SECONDS"; then
      log "$PDB_VERSION is ready: $PDB_PROOF"
    else
      why="$PDB_VERSION was not proved to answer on $PDB_HEALTH_URL within ${PDB_AUTO_REVERT_SECONDS}s (last seen: $PDB_LAST_RESPONSE)"
      svc_tail_logs
      restore_hint=''
      [ -n "$PDB_BACKUP_URI" ] && restore_hint=" The pre-upgrade backup is $PDB_BACKUP_URI."
      if [ -n "$current" ] && [ "$current" != "$PDB_VERSION" ] && [ -x "$PDB_INSTALL_DIR/releases/$current/progressdb" ]; then
        log "$why — reverting to $current"
        svc_stop || true
        switch_current "$current"
        # A migration in this upgrade: the previous release runs on the data it kept.
        if [ "$(kept_field to)" = "$PDB_VERSION" ] && [ "$(kept_field from)" = "$current" ] && ! swap_data_back failed; then
          # $current cannot read the migrated data: starting it would serve an empty database.
          fail 6 "$why. The data kept for $current by the migration is gone, so $current was NOT started on the migrated data (it would serve an empty database); the service is stopped. Restore the pre-upgrade backup (progressdb:restore.backup before:$PDB_VERSION).$restore_hint"
        fi
        start_release || true
        if wait_ready "$current" "$PDB_AUTO_REVERT_SECONDS"; then
          fail 5 "$why. AUTO-REVERTED: current -> releases/$current, and $current is running and ready. Logs of the failed start: $(svc_where_logs).$restore_hint"
        fi
        fail 6 "$why. Reverted current -> releases/$current, but $current did not become ready either (last response: $PDB_LAST_RESPONSE) — if $PDB_VERSION already migrated the data, $current cannot open it: restore the pre-upgrade backup.$restore_hint Logs: $(svc_where_logs)."
      fi
      fail 6 "$why, and there is no previous release to revert to. Logs: $(svc_where_logs).$restore_hint"
    fi
  else
    log "autoRevertSeconds is 0: not waiting for readiness"
    wait_ready "$PDB_VERSION" 30 || fail 1 "$PDB_VERSION was not proved to answer within 30s (last seen: $PDB_LAST_RESPONSE); autoRevert is off, so it was left in place"
  fi
fi

# 6. Prune old releases (never the new one, never the one we switched from).
# (Release names are validated versions: no newlines or glob characters.)
# shellcheck disable=SC2012
ls -1t -- "$PDB_INSTALL_DIR/releases" | {
  n=0
  while IFS= read -r r; do
    case $r in .* | '') continue ;; esac
    n=$((n + 1))
    if [ "$n" -gt "$PDB_KEEP_RELEASES" ] && [ "$r" != "$PDB_VERSION" ] && [ "$r" != "$current" ] && [ "$r" != "$previous" ]; then
      log "pruning old release $r"
      rm -rf -- "${PDB_INSTALL_DIR:?}/releases/$r"
    fi
  done
}
for s in "$PDB_INSTALL_DIR"/staging/*; do
  [ -d "$s" ] || continue
  [ "${s##*/}" = "$PDB_VERSION" ] || rm -rf -- "$s"
done

[ -n "$PDB_PROOF" ] || wait_ready "$PDB_VERSION" 10 || true
# switched: this run changed the running version (an upgrade, a rollback, a drift
# repair after a revert), as opposed to a restart at the same version: only then
# is the data-continuity gate's baseline, taken just before, the one to compare.
# A switch stays one until finalize commits it (run/unverified-switch): a re-run
# after a session cut that let the switch finish unseen still gets the gate.
switched=false
[ "$current" = "$PDB_VERSION" ] || switched=true
[ "$(cat -- "$PDB_INSTALL_DIR/run/unverified-switch" 2>/dev/null || true)" = "$PDB_VERSION" ] && switched=true
[ "$switched" = false ] || printf '%s\n' "$PDB_VERSION" >"$PDB_INSTALL_DIR/run/unverified-switch"
printf '{"version":%s,"previousVersion":%s,"proof":%s,"switched":%s}\n' "$(json_str "$PDB_VERSION")" "$(json_str "$previous")" "$(json_str "$PDB_PROOF")" "$switched"
