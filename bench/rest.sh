#!/usr/bin/env bash
# REST read benchmark (issue 3): Brigade's catalog, with its whole middleware stack, against
# a bare axum handler (`bare-rest`) that serves the same bytes from memory. Both run side by
# side in the same run; wrk drives them alternately (A B, then B A, ...) so that whatever
# else the machine is doing hits both alike. Everything stays on 127.0.0.1. The catalog
# takes calls only with an internal identity token, as the gateway sends: every request
# carries one (`brigade internal-token`), to bare-rest too (which ignores it), so both get
# the same requests.
#
#   bench/rest.sh
#
# Knobs (environment):
#   BENCH_DURATION=10s     wrk duration of each measured run
#   BENCH_WARMUP=2s        unmeasured wrk run per server and endpoint before round 1
#   BENCH_ROUNDS=3         rounds; the table shows the median
#   BENCH_CONNECTIONS=32   wrk connections (one wrk thread)
#   BENCH_REVIEWS_OF=500   @reviews spreads over the reviews of products 1 to this
#   BENCH_PIN=1            pin the servers to BENCH_SERVER_CPU and wrk to BENCH_CLIENT_CPU
#                          (taskset -c lists), so client and servers do not share a core;
#                          0 = let the scheduler place them
#   BENCH_SERVER_CPU=0
#   BENCH_CLIENT_CPU=1
#   BENCH_SKIP_BUILD=0     1 = measure the release binaries already in the target directory
#   BENCH_LOG_FILTER=      Brigade's log filter. Unset (the default): Brigade's own shipped
#                          default (`info,sqlx=warn`), what users run. Set it (e.g. `warn`)
#                          only to report a second figure beside the default one.
#
# Output: a table of requests/s (median of the rounds), server CPU time per request
# (utime+stime of the whole server process from /proc/<pid>/stat, all threads), the
# server's and wrk's CPU use during the run, the rest of the machine's load, and Brigade's
# ratio to the bare handler. Results and their reading: BENCHMARKS.md. Run one benchmark
# at a time: bench/grpc.sh pins to the same CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
REVIEWS_OF=${BENCH_REVIEWS_OF:-500}
PIN=${BENCH_PIN:-1}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
LOG_FILTER=${BENCH_LOG_FILTER:-}
# Shown in the report: the filter measured.
LOG_FILTER_SHOWN=${LOG_FILTER:-shipped default (info,sqlx=warn)}

say() { printf '%s\n' "$*" >&2; }
die() { say "rest.sh: $*"; exit 1; }
. bench/lib.sh

# --- tools -------------------------------------------------------------------------------
need_wrk
command -v curl >/dev/null 2>&1 || die "curl is needed (to check the two servers' bodies)"

if [ "$PIN" = 1 ]; then
  command -v taskset >/dev/null 2>&1 || die "taskset is needed for pinning (or BENCH_PIN=0)"
  PIN_SERVER=(taskset -c "$SERVER_CPU")
  PIN_CLIENT=(taskset -c "$CLIENT_CPU")
else
  PIN_SERVER=()
  PIN_CLIENT=()
fi

# --- build -------------------------------------------------------------------------------
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
  say "BENCH_SKIP_BUILD=1: using the release binaries already built"
else
  say "building release binaries (brigade, bare-rest)"
  cargo build --release -p brigade -p bench
fi
TARGET_DIR=$(target_dir)
BRIGADE="$TARGET_DIR/release/brigade"
BARE="$TARGET_DIR/release/bare-rest"
[ -x "$BRIGADE" ] && [ -x "$BARE" ] || die "release binaries not found under $TARGET_DIR"

