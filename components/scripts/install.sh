#!/bin/sh
# install.sh — install the staged, verified release and start it.
#
# Layout: <install>/releases/<version>/progressdb, <install>/current -> releases/<v>
# (switched atomically: ln -s to a temp name + mv -T), <install>/progressdb.env
# (0600, PROGRESSDB_KMS_MASTER_KEY_HEX from stdin; loaded by the service
# manager), <install>/bin/<service>-launch (process/supervisor launcher),
# <install>/run/<service>.pid, <install>/logs/<service>.log.
#
# Then waits up to PDB_AUTO_REVERT_SECONDS for <health>/readyz to report the
# new version; if it never does (and the value is > 0), switches current back
# to the previous release, restarts it and exits non-zero. Releases beyond
# PDB_KEEP_RELEASES are pruned only after success (never the previous one).
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_SERVICE_MANAGER PDB_SERVICE_NAME
#   PDB_LISTEN_ADDR PDB_CONFIG_FILE PDB_SUPERVISOR_CONF_DIR
#   PDB_SUPERVISORCTL_CONFIG PDB_SYSTEMD_UNIT_DIR PDB_SERVICE_UNIT PDB_VERSION
#   PDB_ARCHIVE_NAME PDB_KEEP_RELEASES PDB_HEALTH_URL PDB_AUTO_REVERT_SECONDS
#   PDB_STOP_TIMEOUT PDB_BACKUP_URI
# Stdin: optional PROGRESSDB_KMS_MASTER_KEY_HEX.
# Stdout: {"version":"0.2.0","previousVersion":"0.1.2"} ("" on first install)
# Exit: 0 ok; 1 failed before the switch (old release untouched); 2 bad
#   parameters; 5 new version unhealthy, reverted and the previous version is
#   ready; 6 new version unhealthy and the revert did not bring back a ready
#   service (or there was nothing to revert to).
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_SERVICE_NAME:?}"
: "${PDB_LISTEN_ADDR:?}" "${PDB_VERSION:?}" "${PDB_ARCHIVE_NAME:?}"
: "${PDB_CONFIG_FILE=}" "${PDB_SUPERVISOR_CONF_DIR:=/etc/supervisor/conf.d}" "${PDB_SUPERVISORCTL_CONFIG=}"
: "${PDB_SYSTEMD_UNIT_DIR:=/etc/systemd/system}" "${PDB_SERVICE_UNIT=}" "${PDB_KEEP_RELEASES:=3}"
: "${PDB_HEALTH_URL=}" "${PDB_AUTO_REVERT_SECONDS:=60}" "${PDB_STOP_TIMEOUT:=30}" "${PDB_BACKUP_URI=}"
PDB_SCRIPT=${PDB_SCRIPT:-install}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets
umask 022
# A lost SSH session must not stop the install halfway (old release stopped,
# new one not started): it carries on, starts or reverts, and logs to
# logs/upgrade.log.
trap '' HUP PIPE
current=$(current_version)
tmp=''
switched=0
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
tar -xzf "$archive" -C "$tmp" || fail 1 "cannot extract $archive (nothing was changed)"
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

# 2. Secret env file (0600), only rewritten when a key is given.
envfile="$PDB_INSTALL_DIR/progressdb.env"
if [ -n "$PDB_SECRET_KMS_MASTER_KEY_HEX" ]; then
  case $PDB_SECRET_KMS_MASTER_KEY_HEX in
    *[!0-9a-fA-F]*) fail 2 "PROGRESSDB_KMS_MASTER_KEY_HEX on stdin is not hexadecimal (value not shown) (nothing was changed)" ;;
  esac
  (
    umask 077
    printf 'PROGRESSDB_KMS_MASTER_KEY_HEX=%s\n' "$PDB_SECRET_KMS_MASTER_KEY_HEX" >"$envfile.tmp"
  )
  chmod 0600 "$envfile.tmp"
  if cmp -s "$envfile.tmp" "$envfile"; then
    rm -f -- "$envfile.tmp"
  else
    mv -f -- "$envfile.tmp" "$envfile"
    log "wrote $envfile (0600)"
  fi
