#!/usr/bin/env bash
# The edge's hop: what the gateway adds to a request (API key check, rate and concurrency
# limits, forwarding to the owning service with a signed identity token), in CPU per
# request, side by side in one run:
#
#   GET /v1/products/1   directly to catalog (with an internal identity token, what the
#                        gateway sends it: `brigade internal-token`), and through the
#                        gateway twice: anonymously, and with an API key (`Authorization:
#                        Bearer`, so the key check runs too);
#   POST /v1/products    a new product each, a fresh Idempotency-Key each (bench/create.lua),
#                        directly to catalog (with the token), and through the gateway
#                        with the key (scope catalog:write).
#
# One `brigade up --no-seed` (release build, a fresh data directory, free ports) serves
# both paths, and gateway and catalog run in that ONE process — so, at the shipped
# default (gateway.forward_in_process), the gateway hands each request to catalog's
# router in process rather than over a loopback socket (BENCH_IN_PROCESS=0 measures the
# socket, as between two processes). The process's CPU per request
# (utime+stime of every thread, /proc/<pid>/stat, before and after each wrk run) is
# catalog's cost when called directly, and gateway's + catalog's through the gateway. The
# hop = through − direct, and the ratio hop ÷ direct. Goal: ≤ 1.0 (the proxy at most
# doubles the work); for scale, Istio's published sidecar figure is 0.35 vCPU per 1,000
# req/s, about 350 CPU-µs per request. Product 1 is created (through the gateway) before
# anything is measured; the paths must answer GET /v1/products/1 with the same status and
# body (and Content-Type and ETag), and a POST with 201, before anything is timed. wrk
# drives the variants of an endpoint alternately (A B C, then C B A, ...) so that whatever
# else the machine does hits all alike; any non-2xx answer fails the run (a 429 would mean
# a limit was met: see below). Everything stays on 127.0.0.1.
#
# Brigade runs at its shipped defaults (SQLite, JSON logs, the shipped log filter) but
# for the gateway's limits, which one wrk client asking tens of thousands of times a
# second from one address with one key would meet at once (100/s per key, 20/s per
# address, 25 requests in flight per key): per key and anonymous rates and bursts at
# 1,000,000,000, 100,000 requests in flight per key. The limits are still checked on
# every request; only their numbers change. The key is made (`brigade keys create`, every
# scope) before `brigade up` starts, so the gateway's first load has it.
#
#   bench/edge.sh
#
# Knobs (environment):
#   BENCH_DURATION=10s     wrk duration of each measured run
#   BENCH_WARMUP=2s        unmeasured wrk run per variant before round 1
#   BENCH_ROUNDS=3         rounds; the table shows the median
#   BENCH_CONNECTIONS=32   wrk connections (one wrk thread)
#   BENCH_PIN=1            pin Brigade to BENCH_SERVER_CPU and wrk to BENCH_CLIENT_CPU
#                          (taskset -c lists), so client and server do not share a core;
#                          0 = let the scheduler place them
#   BENCH_SERVER_CPU=0
#   BENCH_CLIENT_CPU=1
#   BENCH_SKIP_BUILD=0     1 = measure the release binary already in the target directory
#   BENCH_IN_PROCESS=1     0 = gateway.forward_in_process = false: every forward over a
#                          loopback socket, as when catalog runs in another process
#   BENCH_CALLGRIND=0      1 = instead of wrk, run Brigade under valgrind's callgrind and
#                          count the user-space instructions per GET (BENCH_REQUESTS=1000
#                          after BENCH_WARM=50, one keep-alive connection each): the
#                          direct read, and through the gateway anonymously and with the
#                          key; hop = through - direct. Counts repeat run to run where
#                          the CPU-µs ratios scatter (the kernel's share is not counted).
#   BENCH_LOG_FILTER=      Brigade's log filter. Unset (the default): Brigade's own shipped
#                          default (`info,sqlx=warn`), what users run. Set it (e.g. `warn`)
#                          only to report a second figure beside the default one.
#
# Output: a table of requests/s, p50/p99 latency (medians of the rounds), the process's
# CPU time per request, its and wrk's CPU use during the run, the rest of the machine's
# load, and for each path through the gateway the hop's CPU per request and its ratio to
# the direct call's; then whether the goal is met. Results and their reading:
# BENCHMARKS.md. Run one benchmark at a time: the others pin to the same CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
PIN=${BENCH_PIN:-1}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
LOG_FILTER=${BENCH_LOG_FILTER:-}
# Shown in the report: the filter measured.
LOG_FILTER_SHOWN=${LOG_FILTER:-shipped default (info,sqlx=warn)}