# --- servers -----------------------------------------------------------------------------
WORK=$(mktemp -d -t brigade-bench.XXXXXX)
BRIGADE_PID=""
BARE_PID=""
cleanup() {
  for pid in $BARE_PID $BRIGADE_PID ${OPEN_PID:-}; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

brigade_env "$LOG_FILTER"

say "seeding a fresh data directory in $WORK/data"
"${BRIGADE_ENV[@]}" "$BRIGADE" seed --data-dir "$WORK/data" >"$WORK/seed.out" 2>"$WORK/seed.err" \
  || { cat "$WORK/seed.err" >&2; die "brigade seed failed"; }

# The catalog takes calls only with an internal identity token (as the gateway sends):
# every request to it carries one, and the same header goes to bare-rest, which ignores
# it, so both get the same requests.
TOKEN=$(internal_token "$BRIGADE" "$WORK/data")
identity_args "$TOKEN"

# `env` and `taskset` both exec, so $! is the server's own pid.
"${BRIGADE_ENV[@]}" "${PIN_SERVER[@]}" "$BRIGADE" serve catalog --data-dir "$WORK/data" --port 0 \
  >"$WORK/brigade.out" 2>"$WORK/brigade.err" &
BRIGADE_PID=$!
BRIGADE_URL=$(wait_for_url "$WORK/brigade.out" "$BRIGADE_PID" brigade)

# bare-rest copies its bodies at start-up and sends no token: it copies them from a
# catalog on the same data that takes calls without one (lib.sh's open_catalog), stopped
# once it is done. The bodies are compared with the measured catalog's below.
OPEN_PID=""
open_catalog "$BRIGADE" "$WORK/data" "$WORK/open"
"${PIN_SERVER[@]}" "$BARE" --from "$OPEN_URL" --port 0 --crawl --reviews-of "$REVIEWS_OF" \
  --write-paths "$WORK" >"$WORK/bare.out" 2>"$WORK/bare.err" &
BARE_PID=$!
BARE_URL=$(wait_for_url "$WORK/bare.out" "$BARE_PID" bare-rest)
kill -TERM "$OPEN_PID"
wait "$OPEN_PID" 2>/dev/null || true
OPEN_PID=""

# An endpoint is a path, or @NAME: requests spread round-robin over every path in
# $WORK/NAME.paths (bench/spread.lua), which bare-rest wrote while copying them: every page
# of products (`@products`, cursors all over the catalog) and the first page of reviews of
# $REVIEWS_OF products (`@reviews`). Spread reads keep a cache from standing in for the
# database.
ENDPOINTS=("/v1/products/1" "/v1/products?limit=50" "@products" "@reviews")

# The comparison is only fair if both serve the same bytes: every fixed path, and the
# first, middle and last path of each spread.
CHECK=()
for endpoint in "${ENDPOINTS[@]}"; do
  case $endpoint in
    @*)
      file="$WORK/${endpoint#@}.paths"
      [ -s "$file" ] || die "bare-rest wrote no $file"
      n=$(wc -l <"$file")
      say "$endpoint: $n paths"
      for line in 1 $(((n + 1) / 2)) "$n"; do CHECK+=("$(sed -n "${line}p" "$file")"); done
      ;;
    *) CHECK+=("$endpoint") ;;
  esac
done
for path in "${CHECK[@]}"; do
  curl -sf "${IDENTITY[@]}" -o "$WORK/a.body" -D "$WORK/a.head" "$BRIGADE_URL$path" || die "GET $path on brigade failed"
  curl -sf "${IDENTITY[@]}" -o "$WORK/b.body" -D "$WORK/b.head" "$BARE_URL$path" || die "GET $path on bare-rest failed"
  cmp -s "$WORK/a.body" "$WORK/b.body" || die "bodies of $path differ between the servers"
  ct_a=$(grep -i '^content-type:' "$WORK/a.head" | tr -d '\r')
  ct_b=$(grep -i '^content-type:' "$WORK/b.head" | tr -d '\r')
  [ "$ct_a" = "$ct_b" ] || die "content types of $path differ: '$ct_a' vs '$ct_b'"
  say "GET $path: identical $(wc -c <"$WORK/a.body")-byte bodies, $ct_a"
