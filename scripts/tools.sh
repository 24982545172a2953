#!/usr/bin/env bash
# scripts/tools.sh — build the pinned Pulumi toolchain and MinIO into .tools/ (git-ignored).
#
#   scripts/tools.sh            build what is missing (a no-op when everything is cached)
#   scripts/tools.sh --env      print nothing but the env lines (eval-able)
#   . scripts/tools-env.sh      export PATH/PULUMI_* for the tools (after a build)
#
# Everything comes from the Go module proxy (`go` + GOPROXY as configured); versions are in
# tools/versions.env and the npm ones are checked against package-lock.json.
#
# Layout (each build lands in a directory named after what it was built from):
#   .tools/pulumi-<ver>/pulumi                      Pulumi CLI (github.com/pulumi/pulumi/pkg/v3)
#   .tools/pulumi-<ver>/pulumi-language-nodejs      Node.js language host (tools/langhost)
#   .tools/pulumi-<ver>/pulumi-resource-pulumi-nodejs  dynamic-provider launcher (sh script)
#       (the three sit together because the engine looks for its "bundled" plugins next to
#        the real pulumi executable; putting them on PATH instead makes it print warnings)
#   .tools/providers-<srchash>/pulumi-resource-{command,docker}   stand-in providers (tools/providers)
#   .tools/minio-<modver>/minio                     MinIO server
#   .tools/actionlint-<ver>/actionlint              GitHub Actions workflow linter (github.com/rhysd/actionlint)
#   .tools/bin/{pulumi,minio,actionlint}            symlinks
#   .tools/pulumi-home/plugins/resource-{command,docker}-v<ver>/   the providers, installed where
#                                                   the engine looks when PULUMI_HOME=.tools/pulumi-home
# The `bash -c '...' _ args` build commands expand $1.. inside the child shell on purpose.
# shellcheck disable=SC2016
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
ENV_ONLY=0
case "${1:-}" in
  --env) ENV_ONLY=1 ;;
  -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "tools.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

die() { echo "tools.sh: error: $*" >&2; exit 1; }
say() { [ "$ENV_ONLY" = 1 ] || echo "$@"; }

# shellcheck source=tools/versions.env disable=SC1091
. "$ROOT/tools/versions.env"

# --- pins must agree with go.mod and package-lock.json -----------------------------------------
gomod_pin=$(sed -n 's#^[[:space:]]*\(require[[:space:]]\{1,\}\)\{0,1\}github.com/pulumi/pulumi/pkg/v3[[:space:]]\{1,\}\(v[^[:space:]]*\).*#\2#p' \
  "$ROOT/tools/pulumi/go.mod" | head -n1)
[ "$gomod_pin" = "$PULUMI_VERSION" ] ||
  die "tools/versions.env says PULUMI_VERSION=$PULUMI_VERSION but tools/pulumi/go.mod requires pkg/v3 ${gomod_pin:-<none>}; update both together (cd tools/pulumi && go get github.com/pulumi/pulumi/pkg/v3@$PULUMI_VERSION && go mod tidy)"