say() { printf '%s\n' "$*" >&2; }
die() { say "edge.sh: $*"; exit 1; }
. bench/lib.sh

# --- tools -------------------------------------------------------------------------------
need_wrk
command -v curl >/dev/null 2>&1 || die "curl is needed (to check the two paths' answers)"

CALLGRIND=${BENCH_CALLGRIND:-0}
if [ "$CALLGRIND" = 1 ]; then
  command -v valgrind >/dev/null 2>&1 || { say "installing valgrind"; apt-get update && apt-get install -y valgrind; }
  PIN=0
fi
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
  say "BENCH_SKIP_BUILD=1: using the release binary already built"
else
  say "building brigade (release)"
  cargo build --release -p brigade
fi
BRIGADE="$(target_dir)/release/brigade"
[ -x "$BRIGADE" ] || die "no release binary at $BRIGADE"
has_internal_token "$BRIGADE" || die "$BRIGADE has no internal-token command: it predates the edge"

# --- server ------------------------------------------------------------------------------
WORK=$(mktemp -d -t brigade-edge.XXXXXX)
DATA="$WORK/data"
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

brigade_env "$LOG_FILTER"

# The only settings changed from the shipped defaults (see the header).
IN_PROCESS=${BENCH_IN_PROCESS:-1}
if [ "$IN_PROCESS" = 1 ]; then FORWARD=in-process; else FORWARD="over a loopback socket"; fi
LIMITS_ENV=(BRIGADE_GATEWAY__FORWARD_IN_PROCESS=$([ "$IN_PROCESS" = 1 ] && echo true || echo false)
  BRIGADE_GATEWAY__LIMITS__PER_KEY__PER_SECOND=1000000000
  BRIGADE_GATEWAY__LIMITS__PER_KEY__BURST=1000000000
  BRIGADE_GATEWAY__LIMITS__ANONYMOUS__PER_SECOND=1000000000
  BRIGADE_GATEWAY__LIMITS__ANONYMOUS__BURST=1000000000
  BRIGADE_GATEWAY__LIMITS__CONCURRENT_PER_KEY=100000)

# The API key (every scope) and the internal token, both in the new data directory before
# Brigade starts: the gateway's first load of its keys has the key, and Brigade signs
# and checks tokens with the key the token was made with. `keys create` prints a
# description, then the key alone on its last line.
"${BRIGADE_ENV[@]}" "$BRIGADE" keys create --name bench --data-dir "$DATA" \
  >"$WORK/key.out" 2>"$WORK/key.err" || { cat "$WORK/key.err" >&2; die "brigade keys create failed"; }
KEY=$(tail -n 1 "$WORK/key.out")
[ -n "$KEY" ] || die "brigade keys create printed no key"
TOKEN=$(internal_token "$BRIGADE" "$DATA")
AUTH=(-H "Authorization: Bearer $KEY")
identity_args "$TOKEN"

say "starting brigade up --no-seed in $DATA"
UNDER=()
if [ "$CALLGRIND" = 1 ]; then
  # Under callgrind from the start (valgrind cannot attach); counted only between the
  # zeroing and the dump of each measurement.
  UNDER=(valgrind --tool=callgrind "--callgrind-out-file=$WORK/cg.out.%p")
fi
# `env` and `taskset` both exec, so $! is brigade's own pid (checked).
"${BRIGADE_ENV[@]}" "${LIMITS_ENV[@]}" \
  BRIGADE_SERVICES__GATEWAY__PORT=0 BRIGADE_SERVICES__CATALOG__PORT=0 \
  BRIGADE_SERVICES__ACCOUNTS__PORT=0 BRIGADE_SERVICES__ORDERS__PORT=0 \
  BRIGADE_SERVICES__BILLING__PORT=0 BRIGADE_SERVICES__PAYMENTS_SANDBOX__PORT=0 \
  "${PIN_SERVER[@]}" ${UNDER[@]+"${UNDER[@]}"} "$BRIGADE" up --no-seed --data-dir "$DATA" >"$WORK/up.out" 2>"$WORK/up.err" &
