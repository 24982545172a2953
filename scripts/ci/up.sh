#!/usr/bin/env bash
# scripts/ci/up.sh <stack> — `pulumi up` of one stack after a merge. Exits with pulumi's status.
# On success the stack's version and health go to the job summary ($GITHUB_STEP_SUMMARY, if set).
# When the stack is locked by another update, says so and what to do (README: When an update failed
# or was interrupted); it never removes a lock itself.
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh source-path=SCRIPTDIR/../..
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: up.sh <stack>"
stack=$1
run_on_stack "$stack" up --yes --skip-preview --diff

if [ "$rc" != 0 ]; then
  if grep -q 'the stack is currently locked' "$log"; then
    echo "::error title=stack $stack is locked::Another pulumi update holds the lock on stack $stack. If it is still running, wait and re-run this job; if it was killed, follow README 'When an update failed or was interrupted' (pulumi cancel, pending operations, refresh --clear-pending-creates)." >&2
  else
    echo "::error title=pulumi up failed on $stack::pulumi up on stack $stack exited $rc; the service keeps running a known version (see the log above)." >&2
  fi
  exit "$rc"
fi

outputs=$(pulumi_ci stack output --json --stack "$stack")
# shellcheck disable=SC2016 # JavaScript, not shell
summary=$(printf '%s' "$outputs" | node -e '
  let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
    const o = JSON.parse(s);
    const stack = process.argv[1];
    console.log(`### pulumi up: ${stack}`);
    console.log("");
    console.log("| output | value |");
    console.log("|---|---|");
    for (const k of ["version", "previousVersion", "healthStatus", "versionProof", "dataContinuity", "backupUri"]) {
      if (o[k] !== undefined && o[k] !== "") console.log(`| ${k} | \`${String(o[k]).replace(/[|`]/g, "")}\` |`);
    }
    // A fleet: one row per listed instance.
    if (o.healthStatus === undefined) {
      for (const [name, i] of Object.entries(o.instances ?? {})) {
        console.log(`| instance ${name} | \`${[i.version, i.healthStatus, i.dataContinuity].join(", ").replace(/[|`]/g, "")}\` |`);
      }
    }
  });' "$stack")
echo "$summary"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then printf '%s\n' "$summary" >>"$GITHUB_STEP_SUMMARY"; fi
