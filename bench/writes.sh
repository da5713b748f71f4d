#!/usr/bin/env bash
# Idempotent creates (issue 12, item 5): POST /v1/products with a fresh Idempotency-Key per
# request (bench/create.lua), BENCH_CONNECTIONS connections, against Brigade's catalog at
# its shipped defaults on SQLite, and optionally against an earlier revision built from a
# git worktree, side by side in the same run (alternating rounds).
#
#   bench/writes.sh                        # this checkout only
#   BENCH_BASELINE=070de3f bench/writes.sh # and that revision beside it
#
# Knobs: BENCH_DURATION=10s, BENCH_ROUNDS=3, BENCH_CONNECTIONS=16, BENCH_SKIP_BUILD=0,
# BENCH_BASELINE= (a git revision; its build lives in target/bench-baseline/<rev>, kept
# between runs).
#
# Output: creates/s and p50/p99 latency per round and their medians. Every round starts on
# a fresh data directory (a growing table would favour whichever ran first).
#
# The catalog takes calls only with an internal identity token, as the gateway sends:
# every request carries one made for that round's data directory (`brigade
# internal-token`). A baseline built before the token has no such command and needs
# none: it gets no token header.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
BASELINE=${BENCH_BASELINE:-}

say() { printf '%s\n' "$*" >&2; }
die() { say "writes.sh: $*"; exit 1; }
. bench/lib.sh

command -v wrk >/dev/null 2>&1 || { say "installing wrk"; apt-get update && apt-get install -y wrk; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  say "building brigade (release)"
  cargo build --release -p brigade
fi
TARGET_DIR=$(target_dir)
declare -A BIN=([current]="$TARGET_DIR/release/brigade")
SERVERS=(current)
if [ -n "$BASELINE" ]; then
  rev=$(git rev-parse --short "$BASELINE") || die "no revision $BASELINE"
  tree="$TARGET_DIR/bench-baseline/$rev"
  if [ ! -x "$tree/target/release/brigade" ]; then
    say "building brigade at $rev in a worktree ($tree); the first time takes a while"
    rm -rf "$tree/src"
    mkdir -p "$tree/target"
    # Start from a copy of this checkout's release build: the dependencies' artifacts
    # are reused (their fingerprints do not depend on the workspace's path), so only the
    # workspace's own crates compile: ~2 min here instead of ~13.
    if [ -d "$TARGET_DIR/release" ] && [ ! -d "$tree/target/release" ]; then
      cp -a "$TARGET_DIR/release" "$tree/target/"
    fi
    git worktree add --force --detach "$tree/src" "$rev" >/dev/null
    (cd "$tree/src" && CARGO_TARGET_DIR="$tree/target" cargo build --release -p brigade)
    git worktree remove --force "$tree/src"
  fi
  BIN[$rev]="$tree/target/release/brigade"
  SERVERS+=("$rev")
fi

WORK=$(mktemp -d -t brigade-writes.XXXXXX)
PID=""
stop() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
  PID=""
}
trap 'stop; rm -rf "$WORK"' EXIT

brigade_env ""

# start SERVER: its catalog on a fresh data directory, at the shipped defaults; sets PID,
# URL and IDENTITY (the arguments that send its token; none for a build without one), not
# in a subshell, so that `stop` sees PID.
start() {
  local dir="$WORK/$1-data" token
  rm -rf "$dir"
  "${BRIGADE_ENV[@]}" "${BIN[$1]}" serve catalog --data-dir "$dir" --port 0 \
    >"$WORK/server.out" 2>"$WORK/server.err" &
  PID=$!
  URL=$(wait_for_url "$WORK/server.out" "$PID" "$1")
  token=$(internal_token "${BIN[$1]}" "$dir")
  identity_args "$token"
}

: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
  order=("${SERVERS[@]}")
  if [ $((round % 2)) = 0 ]; then order=($(printf '%s\n' "${SERVERS[@]}" | tac)); fi
  for server in "${order[@]}"; do
    start "$server"
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${IDENTITY[@]}" -s bench/create.lua "$URL" -- "r$round-$server" \
      >"$WORK/wrk.out" 2>&1 || die "wrk failed: $(cat "$WORK/wrk.out")"
    stop
    if grep -q 'Non-2xx' "$WORK/wrk.out"; then cat "$WORK/wrk.out" >&2; die "$server answered with errors"; fi
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.out")
    p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$WORK/wrk.out")")
    p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$WORK/wrk.out")")
    printf '%s\t%s\t%s\t%s\t%s\n' "$server" "$round" "$rps" "$p50" "$p99" >>"$WORK/results"
    say "  round $round  $(printf '%-8s' "$server") $(printf '%8.0f' "$rps") creates/s  p50 ${p50} ms  p99 ${p99} ms"
  done
done

echo
echo "Idempotent creates: wrk -t1 -c$CONNECTIONS -d$DURATION, POST /v1/products with a fresh Idempotency-Key each, SQLite, shipped defaults; $ROUNDS rounds, medians"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); current = $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+changes')"
echo
awk -F'\t' '
'"$MEDIAN_AWK"'
  { if (!($1 in rps)) order[++n] = $1; rps[$1] = rps[$1] " " $3; p50[$1] = p50[$1] " " $4; p99[$1] = p99[$1] " " $5 }
  END {
    printf "| %-9s | %9s | %-26s | %8s | %8s |\n", "server", "creates/s", "per round", "p50 ms", "p99 ms"
    printf "|%s|%s|%s|%s|%s|\n", "-----------", "----------:", "----------------------------", "---------:", "---------:"
    for (i = 1; i <= n; i++) { s = order[i]
      printf "| %-9s | %9.0f | %-26s | %8.2f | %8.2f |\n", s, median(rps[s]), rps[s], median(p50[s]), median(p99[s]) }
    if (n > 1) printf "\ncurrent / %s: %.2fx creates/s\n", order[2], median(rps[order[1]]) / median(rps[order[2]])
  }' "$WORK/results"