PID=$!
for _ in $(seq 1 $([ "$CALLGRIND" = 1 ] && echo 6000 || echo 600)); do
  grep -q '^Press Ctrl-C' "$WORK/up.out" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.1
done
grep -q '^Press Ctrl-C' "$WORK/up.out" || { tail -n 20 "$WORK/up.err" >&2; die "brigade up did not start"; }
[ "$CALLGRIND" = 1 ] || [ "$(cat "/proc/$PID/comm")" = brigade ] || die "pid $PID is $(cat "/proc/$PID/comm"), not brigade"
GATEWAY=$(awk '$1 == "gateway" { print $2 }' "$WORK/up.out")
CATALOG=$(awk '$1 == "catalog" { print $2 }' "$WORK/up.out")
[ -n "$GATEWAY" ] && [ -n "$CATALOG" ] || die "brigade up printed no gateway/catalog URL"
say "gateway $GATEWAY, catalog $CATALOG (pid $PID)"

# --- checks ------------------------------------------------------------------------------
BODY='{"name":"Bench","price":1.5,"stock":1}'

# post URL IDEMPOTENCY-KEY OUT [CURL ARGS...]: POST $BODY to URL/v1/products; the body in
# OUT, the headers in OUT.head; prints the status.
post() {
  local url=$1 key=$2 out=$3
  shift 3
  curl -s -o "$out" -D "$out.head" -w '%{http_code}' -X POST "$url/v1/products" "$@" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $key" --data-binary "$BODY"
}
# get URL OUT [CURL ARGS...]: GET URL/v1/products/1; as post.
get() {
  local url=$1 out=$2
  shift 2
  curl -s -o "$out" -D "$out.head" -w '%{http_code}' "$url/v1/products/1" "$@"
}
header_of() { grep -i "^$1:" "$2" | head -n1 | tr -d '\r' | sed 's/^[^:]*: *//'; }

# Product 1, through the gateway with the key.
status=$(post "$GATEWAY" edge-product-1 "$WORK/create.body" "${AUTH[@]}")
[ "$status" = 201 ] || { cat "$WORK/create.body" >&2; die "creating product 1 through the gateway answered $status, not 201"; }
grep -q '^{"id":1[,}]' "$WORK/create.body" || die "the first product is not product 1: $(head -c 200 "$WORK/create.body")"
say "product 1 created through the gateway (201)"

# The same answer to GET /v1/products/1 on every path: status, body, Content-Type, ETag.
status=$(get "$CATALOG" "$WORK/direct.body" "${IDENTITY[@]}")
[ "$status" = 200 ] || { cat "$WORK/direct.body" >&2; die "GET /v1/products/1 on catalog with the token answered $status"; }
for via in anonymous key; do
  args=()
  if [ "$via" = key ]; then args=("${AUTH[@]}"); fi
  status=$(get "$GATEWAY" "$WORK/$via.body" ${args[@]+"${args[@]}"})
  [ "$status" = 200 ] || { cat "$WORK/$via.body" >&2; die "GET /v1/products/1 through the gateway ($via) answered $status"; }
  cmp -s "$WORK/direct.body" "$WORK/$via.body" \
    || die "GET /v1/products/1: the gateway's body ($via) differs from catalog's"
  for h in content-type etag; do
    [ "$(header_of "$h" "$WORK/direct.body.head")" = "$(header_of "$h" "$WORK/$via.body.head")" ] \
      || die "GET /v1/products/1: $h differs: '$(header_of "$h" "$WORK/direct.body.head")' directly, '$(header_of "$h" "$WORK/$via.body.head")' through the gateway ($via)"
  done
done
# Header names only one side sends (per-request ones, or the gateway's own), for the record.
names() { sed -n 's/^\([A-Za-z0-9-]*\):.*/\1/p' "$1" | tr 'A-Z' 'a-z' | sort -u; }
ONLY_GATEWAY=$(comm -13 <(names "$WORK/direct.body.head") <(names "$WORK/key.body.head") | paste -sd' ' -)
ONLY_DIRECT=$(comm -23 <(names "$WORK/direct.body.head") <(names "$WORK/key.body.head") | paste -sd' ' -)
say "GET /v1/products/1: 200 and identical $(wc -c <"$WORK/direct.body")-byte bodies directly and through the gateway (anonymous, key), $(header_of content-type "$WORK/direct.body.head")"
say "  headers only through the gateway: ${ONLY_GATEWAY:-none}; only directly: ${ONLY_DIRECT:-none}"

