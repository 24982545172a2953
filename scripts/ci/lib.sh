#!/usr/bin/env bash
# scripts/ci/lib.sh — shared by the CI scripts (sourced, not run).
#
# Environment (the workflow sets it from the CI secret store and repository variables):
#   PULUMI_BACKEND_URL        the state backend, e.g. s3://acme-pulumi-state?region=eu-west-1 (required)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
#                             the state bucket's own credentials (not the backup bucket's)
#   PULUMI_CONFIG_PASSPHRASE  for stacks with the passphrase secrets provider
#   PDB_SSH_PRIVATE_KEY       optional: the deploy key; set as the stack's progressdb:sshPrivateKey
#                             in this checkout only (on stdin, never on a command line)
#   PDB_CI_WORKDIR            the project directory (default: the repository root)
# Nothing here prints a secret; no script turns on `set -x`.

CI_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORKDIR=${PDB_CI_WORKDIR:-$CI_ROOT}
PROG=$(basename "$0")

die() { echo "$PROG: error: $*" >&2; exit 2; }

# check_stack_name <name>: the names changed-stacks.sh can produce, nothing that could be a flag or a path.
check_stack_name() {
  [[ "${1:-}" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die "not a stack name: '${1:-}'"
  [ -f "$WORKDIR/Pulumi.$1.yaml" ] || die "no stack file $WORKDIR/Pulumi.$1.yaml"
}

# require_backend: the state backend must be named; prints where it is (an s3:// URL carries no credentials).
require_backend() {
  [ -n "${PULUMI_BACKEND_URL:-}" ] ||
    die "PULUMI_BACKEND_URL is not set: the workflow sets it from the repository variable PULUMI_BACKEND_URL (README: Running it as a team)"
  case "$PULUMI_BACKEND_URL" in
    *://*@*) die "PULUMI_BACKEND_URL must not carry credentials: give the state bucket's keys as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" ;;
  esac
  echo "$PROG: state backend ${PULUMI_BACKEND_URL}" >&2
}

# pulumi_ci <args…>: pulumi in the project, non-interactive, no colours.
pulumi_ci() {
  pulumi "$@" --non-interactive --color never --cwd "$WORKDIR"
}

# ssh_key_from_env <stack>: PDB_SSH_PRIVATE_KEY (if set) becomes the stack's progressdb:sshPrivateKey,
# encrypted into this checkout's stack file by the stack's secrets provider; nothing is printed.
ssh_key_from_env() {
  [ -n "${PDB_SSH_PRIVATE_KEY:-}" ] || return 0
  printf '%s\n' "$PDB_SSH_PRIVATE_KEY" | pulumi_ci config set --secret progressdb:sshPrivateKey --stack "$1" >/dev/null ||
    die "could not set progressdb:sshPrivateKey on stack $1 from PDB_SSH_PRIVATE_KEY"
  echo "$PROG: progressdb:sshPrivateKey of stack $1 set from the CI secret store" >&2
}

# run_on_stack <stack> <pulumi args…>: the checks every step makes, then pulumi_ci <args…> on the
# stack, shown as it runs and kept in $log (removed on exit); its exit status in $rc.
run_on_stack() {
  local stack=$1
  shift
  check_stack_name "$stack"
  require_backend
  ssh_key_from_env "$stack"
  log=$(mktemp)
  trap 'rm -f "$log"' EXIT
  set +e
  pulumi_ci "$@" --stack "$stack" 2>&1 | tee "$log"
  # shellcheck disable=SC2034 # read by the sourcing script
  rc=${PIPESTATUS[0]}
  set -e
}
