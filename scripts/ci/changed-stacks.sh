#!/usr/bin/env bash
# scripts/ci/changed-stacks.sh — which stacks a change touches, in the order they are deployed.
#
#   scripts/ci/changed-stacks.sh [--all-on-program-change] [--format lines|json|github] <base> <head>
#   scripts/ci/changed-stacks.sh --stacks "<name> …" [--format …]   (named stacks, e.g. a manual run)
#
# A stack is picked when its file Pulumi.<stack>.yaml (at the repository root) was added,
# changed or renamed between <base> and <head> (git diff <base>...<head>, i.e. since the
# merge base: what a pull request changes). A deleted stack file picks nothing.
# With --all-on-program-change, a change to the program itself (index.ts, components/,
# Pulumi.yaml, package.json, package-lock.json, tsconfig.json, tsconfig.program.json) picks every stack that has a
# file at <head> (a preview of all of them; the merge workflow does not pass it).
#
# With --stacks, the named stacks are taken instead of a diff (each must have its Pulumi.<stack>.yaml
# here), in the same order.
#
# Order: the staging stacks first (name staging or staging-*), then the others by name, and
# the production stacks last (name production, prod or production-*/prod-*). Stacks named in
# $PDB_CI_IGNORE_STACKS (space-separated; default "local", the demo's stack on this machine)
# are never picked.
#
# Output (--format):
#   lines   (default) one stack per line
#   json    {"stacks":[…],"staging":[…],"others":[…],"production":[…],"any":true|false}
#   github  the same keys as GitHub Actions step outputs (key=value lines with JSON arrays),
#           for ">> $GITHUB_OUTPUT"
set -euo pipefail

all_on_program=0
format=lines
named=""
named_set=0
while [ $# -gt 0 ]; do
  case "$1" in
    --all-on-program-change) all_on_program=1; shift ;;
    --format) format=${2:?--format needs lines, json or github}; shift 2 ;;
    --format=*) format=${1#--format=}; shift ;;
    --stacks) named=${2?--stacks needs the stack names}; named_set=1; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) echo "changed-stacks.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
case "$format" in lines|json|github) ;; *) echo "changed-stacks.sh: unknown --format $format" >&2; exit 2 ;; esac
if [ "$named_set" = 0 ]; then
  [ $# -eq 2 ] || { echo "usage: changed-stacks.sh [--all-on-program-change] [--format lines|json|github] <base> <head>" >&2; exit 2; }
  base=$1
  head=$2
  for rev in "$base" "$head"; do
    git rev-parse --verify --quiet "$rev^{commit}" >/dev/null ||
      { echo "changed-stacks.sh: $rev is not a commit here (fetch it: actions/checkout with fetch-depth: 0)" >&2; exit 2; }
  done
else
  [ $# -eq 0 ] || { echo "changed-stacks.sh: --stacks takes no <base> <head>" >&2; exit 2; }
fi

ignore=" ${PDB_CI_IGNORE_STACKS-local} "
valid_name() { [[ "$1" =~ ^[A-Za-z0-9_.-]+$ ]]; }

picked=()
add() { # add <stack>: once, unless ignored
  local s=$1 p
  valid_name "$s" || { echo "changed-stacks.sh: skipping a stack file with an unusable name: Pulumi.$s.yaml" >&2; return 0; }
  case "$ignore" in *" $s "*) return 0 ;; esac
  for p in "${picked[@]+"${picked[@]}"}"; do [ "$p" = "$s" ] && return 0; done
  picked+=("$s")
}

program_changed=0
if [ "$named_set" = 1 ]; then
  read -r -a names <<<"$named"
  for s in "${names[@]+"${names[@]}"}"; do
    if ! valid_name "$s" || [ ! -f "Pulumi.$s.yaml" ]; then
      echo "changed-stacks.sh: no stack file Pulumi.$s.yaml here" >&2; exit 2
    fi
    case "$ignore" in *" $s "*) echo "changed-stacks.sh: stack $s is not deployed by CI (PDB_CI_IGNORE_STACKS)" >&2; exit 2 ;; esac
    add "$s"
  done
else
  # -z: NUL-separated, so names are never quoted or split.
  while IFS= read -r -d '' path; do
    case "$path" in
      Pulumi.yaml|index.ts|components/*|package.json|package-lock.json|tsconfig.json|tsconfig.program.json) program_changed=1 ;;
      Pulumi.*.yaml) name=${path#Pulumi.}; add "${name%.yaml}" ;;
    esac
  done < <(git diff -z --name-only --diff-filter=ACMR --no-renames "$base...$head" --)
fi

if [ "$all_on_program" = 1 ] && [ "$program_changed" = 1 ]; then
  while IFS= read -r -d '' path; do
    case "$path" in Pulumi.yaml) ;; Pulumi.*.yaml) name=${path#Pulumi.}; add "${name%.yaml}" ;; esac
  done < <(git ls-tree -z --name-only "$head" --)
fi

staging=() others=() production=()
for s in "${picked[@]+"${picked[@]}"}"; do
  case "$s" in
    staging|staging-*) staging+=("$s") ;;
    production|prod|production-*|prod-*) production+=("$s") ;;
    *) others+=("$s") ;;
  esac
done
sorted() { [ $# -eq 0 ] || printf '%s\n' "$@" | LC_ALL=C sort; }
mapfile -t staging < <(sorted "${staging[@]+"${staging[@]}"}")
mapfile -t others < <(sorted "${others[@]+"${others[@]}"}")
mapfile -t production < <(sorted "${production[@]+"${production[@]}"}")
ordered=("${staging[@]+"${staging[@]}"}" "${others[@]+"${others[@]}"}" "${production[@]+"${production[@]}"}")

json_array() { # the arguments as a JSON array (names are [A-Za-z0-9_.-], no escaping needed)
  local out="" s
  for s in "$@"; do out+="${out:+,}\"$s\""; done
  printf '[%s]' "$out"
}
any=false
[ "${#ordered[@]}" -gt 0 ] && any=true

case "$format" in
  lines) [ "${#ordered[@]}" -eq 0 ] || printf '%s\n' "${ordered[@]}" ;;
  json)
    printf '{"stacks":%s,"staging":%s,"others":%s,"production":%s,"any":%s}\n' \
      "$(json_array "${ordered[@]+"${ordered[@]}"}")" "$(json_array "${staging[@]+"${staging[@]}"}")" \
      "$(json_array "${others[@]+"${others[@]}"}")" "$(json_array "${production[@]+"${production[@]}"}")" "$any" ;;
  github)
    printf 'stacks=%s\nstaging=%s\nothers=%s\nproduction=%s\nany=%s\n' \
      "$(json_array "${ordered[@]+"${ordered[@]}"}")" "$(json_array "${staging[@]+"${staging[@]}"}")" \
      "$(json_array "${others[@]+"${others[@]}"}")" "$(json_array "${production[@]+"${production[@]}"}")" "$any" ;;
esac
