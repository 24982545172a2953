#!/usr/bin/env bash
# tools/docker-provider/build.sh — build the stand-in docker resource provider (main.go here)
# into .tools/docker-v<ver>-<srchash>/pulumi-resource-docker and print that path on stdout.
#
#   tools/docker-provider/build.sh                 build if missing, print the binary's path
#   tools/docker-provider/build.sh --install HOME  also install it as resource-docker-v<ver> into HOME/plugins
#
# <ver> is the @pulumi/docker version in package-lock.json (the engine asks the plugin for the
# version the SDK registered). Dependencies come from the Go module proxy, pinned by go.sum.
# Cold build (empty module and build cache) ~1-2 min on 2 cores; cached: a no-op.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC="$ROOT/tools/docker-provider"
die() { echo "docker-provider/build.sh: error: $*" >&2; exit 1; }

ver=$(grep -A2 '"node_modules/@pulumi/docker": {' "$ROOT/package-lock.json" | sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -n1)
[ -n "$ver" ] || die "@pulumi/docker not found in package-lock.json"
hash=$( (cd "$SRC" && cat go.mod go.sum ./*.go) | sha256sum | cut -c1-12)
OUT="$ROOT/.tools/docker-v$ver-$hash"
BIN="$OUT/pulumi-resource-docker"

if [ ! -x "$BIN" ]; then
  command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:$PATH"
  command -v go >/dev/null 2>&1 || die "go not found (need Go >= 1.25 on PATH or in /usr/local/go/bin)"
  mkdir -p "$ROOT/.tools"
  exec 9>"$ROOT/.tools/.docker-provider.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  if [ ! -x "$BIN" ]; then
    start=$(date +%s)
    rm -rf "$OUT.tmp" && mkdir -p "$OUT.tmp"
    (cd "$SRC" && GOTOOLCHAIN=local go build -trimpath -ldflags "-s -w -X main.version=$ver" \
      -o "$OUT.tmp/pulumi-resource-docker" .) >&2 || die "go build failed"
    rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
    echo "built pulumi-resource-docker v$ver (stand-in, tools/docker-provider) in $(( $(date +%s) - start )) s" >&2
  fi
fi

if [ "${1:-}" = "--install" ]; then
  [ -n "${2:-}" ] || die "--install needs a PULUMI_HOME directory"
  d="$2/plugins/resource-docker-v$ver"
  if ! cmp -s "$BIN" "$d/pulumi-resource-docker" 2>/dev/null; then
    rm -rf "$d" "$d.partial" "$d.lock" && mkdir -p "$d" && cp "$BIN" "$d/"
  fi
fi
echo "$BIN"
