#!/usr/bin/env bash
# scripts/ci/preview.sh <stack> [--comment <file>] — `pulumi preview --diff` of one stack, as a pull
# request sees it. Exits with pulumi's status. With --comment, also writes a Markdown PR comment:
# the errors and warnings the program printed (the downgrade guard's refusal, the promotion gate,
# the data-format crossing) first, then the whole preview. Its heading is the one pulumi/actions'
# comment-on-pr uses for the stack, so that comment and this one replace each other.
set -euo pipefail
# shellcheck source=scripts/ci/lib.sh source-path=SCRIPTDIR/../..
. "$(dirname "$0")/lib.sh"

stack=${1:-}
[ $# -ge 1 ] && shift
comment=""
while [ $# -gt 0 ]; do
  case "$1" in
    --comment) comment=${2:?--comment needs a file}; shift 2 ;;
    *) die "unknown argument $1 (usage: preview.sh <stack> [--comment <file>])" ;;
  esac
done
run_on_stack "$stack" preview --diff

if [ -n "$comment" ]; then
  project=$(sed -n 's/^name:[[:space:]]*//p' "$WORKDIR/Pulumi.yaml" | head -n1)
  if [ "$rc" = 0 ]; then status="succeeded"; else status="**failed** (exit $rc): nothing was changed"; fi
  # The program's own diagnostics: "error:" / "warning:" lines and what they continue on.
  findings=$(awk '
    /^[[:space:]]*(error|warning):/ { keep = 1 }
    /^(Resources|Outputs|Diagnostics|Previewing|Duration):?/ { keep = 0 }
    keep && NF { print }
    !NF { keep = 0 }
  ' "$log" | head -c 20000)
  # shellcheck disable=SC2016 # the backquotes are Markdown
  {
    printf '#### :tropical_drink: `preview` on %s/%s\n\n' "$project" "$stack"
    printf '`pulumi preview` for stack **%s** %s.\n\n' "$stack" "$status"
    if [ -n "$findings" ]; then
      printf 'What the program said:\n\n```\n%s\n```\n\n' "$findings"
    fi
    printf '<details>\n<summary>Pulumi report</summary>\n\n<pre>\n'
    # GitHub limits a comment to 65,535 characters: keep the end (the diagnostics and the summary).
    tail -c 40000 "$log" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'
    printf '</pre>\n</details>\n'
  } >"$comment"
fi
exit "$rc"