done

# --- measuring ---------------------------------------------------------------------------
TICKS=$(getconf CLK_TCK)
WALL=$(seconds_of "$DURATION")

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# Busy and steal jiffies of the whole machine (all CPUs), from /proc/stat.
machine_jiffies() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9; exit }' /proc/stat
}

# run SERVER PATH ROUND (ROUND 0 = warm-up, not recorded)
run() {
  local server=$1 path=$2 round=$3 url pid duration out before after m0 m1
  if [ "$server" = brigade ]; then url=$BRIGADE_URL pid=$BRIGADE_PID; else url=$BARE_URL pid=$BARE_PID; fi
  duration=$DURATION
  if [ "$round" = 0 ]; then duration=$WARMUP; fi
  m0=$(machine_jiffies)
  before=$(cpu_ticks "$pid")
  # bash's `time` gives wrk's own CPU time, so the rest of the machine's load can be told apart.
  local target=("$url$path")
  case $path in
    @*) target=(-s bench/spread.lua "$url" -- "$WORK/${path#@}.paths") ;;
  esac
  if ! { TIMEFORMAT='%3U %3S'; time "${PIN_CLIENT[@]}" wrk -t1 -c"$CONNECTIONS" -d"$duration" \
      --latency "${IDENTITY[@]}" "${target[@]}" >"$WORK/wrk.out"; } 2>"$WORK/wrk.time"; then
    cat "$WORK/wrk.out" "$WORK/wrk.time" >&2
    die "wrk failed against $server $path"
  fi
  after=$(cpu_ticks "$pid")
  m1=$(machine_jiffies)
  out=$(cat "$WORK/wrk.out")
  if grep -q -E 'Non-2xx' <<<"$out"; then
    say "$out"
    die "$server answered $path with errors"
  fi
  # Timeouts (wrk's 2 s) mean the run was disturbed, not that the answer was wrong: keep
  # the round, and say so under the table.
  local errors
  errors=$(sed -n 's/^ *Socket errors: //p' <<<"$out")
  [ "$round" = 0 ] && return 0
  local requests rps p50 p99 wrk_cpu other steal
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  wrk_cpu=$(awk '{ print $1 + $2; exit }' "$WORK/wrk.time")
  # CPU used by everything but the server and wrk during the run, in % of one core;
  # steal is time the hypervisor gave our vCPUs to someone else.
  read -r other steal < <(awk -v m0="$m0" -v m1="$m1" -v srv="$((after - before))" \
    -v wrk="$wrk_cpu" -v t="$TICKS" -v wall="$WALL" 'BEGIN {
      split(m0, a, " "); split(m1, b, " ")
      o = ((b[1] - a[1]) - srv) / t - wrk; if (o < 0) o = 0
      printf "%.0f %.0f\n", o / wall * 100, (b[2] - a[2]) / t / wall * 100 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "$server" "$round" "$rps" \
    "$requests" "$((after - before))" "$p50" "$p99" "$wrk_cpu" "$other" "$steal" "$errors" >>"$RESULTS"
  say "  round $round  $(printf '%-22s %-8s' "$path" "$server") $(printf '%10.0f' "$rps") req/s" \
    " p50 $p50  p99 $p99  wrk CPU ${wrk_cpu}s  other load ${other}%  steal ${steal}%" \
    "${errors:+  SOCKET ERRORS: $errors}"
}

# Another benchmark on this machine (bench/grpc.sh uses the same CPUs) disturbs both.
for tool in wrk h2load; do
  if pgrep -x "$tool" >/dev/null 2>&1; then
    say "WARNING: another $tool is running; run one benchmark at a time or the numbers mean little"
  fi
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "warming up ($WARMUP per server and endpoint)"
for path in "${ENDPOINTS[@]}"; do
  run brigade "$path" 0
  run bare "$path" 0
done

