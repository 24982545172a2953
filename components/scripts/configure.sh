#!/bin/sh
# configure.sh — container mode: write the service's config file into the data
# mount (<dbPath>/config.yaml, seen as /data/config.yaml in the container),
# 0600 and owned, like the whole data dir, by the image's user (uid/gid 1000),
# before the container is (re)created. The file holds the API keys and the
# KMS key: it arrives on stdin and is never put in the container's environment.
#
# Parameters: PDB_INSTALL_DIR PDB_DB_PATH PDB_SERVICE_NAME PDB_SERVICE_MANAGER PDB_UID
#   PDB_VERSION (the version the container is about to run; "" when not told)
# Stdin: PDB_SERVICE_CONFIG_B64.
# Stdout: {"config":"<path>","changed":true|false,"switching":true|false} — switching: the
#   container on the host runs another version than PDB_VERSION (an upgrade, not a restart).
set -eu
: "${PDB_INSTALL_DIR:?}" "${PDB_DB_PATH:?}" "${PDB_SERVICE_NAME:?}" "${PDB_SERVICE_MANAGER:?}" "${PDB_UID:=1000}" "${PDB_VERSION=}"
PDB_SCRIPT=${PDB_SCRIPT:-configure}
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "$0")/lib.sh" # @inline lib.sh

read_secrets
[ -n "$PDB_SECRET_SERVICE_CONFIG_B64" ] || fail 2 "no service config on stdin (PDB_SERVICE_CONFIG_B64)"
mkdir -p -- "$PDB_DB_PATH"
cfg="$PDB_DB_PATH/config.yaml"
(
  umask 077
  printf '%s' "$PDB_SECRET_SERVICE_CONFIG_B64" | base64 -d >"$cfg.tmp"
) || fail 2 "the service config on stdin is not valid base64"
changed=false
if cmp -s "$cfg.tmp" "$cfg"; then
  rm -f -- "$cfg.tmp"
else
  mv -f -- "$cfg.tmp" "$cfg"
  changed=true
  log "wrote $cfg (0600, uid $PDB_UID)"
fi
# The image runs as uid/gid 1000; the mount is created by root.
chown -R "$PDB_UID:$PDB_UID" -- "$PDB_DB_PATH"
chmod 0600 -- "$cfg"
switching=false
if [ -n "$PDB_VERSION" ] && [ "$(current_version)" != "$PDB_VERSION" ]; then switching=true; fi
printf '{"config":%s,"changed":%s,"switching":%s}\n' "$(json_str "$cfg")" "$changed" "$switching"
