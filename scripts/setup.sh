#!/usr/bin/env bash
# Installs what the tests and the demo need on this machine, from the project's
# own files: Debian packages (sshd, supervisor, the aws CLI, rsync and zstd for
# the backups, shellcheck, podman for the container-mode e2e, docker.io's dockerd for the same against Docker,
# mmdebstrap and systemd-nspawn for the systemd test host), then the pinned Pulumi toolchain and MinIO
# (scripts/tools.sh), with the command and docker provider stand-ins. Idempotent; fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."

# command → Debian package that provides it
declare -A NEEDED=(
  [/usr/sbin/sshd]=openssh-server
  [/usr/bin/ssh]=openssh-client
  [/usr/bin/supervisord]=supervisor
  [/usr/bin/aws]=awscli
  [/usr/bin/rsync]=rsync
  [/usr/bin/zstd]=zstd
  [/usr/bin/shellcheck]=shellcheck
  [/usr/bin/curl]=curl
  [/usr/bin/openssl]=openssl
  [/usr/bin/podman]=podman
  [/usr/sbin/runc]=runc
  [/usr/lib/podman/netavark]=netavark
  [/usr/lib/podman/aardvark-dns]=aardvark-dns
  [/usr/sbin/iptables]=iptables
  [/usr/bin/mmdebstrap]=mmdebstrap
  [/usr/bin/systemd-nspawn]=systemd-container
  [/usr/sbin/dockerd]=docker.io
)
missing=()
for path in "${!NEEDED[@]}"; do
  [ -x "$path" ] || missing+=("${NEEDED[$path]}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: install them with: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 22 ]; then
  echo "setup: node on PATH is $(node --version); run through npm (npm test / npm run demo) so node_modules/.bin/node (Node 24) comes first" >&2
  exit 1
fi

exec bash scripts/tools.sh