# A POST answers 201 on both paths.
status=$(post "$CATALOG" edge-check-direct "$WORK/post-direct.body" "${IDENTITY[@]}")
[ "$status" = 201 ] || { cat "$WORK/post-direct.body" >&2; die "POST /v1/products on catalog with the token answered $status, not 201"; }
status=$(post "$GATEWAY" edge-check-gateway "$WORK/post-key.body" "${AUTH[@]}")
[ "$status" = 201 ] || { cat "$WORK/post-key.body" >&2; die "POST /v1/products through the gateway with the key answered $status, not 201"; }
say "POST /v1/products: 201 directly (token) and through the gateway (key)"

# --- measuring ---------------------------------------------------------------------------
TICKS=$(getconf CLK_TCK)
WALL=$(seconds_of "$DURATION")

# --- instructions (BENCH_CALLGRIND=1) -----------------------------------------------------
if [ "$CALLGRIND" = 1 ]; then
  REQUESTS=${BENCH_REQUESTS:-1000}
  WARM=${BENCH_WARM:-50}
  # dumped: the total of the newest dump (callgrind_control -d writes the counts since
  # the last zeroing next to the process's own file), removed once read.
  dumped() {
    local dump
    callgrind_control -d "$PID" >"$WORK/dump.out" 2>&1
    dump=$(ls -t "$WORK"/cg.out.* 2>/dev/null | head -n1)
    [ -n "$dump" ] || die "callgrind wrote no dump: $(cat "$WORK/dump.out")"
    awk '/^(summary|totals):/ { print $2; exit }' "$dump"
    rm -f "$dump"
  }
  # The process's own background (pollers, timers, every service's tasks) runs whatever
  # is asked, and under valgrind a request takes ~50× its wall time, so the background's
  # share per request is large: counted alone over IDLE_SECONDS, it is taken off each
  # measurement in proportion to the measurement's wall time.
  IDLE_SECONDS=10
  callgrind_control -z "$PID" >/dev/null 2>&1
  sleep "$IDLE_SECONDS"
  IDLE_PER_SECOND=$(( $(dumped) / IDLE_SECONDS ))
  say "background under callgrind: $IDLE_PER_SECOND instructions per second"
  # count BASE [CURL ARGS...]: instructions per GET /v1/products/1 at BASE, less the
  # background's share of the run's wall time.
  count() {
    local base=$1 total started ended list=()
    shift
    for _ in $(seq 1 "$WARM"); do list+=(-o /dev/null "$base/v1/products/1"); done
    curl -sf "$@" "${list[@]}" || die "a warm-up GET at $base failed"
    list=()
    for _ in $(seq 1 "$REQUESTS"); do list+=(-o /dev/null "$base/v1/products/1"); done
    callgrind_control -z "$PID" >/dev/null 2>&1
    started=$(date +%s%N)
    curl -sf "$@" "${list[@]}" || die "a GET at $base failed"
    ended=$(date +%s%N)
    total=$(dumped)
    awk -v t="$total" -v i="$IDLE_PER_SECOND" -v ns="$((ended - started))" -v n="$REQUESTS" \
      'BEGIN { printf "%d\n", (t - i * ns / 1e9) / n }'
  }
  direct=$(count "$CATALOG" "${IDENTITY[@]}")
  anonymous=$(count "$GATEWAY")
  keyed=$(count "$GATEWAY" "${AUTH[@]}")
  printf '\nInstructions per GET /v1/products/1 (callgrind, user space, every thread of the one process, less the background of %s instructions/s); %s requests after %s warm-up; log filter %s\n' \
    "$IDLE_PER_SECOND" "$REQUESTS" "$WARM" "$LOG_FILTER_SHOWN"
  printf '%s; %s; valgrind %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)" "$(valgrind --version)"
  printf '| path | instructions | hop | hop ÷ direct |\n|---|--:|--:|--:|\n'
  printf '| direct (token) | %s | – | – |\n' "$direct"
  for row in "gateway, anonymous:$anonymous" "gateway, API key:$keyed"; do
    n=${row##*:}
    printf '| %s | %s | %s | %s× |\n' "${row%:*}" "$n" "$((n - direct))" \
      "$(awk -v h="$((n - direct))" -v d="$direct" 'BEGIN { printf "%.2f", h / d }')"
  done
  exit 0
fi

# The idle process's own CPU (its workers, pollers, timers), per second: in every row.
sleep 2
idle_before=$(cpu_ticks "$PID")
sleep 5
idle_after=$(cpu_ticks "$PID")
IDLE=$(awk -v d="$((idle_after - idle_before))" -v t="$TICKS" 'BEGIN { printf "%.0f\n", d / t * 1e6 / 5 }')
say "brigade idle: $IDLE CPU-µs per second"

# The variants: their endpoint, path (shown in the table) and whether they go direct.
VARIANTS_GET=(get-direct get-anonymous get-key)
VARIANTS_POST=(post-direct post-key)
declare -A ENDPOINT=([get-direct]="GET /v1/products/1" [get-anonymous]="GET /v1/products/1"
  [get-key]="GET /v1/products/1" [post-direct]="POST /v1/products" [post-key]="POST /v1/products")
declare -A VIA=([get-direct]="direct (token)" [get-anonymous]="gateway, anonymous"
  [get-key]="gateway, API key" [post-direct]="direct (token)" [post-key]="gateway, API key")

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# Busy and steal jiffies of the whole machine (all CPUs), from /proc/stat.
machine_jiffies() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9; exit }' /proc/stat
}

