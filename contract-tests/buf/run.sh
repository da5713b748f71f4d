#!/usr/bin/env bash
# The gRPC contract in CI: `buf lint` over proto/ (rules and exceptions in proto/buf.yaml),
# then `buf breaking` of proto/ against proto/ as it stands on the previous commit, so that
# changing a field's number or type, removing a field or RPC, or renaming a package fails.
# buf comes from npm (@bufbuild/buf ships the binary), pinned, installed under target/buf.
#
# Usage: contract-tests/buf/run.sh [against-rev]   (or BUF_AGAINST=<rev>)
# Without one it checks against HEAD~1 and, when the latest change to proto/ is older than
# HEAD, against that change's parent too. With uncommitted changes under proto/, the
# working tree is also checked against HEAD (what the next commit will be compared with).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$(dirname "$here")")"
version="1.75.0"
prefix="${BUF_PREFIX:-$root/target/buf}"
buf="$prefix/node_modules/.bin/buf"

if [ "$("$buf" --version 2>/dev/null || true)" != "$version" ]; then
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    "@bufbuild/buf@$version"
fi
export BUF_CACHE_DIR="$prefix/cache"
cd "$root"

echo "== buf lint proto ($("$buf" --version))"
(cd proto && "$buf" lint)
echo "buf lint: no findings"

# buf reads the older tree from the local repository's objects (a git input:
# `.git#ref=<commit>,subdir=proto`; uncommitted files play no part). buf would take
# `ref=HEAD~1` too; the full hash makes the log name the exact commit and lets any git
# revision syntax be used here.
breaking() {
  local rev="$1" label="${2:-$1}" commit
  commit="$(git rev-parse --verify --quiet "$rev^{commit}")"
  echo "== buf breaking proto --against $label ($commit)"
  if ! "$buf" breaking proto --against ".git#ref=$commit,subdir=proto"; then
    echo "buf breaking: proto/ breaks the contract of $label (above). Add fields and RPCs;" \
      "never change or reuse a number, a type or a name that clients have." >&2
    exit 1
  fi
  echo "buf breaking: nothing breaks against $label"
}

# Checks against "$rev", unless that commit is missing (the first commit) or predates
# proto/: then there is nothing to break, and it skips, saying so.
check_against() {
  local rev="$1" label="$2"
  if ! git rev-parse --verify --quiet "$rev^{commit}" >/dev/null; then
    if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
      echo "buf breaking: $label is not in this shallow clone; fetch more history" >&2
      exit 1
    fi
    echo "buf breaking: skipped, $label does not exist (the first commit has nothing to break)"
  elif ! git cat-file -e "$rev:proto/buf.yaml" 2>/dev/null; then
    echo "buf breaking: skipped, $label has no proto/ (the contract starts after it)"
  else
    breaking "$rev" "$label"
  fi
}

if [ $# -gt 0 ] || [ -n "${BUF_AGAINST:-}" ]; then
  check_against "${1:-$BUF_AGAINST}" "${1:-$BUF_AGAINST}"
else
  check_against HEAD~1 HEAD~1
  # A submission may end with commits that do not touch proto/: then HEAD~1 has the same
  # proto/ as HEAD and proves nothing, so also check the latest commit that changed
  # proto/ against its parent (the same check when that commit is HEAD).
  last="$(git log -1 --format=%H -- proto)"
  if [ -n "$last" ] && [ "$last" != "$(git rev-parse HEAD)" ]; then
    check_against "$last~1" "$(git rev-parse --short "$last")~1 (before the latest change to proto/)"
  fi
fi

if [ -n "$(git status --porcelain -- proto)" ] && git cat-file -e HEAD:proto/buf.yaml 2>/dev/null; then
  echo "(uncommitted changes under proto/)"
  breaking HEAD
fi
