#!/usr/bin/env bash
# The GraphQL contract in CI: `graphql-inspector diff` of graphql/schema.graphql (the
# gateway's SDL, which a test keeps equal to the code's) against the same file on the
# previous commit, so that removing a type or field, making a nullable result non-null's
# opposite, adding a required argument, or changing a type fails; additions pass.
# graphql-inspector comes from npm, pinned, installed under target/graphql-inspector.
#
# Usage: contract-tests/graphql/run.sh [against-rev]   (or GRAPHQL_AGAINST=<rev>)
# Without one it checks against HEAD~1 and, when the latest change to the SDL is older
# than HEAD, against that change's parent too; with the SDL changed and uncommitted, the
# working tree against HEAD as well.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$(dirname "$here")")"
version="7.0.0"
graphql_version="16.11.0"
prefix="${GRAPHQL_INSPECTOR_PREFIX:-$root/target/graphql-inspector}"
inspector="$prefix/node_modules/.bin/graphql-inspector"
sdl="graphql/schema.graphql"

if [ ! -x "$inspector" ] || [ "$(cat "$prefix/.version" 2>/dev/null || true)" != "$version" ]; then
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@graphql-inspector/cli@$version" "graphql@$graphql_version"
  echo "$version" >"$prefix/.version"
fi
cd "$root"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

diff_against() {
  local rev="$1" label="$2" commit
  commit="$(git rev-parse --verify --quiet "$rev^{commit}")"
  git show "$commit:$sdl" >"$work/old.graphql"
  echo "== graphql-inspector diff $sdl --against $label ($commit)"
  if ! "$inspector" diff "$work/old.graphql" "$3"; then
    echo "graphql-inspector: $sdl breaks the contract of $label (above). Add types, fields" \
      "and optional arguments; never remove or retype what clients use." >&2
    exit 1
  fi
}

check_against() {
  local rev="$1" label="$2"
  if ! git rev-parse --verify --quiet "$rev^{commit}" >/dev/null; then
    if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
      echo "graphql-inspector: $label is not in this shallow clone; fetch more history" >&2
      exit 1
    fi
    echo "graphql-inspector: skipped, $label does not exist"
  elif ! git cat-file -e "$rev:$sdl" 2>/dev/null; then
    echo "graphql-inspector: skipped, $label has no $sdl (the contract starts after it)"
  else
    diff_against "$rev" "$label" "$sdl"
  fi
}

if [ $# -gt 0 ] || [ -n "${GRAPHQL_AGAINST:-}" ]; then
  check_against "${1:-$GRAPHQL_AGAINST}" "${1:-$GRAPHQL_AGAINST}"
else
  check_against HEAD~1 HEAD~1
  last="$(git log -1 --format=%H -- "$sdl")"
  if [ -n "$last" ] && [ "$last" != "$(git rev-parse HEAD)" ]; then
    check_against "$last~1" "$(git rev-parse --short "$last")~1 (before the latest change to $sdl)"
  fi
fi

if [ -n "$(git status --porcelain -- "$sdl")" ] && git cat-file -e "HEAD:$sdl" 2>/dev/null; then
  echo "(uncommitted changes to $sdl)"
  diff_against HEAD HEAD "$sdl"
fi
