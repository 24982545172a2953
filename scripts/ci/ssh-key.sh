#!/usr/bin/env bash
# scripts/ci/ssh-key.sh <stack> — set the stack's progressdb:sshPrivateKey from PDB_SSH_PRIVATE_KEY
# (the CI secret store), in this checkout only, before pulumi/actions runs the preview. A no-op when
# PDB_SSH_PRIVATE_KEY is empty (the key is then the one encrypted in Pulumi.<stack>.yaml).
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh source-path=SCRIPTDIR/../..
. "$(dirname "$0")/lib.sh"
[ $# -eq 1 ] || die "usage: ssh-key.sh <stack>"
check_stack_name "$1"
require_backend
ssh_key_from_env "$1"