# run VARIANT ROUND (ROUND 0 = warm-up, not recorded)
run() {
  local variant=$1 round=$2 duration=$DURATION target out before after m0 m1
  [ "$round" = 0 ] && duration=$WARMUP
  case $variant in
    get-direct) target=("${IDENTITY[@]}" "$CATALOG/v1/products/1") ;;
    get-anonymous) target=("$GATEWAY/v1/products/1") ;;
    get-key) target=("${AUTH[@]}" "$GATEWAY/v1/products/1") ;;
    # A fresh Idempotency-Key per request: the run's own prefix, the thread and a counter.
    post-direct) target=("${IDENTITY[@]}" -s bench/create.lua "$CATALOG" -- "edge-r$round-direct") ;;
    post-key) target=("${AUTH[@]}" -s bench/create.lua "$GATEWAY" -- "edge-r$round-gateway") ;;
  esac
  m0=$(machine_jiffies)
  before=$(cpu_ticks "$PID")
  # bash's `time` gives wrk's own CPU time, so the rest of the machine's load can be told apart.
  if ! { TIMEFORMAT='%3U %3S'; time "${PIN_CLIENT[@]}" wrk -t1 -c"$CONNECTIONS" -d"$duration" \
      --latency "${target[@]}" >"$WORK/wrk.out"; } 2>"$WORK/wrk.time"; then
    cat "$WORK/wrk.out" "$WORK/wrk.time" >&2
    die "wrk failed against $variant"
  fi
  after=$(cpu_ticks "$PID")
  m1=$(machine_jiffies)
  out=$(cat "$WORK/wrk.out")
  # Every answer must be a 2xx (wrk counts the others); one that is not shows why.
  local non2xx
  non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' <<<"$out")
  if [ -n "$non2xx" ] && [ "$non2xx" != 0 ]; then
    say "$out"
    local probe=""
    case $variant in
      get-*) probe=$(curl -s -o /dev/null -w '%{http_code}' "${target[@]}" || true) ;;
    esac
    die "${ENDPOINT[$variant]}, ${VIA[$variant]} (round $round): $non2xx non-2xx answers${probe:+; the same GET now answers $probe} (a 429 means a gateway limit was met)"
  fi
  # Timeouts (wrk's 2 s) mean the run was disturbed, not that the answer was wrong: keep
  # the round, and say so under the table.
  local errors
  errors=$(sed -n 's/^ *Socket errors: //p' <<<"$out")
  [ "$round" = 0 ] && return 0
  local requests rps p50 p99 wrk_cpu other steal
  requests=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  wrk_cpu=$(awk '{ print $1 + $2; exit }' "$WORK/wrk.time")
  # CPU used by everything but brigade and wrk during the run, in % of one core; steal is
  # time the hypervisor gave our vCPUs to someone else.
  read -r other steal < <(awk -v m0="$m0" -v m1="$m1" -v srv="$((after - before))" \
    -v wrk="$wrk_cpu" -v t="$TICKS" -v wall="$WALL" 'BEGIN {
      split(m0, a, " "); split(m1, b, " ")
      o = ((b[1] - a[1]) - srv) / t - wrk; if (o < 0) o = 0
      printf "%.0f %.0f\n", o / wall * 100, (b[2] - a[2]) / t / wall * 100 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$round" "$rps" "$requests" \
    "$((after - before))" "$p50" "$p99" "$wrk_cpu" "$other" "$steal" "${non2xx:-0}" "$errors" >>"$RESULTS"
  say "  round $round  $(printf '%-19s %-19s' "${ENDPOINT[$variant]}" "${VIA[$variant]}") $(printf '%8.0f' "$rps") req/s" \
    " p50 $p50 ms  p99 $p99 ms  CPU $(awk -v d="$((after - before))" -v t="$TICKS" -v r="$requests" 'BEGIN { printf "%.1f", d / t * 1e6 / r }') µs/req" \
    " wrk CPU ${wrk_cpu}s  other load ${other}%  steal ${steal}%${errors:+  SOCKET ERRORS: $errors}"
}