lock_version() { # lock_version <npm package>  -> version recorded in package-lock.json
  grep -A2 "\"node_modules/$1\": {" "$ROOT/package-lock.json" 2>/dev/null |
    sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' | head -n1
}
[ -f "$ROOT/package-lock.json" ] || die "package-lock.json not found in $ROOT"
for pair in "@pulumi/pulumi:$NPM_PULUMI_VERSION" "@pulumi/command:$NPM_COMMAND_VERSION"; do
  pkg=${pair%%:*}; want=${pair#*:}; have=$(lock_version "$pkg")
  [ "$have" = "$want" ] ||
    die "package-lock.json has $pkg ${have:-<missing>} but tools/versions.env pins $want; update tools/versions.env (and rebuild) or the lock file"
done

# --- cache keys ----------------------------------------------------------------------------------
src_hash() { # src_hash <dir>: short hash of a Go module's sources (all packages)
  (cd "$1" && cat go.mod go.sum && find . -name '*.go' -print0 | sort -z | xargs -0 cat) | sha256sum | cut -c1-12
}
PULUMI_DIR="$TOOLS/pulumi-$PULUMI_VERSION"
LANGHOST_HASH=$(src_hash "$ROOT/tools/langhost")
NPM_DOCKER_VERSION=$(lock_version @pulumi/docker)
[ -n "$NPM_DOCKER_VERSION" ] || die "package-lock.json has no @pulumi/docker"
PROVIDERS_DIR="$TOOLS/providers-$(src_hash "$ROOT/tools/providers")"
# Stand-in resource providers: <plugin name>:<version the npm SDK asks for>.
PROVIDERS=("command:$NPM_COMMAND_VERSION" "docker:$NPM_DOCKER_VERSION")
MINIO_DIR="$TOOLS/minio-$MINIO_MODULE_VERSION"
ACTIONLINT_DIR="$TOOLS/actionlint-$ACTIONLINT_VERSION"
# The providers are installed into the plugin cache of .tools/pulumi-home (the PULUMI_HOME
# that tools-env.sh sets) and, when the caller has another PULUMI_HOME set, into that one too.
PULUMI_HOME_DIR="$TOOLS/pulumi-home"
PULUMI_HOMES=("$PULUMI_HOME_DIR")
if [ -n "${PULUMI_HOME:-}" ] && [ "$PULUMI_HOME" != "$PULUMI_HOME_DIR" ]; then
  PULUMI_HOMES+=("$PULUMI_HOME")
fi
plugin_dir() { echo "$1/plugins/resource-$2-v$3"; } # plugin_dir <PULUMI_HOME> <name> <version>
plugin_ok() { cmp -s "$PROVIDERS_DIR/pulumi-resource-$2" "$(plugin_dir "$1" "$2" "$3")/pulumi-resource-$2" 2>/dev/null; }

print_env() {
  cat <<EOF
export PATH="$BIN:$ROOT/node_modules/.bin:\$PATH"
export PULUMI_HOME="${PULUMI_HOMES[${#PULUMI_HOMES[@]}-1]}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
EOF
}

# The dynamic-provider launcher, equivalent to the one in official Pulumi releases
# (sdk/nodejs/dist/pulumi-resource-pulumi-nodejs): the engine starts it in the program
# directory, it runs @pulumi/pulumi/cmd/dynamic-provider from the nearest node_modules up from
# there (found by the shell: an extra `node -e require.resolve` cost every preview with a
# dynamic resource ~50 ms) with the `node` found on PATH (put node_modules/.bin first to get
# the pinned Node 24).
launcher_text() {
  cat <<'EOF'
#!/bin/sh
# pulumi-resource-pulumi-nodejs: the plugin the Pulumi engine starts for pulumi.dynamic.Resource
# providers written in Node.js (generated by scripts/tools.sh).
d=$(pwd)
while :; do
  script=$d/node_modules/@pulumi/pulumi/cmd/dynamic-provider/index.js
  [ -f "$script" ] && exec node "$script" "$@"
  [ -n "$d" ] || break
  d=${d%/*}
done
echo "pulumi-resource-pulumi-nodejs: no node_modules/@pulumi/pulumi/cmd/dynamic-provider in $(pwd) or above; run npm ci" >&2
exit 1
EOF
}
write_launcher() { # replaced atomically: an engine may be starting it right now
  launcher_text >"$1.tmp"
  chmod 0755 "$1.tmp"
  mv -f "$1.tmp" "$1"
}
launcher_ok() { launcher_text | cmp -s - "$PULUMI_DIR/pulumi-resource-pulumi-nodejs"; }

# --- fast path: everything present -> no Go at all ------------------------------------------------
up_to_date() {
  [ -x "$PULUMI_DIR/pulumi" ] && [ -x "$PULUMI_DIR/pulumi-language-nodejs" ] &&
    [ -f "$PULUMI_DIR/.langhost-$LANGHOST_HASH" ] && [ -x "$PULUMI_DIR/pulumi-resource-pulumi-nodejs" ] && launcher_ok &&
    [ -x "$PROVIDERS_DIR/pulumi-resource-command" ] && [ -x "$PROVIDERS_DIR/pulumi-resource-docker" ] && [ -x "$MINIO_DIR/minio" ] &&
    [ -x "$ACTIONLINT_DIR/actionlint" ] &&
    [ "$(readlink "$BIN/pulumi" 2>/dev/null)" = "$PULUMI_DIR/pulumi" ] &&
    [ "$(readlink "$BIN/minio" 2>/dev/null)" = "$MINIO_DIR/minio" ] &&
    [ "$(readlink "$BIN/actionlint" 2>/dev/null)" = "$ACTIONLINT_DIR/actionlint" ] || return 1
  local h p
  for h in "${PULUMI_HOMES[@]}"; do
    for p in "${PROVIDERS[@]}"; do plugin_ok "$h" "${p%%:*}" "${p#*:}" || return 1; done
  done
}

if [ "$ENV_ONLY" = 1 ]; then
  up_to_date || die "tools are not built yet: run scripts/tools.sh first"
  print_env
  exit 0
fi

if up_to_date; then
  say "tools up to date in $TOOLS (pulumi $PULUMI_VERSION, command v$NPM_COMMAND_VERSION and docker v$NPM_DOCKER_VERSION stand-ins, minio $MINIO_MODULE_VERSION, actionlint $ACTIONLINT_VERSION)"
else
  command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || die "go not found (need Go >= 1.26.6 on PATH or in /usr/local/go/bin)"
  command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:$PATH"
  mkdir -p "$TOOLS" "$BIN"

  # One build at a time (parallel test runners may all call this script).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS/.lock"
    flock 9
  fi

  TOTAL_START=$(date +%s)
  GOFLAGS_COMMON=(-trimpath -buildvcs=false)
  export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

  build_step() { # build_step <label> <command...>: run with timing; keep the log on failure
    local label=$1; shift
    local log start rc
    log=$(mktemp "$TOOLS/build.XXXXXX.log")
    start=$(date +%s)
    printf '%s ... ' "$label"
    set +e
    "$@" >"$log" 2>&1
    rc=$?
    set -e
    if [ $rc -ne 0 ]; then
      echo "FAILED after $(( $(date +%s) - start )) s"
      echo "---- last lines of $log ----" >&2
      tail -n 40 "$log" >&2
      die "$label failed (full log: $log)"
    fi
    rm -f "$log"
    echo "done in $(( $(date +%s) - start )) s"
  }

  # 1. Pulumi CLI. Reuse a `pulumi` of the same version already on PATH (with its bundled
  #    language host) instead of building.
  if [ ! -x "$PULUMI_DIR/pulumi" ]; then
    ext=$(command -v pulumi 2>/dev/null || true)
    ext_real=""
    if [ -n "$ext" ]; then ext_real=$(readlink -f "$ext" || true); fi
    if [ -n "$ext_real" ] && [ "${ext_real#"$TOOLS"/}" = "$ext_real" ] &&
       [ "$("$ext_real" version 2>/dev/null)" = "$PULUMI_VERSION" ]; then
      say "using pulumi $PULUMI_VERSION from PATH: $ext_real (copied)"
      mkdir -p "$PULUMI_DIR.tmp" && cp "$ext_real" "$PULUMI_DIR.tmp/pulumi"
    else
      rm -rf "$PULUMI_DIR.tmp" && mkdir -p "$PULUMI_DIR.tmp"
      build_step "building pulumi $PULUMI_VERSION" \
        bash -c 'cd "$1/tools/pulumi" && go build "${@:4}" -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$2" -o "$3/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi' \
        _ "$ROOT" "$PULUMI_VERSION" "$PULUMI_DIR.tmp" "${GOFLAGS_COMMON[@]}"
    fi
    rm -rf "$PULUMI_DIR" && mv "$PULUMI_DIR.tmp" "$PULUMI_DIR"
  fi

  # 2. Language host, next to pulumi (rebuilt when tools/langhost changes).
  if [ ! -f "$PULUMI_DIR/.langhost-$LANGHOST_HASH" ] || [ ! -x "$PULUMI_DIR/pulumi-language-nodejs" ]; then
    build_step "building pulumi-language-nodejs (tools/langhost $LANGHOST_HASH)" \
      bash -c 'cd "$1/tools/langhost" && go build "${@:4}" -ldflags "-s -w -X main.version=${2#v}" -o "$3/pulumi-language-nodejs.tmp" . && mv "$3/pulumi-language-nodejs.tmp" "$3/pulumi-language-nodejs"' \
      _ "$ROOT" "$PULUMI_VERSION" "$PULUMI_DIR" "${GOFLAGS_COMMON[@]}"
    rm -f "$PULUMI_DIR"/.langhost-* && : >"$PULUMI_DIR/.langhost-$LANGHOST_HASH"
  fi

  # 3. Dynamic-provider launcher, next to pulumi.
  write_launcher "$PULUMI_DIR/pulumi-resource-pulumi-nodejs"

  # 4. Stand-in providers (one Go module, two plugins), installed into PULUMI_HOME's plugin cache.
  if [ ! -x "$PROVIDERS_DIR/pulumi-resource-command" ] || [ ! -x "$PROVIDERS_DIR/pulumi-resource-docker" ]; then
    rm -rf "$PROVIDERS_DIR.tmp" && mkdir -p "$PROVIDERS_DIR.tmp"
    for p in "${PROVIDERS[@]}"; do
      build_step "building pulumi-resource-${p%%:*} v${p#*:} (stand-in, tools/providers/${p%%:*})" \
        bash -c 'cd "$1/tools/providers" && go build "${@:5}" -ldflags "-s -w -X main.version=$3" -o "$4/pulumi-resource-$2" "./$2"' \
        _ "$ROOT" "${p%%:*}" "${p#*:}" "$PROVIDERS_DIR.tmp" "${GOFLAGS_COMMON[@]}"
    done
    rm -rf "$PROVIDERS_DIR" && mv "$PROVIDERS_DIR.tmp" "$PROVIDERS_DIR"
  fi
  for h in "${PULUMI_HOMES[@]}"; do
    for p in "${PROVIDERS[@]}"; do
      plugin_ok "$h" "${p%%:*}" "${p#*:}" && continue
      d=$(plugin_dir "$h" "${p%%:*}" "${p#*:}")
      rm -rf "$d" "$d.partial" "$d.lock"
      mkdir -p "$d"
      cp "$PROVIDERS_DIR/pulumi-resource-${p%%:*}" "$d/"
      say "installed pulumi-resource-${p%%:*} v${p#*:} into $d"
    done
  done

  # 5. MinIO.
  if [ ! -x "$MINIO_DIR/minio" ]; then
    rm -rf "$MINIO_DIR.tmp" && mkdir -p "$MINIO_DIR.tmp"
    minio_tag="DEVELOPMENT.$(echo "$MINIO_RELEASE_TIME" | tr ':' '-')"
    minio_commit=${MINIO_MODULE_VERSION##*-}
    build_step "building minio $MINIO_MODULE_VERSION" \
      env GOBIN="$MINIO_DIR.tmp" go install "${GOFLAGS_COMMON[@]}" -ldflags "-s -w \
        -X github.com/minio/minio/cmd.Version=$MINIO_RELEASE_TIME \
        -X github.com/minio/minio/cmd.ReleaseTag=$minio_tag \
        -X github.com/minio/minio/cmd.CopyrightYear=${MINIO_RELEASE_TIME%%-*} \
        -X github.com/minio/minio/cmd.CommitID=$minio_commit \
        -X github.com/minio/minio/cmd.ShortCommitID=$minio_commit" \
        "github.com/minio/minio@$MINIO_MODULE_VERSION"
    rm -rf "$MINIO_DIR" && mv "$MINIO_DIR.tmp" "$MINIO_DIR"
  fi

  # 6. actionlint (the CI workflow's linter; tests/ci/workflow.test.ts).
  if [ ! -x "$ACTIONLINT_DIR/actionlint" ]; then
    rm -rf "$ACTIONLINT_DIR.tmp" && mkdir -p "$ACTIONLINT_DIR.tmp"
    build_step "building actionlint $ACTIONLINT_VERSION" \
      env GOBIN="$ACTIONLINT_DIR.tmp" go install "${GOFLAGS_COMMON[@]}" -ldflags "-s -w" \
        "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
    rm -rf "$ACTIONLINT_DIR" && mv "$ACTIONLINT_DIR.tmp" "$ACTIONLINT_DIR"
  fi

  # 7. Symlinks. Only pulumi, minio and actionlint go on PATH: the language host and the launcher
  #    are found next to the real pulumi binary, the command provider in PULUMI_HOME.
  ln -sfn "$PULUMI_DIR/pulumi" "$BIN/pulumi"
  ln -sfn "$MINIO_DIR/minio" "$BIN/minio"
  ln -sfn "$ACTIONLINT_DIR/actionlint" "$BIN/actionlint"
  for stale in pulumi-language-nodejs pulumi-resource-pulumi-nodejs pulumi-resource-command; do
    rm -f "$BIN/$stale"
  done

  say "tools ready in $(( $(date +%s) - TOTAL_START )) s"
fi

say ""
say "Set this environment before running pulumi (or: . scripts/tools-env.sh):"
[ "$ENV_ONLY" = 1 ] || print_env | sed 's/^/  /'
