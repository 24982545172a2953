#!/usr/bin/env bash
# scripts/ci/pr-comment.sh <pr number> <markdown file> — put the file on the pull request as the
# comment whose first line is the file's first line (the "#### … `preview` on <project>/<stack>"
# heading pulumi/actions' comment-on-pr uses), editing that comment when it exists, so each stack
# keeps one current preview comment. Uses the gh CLI (on GitHub's runners) with GH_TOKEN and
# GITHUB_REPOSITORY from the job's environment.
set -euo pipefail
PROG=$(basename "$0")
die() { echo "$PROG: error: $*" >&2; exit 2; }
[ $# -eq 2 ] || die "usage: pr-comment.sh <pr number> <markdown file>"
pr=$1
file=$2
[[ "$pr" =~ ^[0-9]+$ ]] || die "not a pull request number: '$pr'"
[ -s "$file" ] || die "no comment to post: $file is missing or empty"
[ -n "${GITHUB_REPOSITORY:-}" ] || die "GITHUB_REPOSITORY is not set (owner/name)"
heading=$(head -n1 "$file")

# The newest comment on the PR that starts with the same heading (a JSON string compare in jq).
existing=$(gh api --paginate "repos/$GITHUB_REPOSITORY/issues/$pr/comments" \
  --jq ".[] | select(.body | startswith($(printf '%s' "$heading" | jq -Rs .))) | .id" | tail -n1)
if [ -n "$existing" ]; then
  gh api --method PATCH "repos/$GITHUB_REPOSITORY/issues/comments/$existing" -F "body=@$file" >/dev/null
  echo "$PROG: updated comment $existing on #$pr"
else
  gh api --method POST "repos/$GITHUB_REPOSITORY/issues/$pr/comments" -F "body=@$file" >/dev/null
  echo "$PROG: commented on #$pr"
fi