# Another benchmark on this machine (they pin to the same CPUs) disturbs every variant.
for tool in wrk h2load; do
  if pgrep -x "$tool" >/dev/null 2>&1; then
    say "WARNING: another $tool is running; run one benchmark at a time or the numbers mean little"
  fi
done
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "warming up ($WARMUP per variant)"
for variant in "${VARIANTS_GET[@]}" "${VARIANTS_POST[@]}"; do run "$variant" 0; done

say "measuring: $ROUNDS rounds x 5 variants, wrk -t1 -c$CONNECTIONS -d$DURATION"
for round in $(seq 1 "$ROUNDS"); do
  for group in GET POST; do
    if [ "$group" = GET ]; then order=("${VARIANTS_GET[@]}"); else order=("${VARIANTS_POST[@]}"); fi
    # Alternate the order (forwards, then backwards), so drift in the machine's load hits
    # every variant alike.
    if [ $((round % 2)) = 0 ]; then
      reversed=()
      for ((i = ${#order[@]} - 1; i >= 0; i--)); do reversed+=("${order[$i]}"); done
      order=("${reversed[@]}")
    fi
    for variant in "${order[@]}"; do run "$variant" "$round"; done
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Anything Brigade logged at WARN or ERROR over the run is worth a look (not fatal).
LOG_PROBLEMS=$(awk '/"level":"(WARN|ERROR)"/ { n++ } END { print n + 0 }' "$WORK/up.err")

# --- report ------------------------------------------------------------------------------
if [ "$PIN" = 1 ]; then
  pinning="brigade on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU"
else
  pinning="unpinned"
fi
# What was measured: the commit, and whether the built tree differed from it.
REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git -C "$ROOT" diff --quiet HEAD -- crates Cargo.toml Cargo.lock proto ':!crates/bench' 2>/dev/null \
    || [ -n "$(git -C "$ROOT" ls-files --others --exclude-standard -- crates proto ':!crates/bench' 2>/dev/null)" ]; then
  REVISION="$REVISION + uncommitted changes"
fi
echo
echo "The edge's hop: wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, medians; $pinning; one brigade up --no-seed (gateway and catalog in one process; forwarded $FORWARD), shipped defaults but the gateway's limits raised; brigade log filter: $LOG_FILTER_SHOWN; Brigade at $REVISION"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; $(uname -sr); load average $LOAD_START at start, $LOAD_END at end"
echo
awk -F'\t' -v ticks="$TICKS" -v wall="$WALL" -v idle="$IDLE" \
  -v e_gd="${ENDPOINT[get-direct]}" -v e_pd="${ENDPOINT[post-direct]}" \
  -v v_gd="${VIA[get-direct]}" -v v_ga="${VIA[get-anonymous]}" -v v_gk="${VIA[get-key]}" \
  -v v_pd="${VIA[post-direct]}" -v v_pk="${VIA[post-key]}" '
'"$MEDIAN_AWK"'
  {
    v = $1; r = $2
    if (!(v in rps)) order[++n] = v
    rps[v] = rps[v] " " $3
    each[v] = each[v] (each[v] == "" ? "" : " / ") sprintf("%.0f", $3)
    cpu[v, r] = $5 / ticks * 1e6 / $4
    us[v] = us[v] " " cpu[v, r]
    util[v] = util[v] " " ($5 / ticks / wall * 100)
    wrk[v] = wrk[v] " " ($8 / wall * 100)
    p50[v] = p50[v] " " $6; p99[v] = p99[v] " " $7
    other[v] = other[v] (other[v] == "" ? "" : "/") $9
    rounds[r] = 1
    if ($12 != "") errs = errs sprintf("\nsocket errors (wrk): %s, round %s (%s)", v, r, $12)
  }
  # The hop of variant v over direct d: the median of the differences of the rounds (each
  # round measures both back to back), and of their ratios.
  function hop(v, d,   r, h, q) {
    h = ""; q = ""
    for (r in rounds) if (((v, r) in cpu) && ((d, r) in cpu)) {
      h = h " " (cpu[v, r] - cpu[d, r]); q = q " " ((cpu[v, r] - cpu[d, r]) / cpu[d, r])
    }
    HOP = median(h); RATIO = median(q)
  }
  function row(endpoint, via, v, d) {
    hs = "–"; rs = "–"
    if (d != "") { hop(v, d); hs = sprintf("%.1f", HOP); rs = sprintf("%.2f×", RATIO) }
    printf "| %-18s | %-18s | %7.0f | %-24s | %6.2f | %6.2f | %10.1f | %7s | %5s | %-10s | %8s | %12s |\n", \
      endpoint, via, median(rps[v]), each[v], median(p50[v]), median(p99[v]), median(us[v]), \
      sprintf("%.0f%%", median(util[v])), sprintf("%.0f%%", median(wrk[v])), other[v] "%", hs, rs
  }
  function verdict(endpoint, via, v, d) {
    hop(v, d)
    printf "%s through the gateway (%s): the hop costs %.1f CPU-µs per request, %.2f× the direct call'"'"'s %.1f µs (%.2f× Istio'"'"'s ~350): goal (≤ 1.0×) %s.\n", \
      endpoint, substr(via, 10), HOP, RATIO, median(us[d]), HOP / 350, (RATIO <= 1.0 ? "MET" : "NOT MET")
  }
  END {
    printf "| %-18s | %-18s | %7s | %-24s | %6s | %6s | %10s | %7s | %5s | %-10s | %8s | %12s |\n", \
      "endpoint", "path", "req/s", "req/s per round", "p50 ms", "p99 ms", "CPU µs/req", "brigade", "wrk", "other load", "hop µs", "hop ÷ direct"
    printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", "--------------------", "--------------------", "--------:", \
      "--------------------------", "-------:", "-------:", "-----------:", "--------:", "------:", "------------", "---------:", "-------------:"
    row(e_gd, v_gd, "get-direct", "")
    row(e_gd, v_ga, "get-anonymous", "get-direct")
    row(e_gd, v_gk, "get-key", "get-direct")
    row(e_pd, v_pd, "post-direct", "")
    row(e_pd, v_pk, "post-key", "post-direct")
    if (errs != "") print errs
    print ""
    print "Goal: the hop (gateway: auth + limits + forward) costs ≤ 1× the direct call'"'"'s own CPU."
    verdict(e_gd, v_ga, "get-anonymous", "get-direct")
    verdict(e_gd, v_gk, "get-key", "get-direct")
    verdict(e_pd, v_pk, "post-key", "post-direct")
  }' "$RESULTS"
echo
echo "brigade idle (nothing asked of it): $IDLE CPU-µs per second, in every row's CPU; WARN/ERROR log lines over the run: $LOG_PROBLEMS"
cat <<'NOTE'
req/s, p50, p99: medians of the rounds (latency as wrk sees it, one connection each of
BENCH_CONNECTIONS). CPU µs/req: brigade's utime+stime (every thread of the one process
that runs gateway and catalog) per request, median of the rounds: the direct rows are
catalog's cost, the gateway rows gateway's + catalog's. hop µs: a gateway row's CPU per
request less its round's direct one, median of the rounds; hop ÷ direct: that over the
direct row's, median of the rounds (goal ≤ 1.0; Istio's published sidecar costs 0.35
vCPU per 1,000 req/s, ~350 µs). brigade, wrk: CPU each used during the run, in % of one
core (brigade below ~95% was not the bottleneck). other load: CPU the rest of the
machine used during each round's run, in % of one core; when it is high, the absolute
numbers are not comparable across runs, only the side-by-side ratios are. A POST makes
a new product each (a fresh Idempotency-Key each); the direct ones carry the internal
identity token the gateway would send, the gateway's an API key of every scope.
NOTE