fi

# 3. Launcher (process and supervisor modes): loads the env file without eval.
launcher=$(svc_launcher)
{
  printf '#!/bin/sh\n# Generated by progressdb-upgrades install.sh — do not edit.\nset -eu\n'
  printf 'envfile=%s\n' "$(sh_quote "$envfile")"
  printf 'pidfile=%s\n' "$(sh_quote "$(svc_pidfile)")"
  cat <<'EOF'
if [ -f "$envfile" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      PROGRESSDB_*=*)
        name=${line%%=*}
        case $name in *[!A-Za-z0-9_]*) continue ;; esac
        export "$line"
        ;;
    esac
  done <"$envfile"
fi
echo "$$" >"$pidfile"
EOF
  printf 'exec %s --db %s --addr %s' "$(sh_quote "$PDB_INSTALL_DIR/current/progressdb")" \
    "$(sh_quote "$PDB_DB_PATH")" "$(sh_quote "$PDB_LISTEN_ADDR")"
  if [ -n "$PDB_CONFIG_FILE" ]; then
    printf ' --config %s' "$(sh_quote "$PDB_CONFIG_FILE")"
  fi
  printf '\n'
} >"$launcher.tmp"
chmod 0755 "$launcher.tmp"
mv -f -- "$launcher.tmp" "$launcher"

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
      if [ "$unit_changed" = 1 ]; then
        systemctl daemon-reload
        systemctl enable "$PDB_SERVICE_NAME.service" >/dev/null 2>&1 || true
      fi
      systemctl restart "$PDB_SERVICE_NAME.service"
      ;;
    supervisor)
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
    process) svc_start ;;
  esac
}

# 5. Switch and start.
if [ "$current" = "$PDB_VERSION" ] && svc_is_running && [ "$unit_changed" = 0 ] &&
  wait_ready "$PDB_VERSION" 0; then
  log "$PDB_VERSION is already current, running and ready: nothing to restart"
else
  if svc_is_running; then
    log "stopping $PDB_SERVICE_NAME ($current)"
    svc_stop || fail 1 "could not stop $PDB_SERVICE_NAME ($current) (current still points to it)"
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
      log "$PDB_VERSION is ready on $PDB_HEALTH_URL/readyz"
    else
      why="$PDB_VERSION did not report ready on $PDB_HEALTH_URL/readyz within ${PDB_AUTO_REVERT_SECONDS}s (last response: $PDB_LAST_RESPONSE)"
      svc_tail_logs
      restore_hint=''
      [ -n "$PDB_BACKUP_URI" ] && restore_hint=" The pre-upgrade backup is $PDB_BACKUP_URI."
      if [ -n "$current" ] && [ "$current" != "$PDB_VERSION" ] && [ -x "$PDB_INSTALL_DIR/releases/$current/progressdb" ]; then
        log "$why — reverting to $current"
        svc_stop || true
        switch_current "$current"
        start_release || true
        if wait_ready "$current" "$PDB_AUTO_REVERT_SECONDS"; then
          fail 5 "$why. AUTO-REVERTED: current -> releases/$current, and $current is running and ready. Logs of the failed start: $(svc_where_logs).$restore_hint"
        fi
        fail 6 "$why. Reverted current -> releases/$current, but $current did not become ready either (last response: $PDB_LAST_RESPONSE) — if $PDB_VERSION already migrated the data, $current cannot open it: restore the pre-upgrade backup.$restore_hint Logs: $(svc_where_logs)."
      fi
      fail 6 "$why, and there is no previous release to revert to. Logs: $(svc_where_logs).$restore_hint"
    fi
  else
    log "autoRevertSeconds is 0: not waiting for readiness (the HealthCheck verifies it)"
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

printf '{"version":%s,"previousVersion":%s}\n' "$(json_str "$PDB_VERSION")" "$(json_str "$previous")"