say "measuring: $ROUNDS rounds x ${#ENDPOINTS[@]} endpoints x 2 servers, wrk -t1 -c$CONNECTIONS -d$DURATION"
for round in $(seq 1 "$ROUNDS"); do
  for path in "${ENDPOINTS[@]}"; do
    # Alternate which server goes first, so drift in the machine's load hits both.
    if [ $((round % 2)) = 1 ]; then order=(brigade bare); else order=(bare brigade); fi
    for server in "${order[@]}"; do run "$server" "$path" "$round"; done
  done
done

# --- report ------------------------------------------------------------------------------
if [ "$PIN" = 1 ]; then
  pinning="servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU"
else
  pinning="unpinned"
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "REST reads: wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, medians; $pinning; brigade log filter: $LOG_FILTER_SHOWN"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; $(uname -sr); load average $LOAD_START at start, $LOAD_END at end"
echo
awk -F'\t' -v ticks="$TICKS" -v wall="$WALL" '
'"$MEDIAN_AWK"'
  {
    key = $1 SUBSEP $2
    if (!(key in rps)) { order[++n] = key }
    rps[key] = rps[key] " " $4
    us[key] = us[key] " " ($5 > 0 ? $6 / ticks * 1e6 / $5 : 0)
    util[key] = util[key] " " ($6 / ticks / wall * 100)
    wrk[key] = wrk[key] " " ($9 / wall * 100)
    each[key] = each[key] (each[key] == "" ? "" : " / ") sprintf("%.0f", $4)
    other[key] = other[key] (other[key] == "" ? "" : "/") $10
    if ($12 != "") errs[key] = errs[key] " round " $3 " (" $12 ")"
  }
  END {
    fmt = "| %-21s | %-7s | %7s | %-24s | %10s | %6s | %6s | %-12s | %12s |\n"
    printf fmt, "endpoint", "server", "req/s", "req/s per round", "CPU µs/req", "server", "wrk", "other load", "brigade/bare"
    printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", "-----------------------", "---------", "--------:", "--------------------------", "-----------:", "-------:", "-------:", "--------------", "-------------:"
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP)
      m[k[1], k[2]] = median(rps[order[i]])
      c[k[1], k[2]] = median(us[order[i]])
    }
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP)
      path = k[1]; server = k[2]
      ratio = ""
      if (server == "brigade" && m[path, "bare"] > 0) ratio = sprintf("%.2f×", m[path, "brigade"] / m[path, "bare"])
      printf fmt, path, server, sprintf("%.0f", m[path, server]), each[order[i]], \
        sprintf("%.1f", c[path, server]), sprintf("%.0f%%", median(util[order[i]])), \
        sprintf("%.0f%%", median(wrk[order[i]])), other[order[i]] "%", ratio
    }
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP)
      if (errs[order[i]] != "") printf "\nsocket errors (wrk): %s %s:%s", k[1], k[2], errs[order[i]]
    }
    print ""
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP)
      if (k[2] == "brigade" && c[k[1], "bare"] > 0)
        printf "%s: Brigade spends %.1f× the bare handler'"'"'s CPU per request (%.1f vs %.1f µs).\n", \
          k[1], c[k[1], "brigade"] / c[k[1], "bare"], c[k[1], "brigade"], c[k[1], "bare"]
    }
  }' "$RESULTS"
echo
cat <<'NOTE'
@products: every page of 50 products, cursor after cursor, round-robin; @reviews: the
first page of reviews of each of products 1..BENCH_REVIEWS_OF (500), round-robin.
req/s: median of the rounds. CPU µs/req: the server's utime+stime (all its threads) per
request, median of the rounds. server, wrk: CPU each used during the run, in % of one core
(a server below ~95% was not the bottleneck). other load: CPU the rest of the machine used
during each round's run, in % of one core; when it is high, the absolute numbers are not
comparable across runs, only the side-by-side ratios are.
NOTE
