#!/usr/bin/env bash
# GraphQL (issue 16's benchmark): the tutorial's query for a page of 50 products,
#
#   { products(limit: 50) { name reviews { rating user { name } } } }
#
# POSTed to the gateway of `brigade up` at its shipped defaults — which answer a client's
# repeat of a query from the answers the gateway keeps (for the 5 s its Cache-Control
# allows; gateway.graphql.answer_cache_entries) — side by side in one run with
#   (0) the same query with no answer kept (answer_cache_entries = 0): every query runs,
#       three backend calls each — what a query costs to execute;
#   (a) the REST calls a client would make for the same page: GET /v1/products?limit=50,
#       GET /v1/products/{id}/reviews?limit=20 of each product, GET /v1/users/{id} of each
#       distinct reviewer (1 + 50 + 20 requests at the default data);
#   (b) the same query with DataLoader off (`gateway.graphql.batch_loads = false`: every
#       id its own backend call) and no answer kept, Brigade restarted on the same data
#       directory. One such
#       query asks accounts for 200 users at once, past the gateway's bulkhead (64 calls in
#       flight per downstream): at the shipped limits it answers with field errors (the
#       script shows how many), so (b) is measured with outbound.max_concurrency and
#       max_in_flight at 100,000;
#   (c) Apollo Server 5 (bench/apollo: npm @apollo/server, pinned in its package-lock.json)
#       resolving the same query from the same rows held in memory (dumped from Brigade's
#       REST APIs after seeding; its answer must equal Brigade's before anything is timed);
#   (d) the same Apollo Server with its own response cache (npm
#       @apollo/server-plugin-response-cache, in memory) and the cache hints Brigade's
#       schema has, each client its own session: a repeat answered from memory on both
#       sides, for the shipped row's fair peer.
# For each: requests/s, p50/p99 (wrk), and the server's CPU per request — utime+stime of
# the whole server process, every thread, from /proc/PID/stat, before and after each wrk
# run. `brigade up` runs gateway, catalog and accounts (and orders, billing, the payments
# sandbox, idle here) in ONE process, so its CPU is every Brigade process involved; the
# idle process's background CPU is measured too and printed under the table. And, from
# the gateway's /metrics, the backend calls per query: brigade_downstream_calls_total of
# service="gateway" over a run ÷ its requests, and the exact delta of one query at a
# time. wrk's non-2xx count must be 0; a GraphQL answer with errors is still a 200, so
# bench/graphql.lua counts the answers holding "errors": shown in the table, and past 10%
# of a measured run's answers the script fails.
#
# (a)'s requests go to two ports (catalog, accounts) and wrk drives one host, so the page
# is measured in its two parts, each its own wrk run cycling through that part's requests
# (bench/spread.lua): catalog's 51 (the list and the 50 review pages) and accounts' 20 (the
# users). A page costs catalog's CPU per request × 51 + accounts' × 20; pages/s is what
# the server sustains doing both parts' work, 1 / (51 / catalog req/s + 20 / accounts
# req/s). Their p50/p99 are per request; a real client waits at least three round trips
# (list → reviews → users) per page.
#
# Brigade runs at its shipped defaults (release build, SQLite files in a fresh data
# directory, log filter `info,sqlx=warn`, JSON logs), started with `--no-seed` so that the
# data is only the bench's own: BENCH_USERS users, BENCH_PRODUCTS products and
# BENCH_REVIEWS reviews per product by the users round-robin, created over REST. Changed
# from the defaults, only what the query needs to run at all: its requested cost is 2,152
# (50 products × up to 20 reviews each) against a shipped max_cost of 1,000, and one
# client (wrk, one IP) asks for hundreds a second against a bucket of 1,000 points
# refilled at 50/s — so max_cost = 10,000 and bucket_size = restore_rate = 1,000,000,000;
# and, for (b) only, the limits above. With BENCH_PIN=1 (the default) each server gets
# one core (Brigade's runtime then runs one worker thread, as Node runs one JS thread)
# and wrk the other.
#
#   bench/graphql.sh
#
# Knobs (environment):
#   BENCH_DURATION=10s     wrk duration of each measured run
#   BENCH_WARMUP=2s        unmeasured wrk run of each variant after each server start
#   BENCH_ROUNDS=3         rounds, each running every variant (order alternating); medians
#   BENCH_CONNECTIONS=16   wrk connections
#   BENCH_USERS=20 BENCH_PRODUCTS=50 BENCH_REVIEWS=4   the data (reviews per product)
#   BENCH_PIN=1            servers on BENCH_SERVER_CPU, wrk on BENCH_CLIENT_CPU (taskset
#   BENCH_SERVER_CPU=0     -c lists), so client and server do not share a core; 0 = let
#   BENCH_CLIENT_CPU=1     the scheduler place them (wrk then runs 2 threads)
#   BENCH_SKIP_BUILD=0     1 = measure the release binary already in the target directory
#
# Catalog and accounts take calls only with an internal identity token, as the gateway
# sends: (a)'s requests and the seeding over REST carry one (`brigade internal-token`).
#
# Needs wrk (installed with apt-get if missing), curl, python3, node and npm (`npm ci`
# into bench/apollo/node_modules, which is gitignored). Results: BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
USERS=${BENCH_USERS:-20}
PRODUCTS=${BENCH_PRODUCTS:-50}
REVIEWS=${BENCH_REVIEWS:-4}
PIN=${BENCH_PIN:-1}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
LIMIT=50
QUERY="{ products(limit: $LIMIT) { name reviews { rating user { name } } } }"

say() { printf '%s\n' "$*" >&2; }
die() { say "graphql.sh: $*"; exit 1; }
. bench/lib.sh

# --- tools -------------------------------------------------------------------------------
need_wrk
for tool in curl python3 node npm; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed"
done
if [ "$PIN" = 1 ]; then
  command -v taskset >/dev/null 2>&1 || die "taskset is needed for pinning (or BENCH_PIN=0)"
  PIN_SERVER=(taskset -c "$SERVER_CPU")
  PIN_CLIENT=(taskset -c "$CLIENT_CPU")
  WRK_THREADS=1
else
  PIN_SERVER=()
  PIN_CLIENT=()
  WRK_THREADS=2
fi

# Apollo Server's packages, exactly as locked (again only when the lock file changed).
if [ ! -f bench/apollo/node_modules/.package-lock.json ] \
  || [ bench/apollo/package-lock.json -nt bench/apollo/node_modules/.package-lock.json ]; then
  say "installing bench/apollo's packages (npm ci)"
  (cd bench/apollo && npm ci --no-audit --no-fund >&2)
fi

# --- build -------------------------------------------------------------------------------
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
  say "BENCH_SKIP_BUILD=1: using the release binary already built"
else
  say "building brigade (release)"
  cargo build --release -p brigade
fi
BIN="$(target_dir)/release/brigade"
[ -x "$BIN" ] || die "no release binary at $BIN"

# --- servers -----------------------------------------------------------------------------
WORK=$(mktemp -d -t brigade-graphql.XXXXXX)
PID=""
APOLLO_PID=""
APOLLO_CACHED_PID=""
stop() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
  PID=""
}
cleanup() {
  stop
  for node_pid in "$APOLLO_PID" "$APOLLO_CACHED_PID"; do
    if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
      kill -TERM "$node_pid"; wait "$node_pid" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
brigade_env ""

# The only settings changed from the shipped defaults (see the header).
GRAPHQL_ENV=(BRIGADE_GATEWAY__GRAPHQL__MAX_COST=10000
  BRIGADE_GATEWAY__GRAPHQL__BUCKET_SIZE=1000000000
  BRIGADE_GATEWAY__GRAPHQL__RESTORE_RATE=1000000000
  BRIGADE_GATEWAY__LIMITS__ANONYMOUS__PER_SECOND=1000000000
  BRIGADE_GATEWAY__LIMITS__ANONYMOUS__BURST=1000000000)
# (0), (b) and the one-query call counts: every query runs (no answer kept).
NOKEEP=(BRIGADE_GATEWAY__GRAPHQL__ANSWER_CACHE_ENTRIES=0)
# (b) only: room for every backend call of BENCH_CONNECTIONS unbatched queries at once.
NOBATCH_ENV=(BRIGADE_OUTBOUND__MAX_CONCURRENCY=100000 BRIGADE_MAX_IN_FLIGHT=100000 "${NOKEEP[@]}")

# start BATCH [VAR=VALUE...]: `brigade up` on $WORK/data (kept from start to start) with
# batch_loads = BATCH (true|false) and any further settings given; sets PID, GATEWAY, CATALOG, ACCOUNTS. `env` and `taskset` exec, so
# $! is brigade's own pid (checked).
start() {
  local batch=$1; shift
  "${BRIGADE_ENV[@]}" "${GRAPHQL_ENV[@]}" BRIGADE_GATEWAY__GRAPHQL__BATCH_LOADS="$batch" "$@" \
    BRIGADE_SERVICES__GATEWAY__PORT=0 BRIGADE_SERVICES__CATALOG__PORT=0 \
    BRIGADE_SERVICES__ACCOUNTS__PORT=0 BRIGADE_SERVICES__ORDERS__PORT=0 \
    BRIGADE_SERVICES__BILLING__PORT=0 BRIGADE_SERVICES__PAYMENTS_SANDBOX__PORT=0 \
    "${PIN_SERVER[@]}" "$BIN" up --no-seed --data-dir "$WORK/data" >"$WORK/up.out" 2>>"$WORK/up.err" &
  PID=$!
  for _ in $(seq 1 600); do
    grep -q '^Press Ctrl-C' "$WORK/up.out" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  grep -q '^Press Ctrl-C' "$WORK/up.out" || { tail -n 20 "$WORK/up.err" >&2; die "brigade up did not start"; }
  [ "$(cat "/proc/$PID/comm")" = brigade ] || die "pid $PID is $(cat "/proc/$PID/comm"), not brigade"
  GATEWAY=$(awk '$1 == "gateway" { print $2 }' "$WORK/up.out")
  CATALOG=$(awk '$1 == "catalog" { print $2 }' "$WORK/up.out")
  ACCOUNTS=$(awk '$1 == "accounts" { print $2 }' "$WORK/up.out")
  [ -n "$GATEWAY" ] && [ -n "$CATALOG" ] && [ -n "$ACCOUNTS" ] || die "brigade up printed no gateway/catalog/accounts URL"
}

printf '{"query": "%s"}' "$QUERY" >"$WORK/query.json"

# gql URL OUT: POSTs the query; the answer in OUT.
gql() {
  curl -sf -X POST "$1" -H 'Content-Type: application/json' --data-binary @"$WORK/query.json" -o "$2" \
    || die "POST of the query to $1 failed"
}

# Backend calls the gateway has made: brigade_downstream_calls_total of service="gateway",
# every downstream and outcome.
calls() {
  curl -sf "$GATEWAY/metrics" | awk '
    index($0, "brigade_downstream_calls_total{") == 1 && index($0, "service=\"gateway\"") > 0 { s += $NF }
    END { printf "%d\n", s }'
}

TICKS=$(getconf CLK_TCK)
# Busy jiffies of the whole machine (all CPUs), from /proc/stat.
machine_jiffies() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
}
WALL=$(seconds_of "$DURATION")

# --- data --------------------------------------------------------------------------------
say "seeding: $USERS users, $PRODUCTS products, $REVIEWS reviews each (brigade up --no-seed in $WORK/data)"
start true "${NOKEEP[@]}"
# The data directory, and so the signing key, is kept from start to start: one token.
TOKEN=$(internal_token "$BIN" "$WORK/data")
identity_args "$TOKEN"
BENCH_IDENTITY_TOKEN=$TOKEN python3 bench/graphql-data.py seed "$CATALOG" "$ACCOUNTS" "$USERS" "$PRODUCTS" "$REVIEWS"
BENCH_IDENTITY_TOKEN=$TOKEN python3 bench/graphql-data.py page "$CATALOG" "$ACCOUNTS" "$LIMIT" "$WORK" >"$WORK/page.out" \
  || die "reading the REST page failed"
read -r CATALOG_N ACCOUNTS_N <"$WORK/page.out"
say "a REST client's page: $CATALOG_N catalog requests + $ACCOUNTS_N accounts requests"

gql "$GATEWAY/graphql" "$WORK/brigade.json"
python3 bench/graphql-data.py check "$WORK/brigade.json" "$WORK/expected.json" "brigade" >&2

# One query at a time, its backend calls exactly (nothing else is asking the gateway):
# ONE_QUERIES of them in turn, as "calls×queries" ("3×20": all 20 made 3 calls).
ONE_QUERIES=20
one_query_calls() {
  local before after i
  for i in $(seq 1 "$ONE_QUERIES"); do
    before=$(calls)
    gql "$GATEWAY/graphql" "$WORK/one.json"
    after=$(calls)
    echo $((after - before))
  done | sort -n | uniq -c | awk '{ printf "%s%s×%s", (NR > 1 ? " " : ""), $2, $1 } END { print "" }'
}
ONE_ON=$(one_query_calls)
say "one query at a time, DataLoader on, backend calls×queries: $ONE_ON"

# The idle process's own CPU (its workers, pollers, timers), per second.
idle_us_per_s() {
  local before after
  sleep 2
  before=$(cpu_ticks "$PID")
  sleep 5
  after=$(cpu_ticks "$PID")
  awk -v d="$((after - before))" -v t="$TICKS" 'BEGIN { printf "%.0f\n", d / t * 1e6 / 5 }'
}
IDLE=$(idle_us_per_s)
say "brigade idle: $IDLE CPU-µs per second"
stop

# DataLoader off at the shipped outbound limits: one query alone already asks accounts for
# one user per review at once (200 at the default data), past the gateway's bulkhead of 64
# calls in flight per downstream — so say what that answers, then raise the limits for (b).
start false
curl -sf -X POST "$GATEWAY/graphql" -H 'Content-Type: application/json' --data-binary @"$WORK/query.json" \
  -o "$WORK/nobatch-shipped.json" || die "POST of the query failed"
NOBATCH_SHIPPED=$(python3 -c '
import json, sys, collections
r = json.load(open(sys.argv[1])); e = r.get("errors") or []
print("answered without errors" if not e else "%d field errors (%s)" % (len(e), "; ".join(
    "%d× %s" % (n, m) for m, n in collections.Counter(x["message"] for x in e).most_common())))' "$WORK/nobatch-shipped.json")
say "DataLoader off, shipped outbound limits, one query alone: $NOBATCH_SHIPPED"
stop
start false "${NOBATCH_ENV[@]}"
gql "$GATEWAY/graphql" "$WORK/nobatch.json"
python3 bench/graphql-data.py check "$WORK/nobatch.json" "$WORK/expected.json" "brigade, DataLoader off" >&2
ONE_OFF=$(one_query_calls)
say "one query at a time, DataLoader off, backend calls×queries: $ONE_OFF"
stop

"${PIN_SERVER[@]}" env NODE_ENV=production node bench/apollo/server.mjs "$WORK/data.json" \
  >"$WORK/apollo.out" 2>"$WORK/apollo.err" &
APOLLO_PID=$!
APOLLO=$(wait_for_url "$WORK/apollo.out" "$APOLLO_PID" "apollo server")
[ "$(cat "/proc/$APOLLO_PID/comm")" = node ] || die "pid $APOLLO_PID is not node"
say "apollo server $(node -p 'require("./bench/apollo/node_modules/@apollo/server/package.json").version') on node $(node --version) at $APOLLO"
gql "$APOLLO/" "$WORK/apollo.json"
python3 bench/graphql-data.py check "$WORK/apollo.json" "$WORK/expected.json" "apollo" >&2
python3 - "$WORK/brigade.json" "$WORK/apollo.json" <<'EOF' || die "Apollo's data differs from Brigade's"
import json, sys
a, b = (json.load(open(f))["data"] for f in sys.argv[1:])
sys.exit(a != b)
EOF
say "apollo's answer equals brigade's"
"${PIN_SERVER[@]}" env NODE_ENV=production RESPONSE_CACHE=1 node bench/apollo/server.mjs "$WORK/data.json" \
  >"$WORK/apollo-cached.out" 2>"$WORK/apollo-cached.err" &
APOLLO_CACHED_PID=$!
APOLLO_CACHED=$(wait_for_url "$WORK/apollo-cached.out" "$APOLLO_CACHED_PID" "apollo server (response cache)")
[ "$(cat "/proc/$APOLLO_CACHED_PID/comm")" = node ] || die "pid $APOLLO_CACHED_PID is not node"
for _ in 1 2; do gql "$APOLLO_CACHED/" "$WORK/apollo-cached.json"; done
python3 - "$WORK/brigade.json" "$WORK/apollo-cached.json" <<'EOF' || die "Apollo's cached data differs from Brigade's"
import json, sys
a, b = (json.load(open(f))["data"] for f in sys.argv[1:])
sys.exit(a != b)
EOF
curl -sf -D "$WORK/apollo-cached.head" -o /dev/null -X POST "$APOLLO_CACHED/" -H 'Content-Type: application/json' \
  --data-binary @"$WORK/query.json" || die "POST to the cached apollo failed"
grep -qi '^age:' "$WORK/apollo-cached.head" || die "apollo's response cache did not answer a repeat (no Age header)"
say "apollo with its response cache answers the same, a repeat from its cache ($(grep -i '^cache-control:' "$WORK/apollo-cached.head" | tr -d '\r'))"

# --- measuring ---------------------------------------------------------------------------
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# run VARIANT ROUND (ROUND 0 = warm-up, not recorded): one wrk run against the server
# that serves VARIANT; appends "variant round rps requests ticks p50 p99 calls other errors".
run() {
  local variant=$1 round=$2 pid=$PID duration=$DURATION target calls0="" calls1="" m0 m1 before after
  case $variant in
    graphql | graphql-run | graphql-nobatch) target=(-s bench/graphql.lua "$GATEWAY/graphql" -- "$WORK/query.json") ;;
    rest-catalog) target=("${IDENTITY[@]}" -s bench/spread.lua "$CATALOG" -- "$WORK/catalog.paths") ;;
    rest-accounts) target=("${IDENTITY[@]}" -s bench/spread.lua "$ACCOUNTS" -- "$WORK/accounts.paths") ;;
    apollo) target=(-s bench/graphql.lua "$APOLLO/" -- "$WORK/query.json"); pid=$APOLLO_PID ;;
    apollo-cached) target=(-s bench/graphql.lua "$APOLLO_CACHED/" -- "$WORK/query.json"); pid=$APOLLO_CACHED_PID ;;
  esac
  [ "$round" = 0 ] && duration=$WARMUP
  case $variant in graphql*) calls0=$(calls) ;; esac
  m0=$(machine_jiffies)
  before=$(cpu_ticks "$pid")
  if ! { TIMEFORMAT='%3U %3S'; time "${PIN_CLIENT[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" \
      -d"$duration" --latency "${target[@]}" >"$WORK/wrk.out"; } 2>"$WORK/wrk.time"; then
    cat "$WORK/wrk.out" "$WORK/wrk.time" >&2
    die "wrk failed against $variant"
  fi
  after=$(cpu_ticks "$pid")
  m1=$(machine_jiffies)
  case $variant in graphql*) calls1=$(calls) ;; esac
  if grep -q 'Non-2xx' "$WORK/wrk.out"; then cat "$WORK/wrk.out" >&2; die "$variant answered with errors (non-2xx)"; fi
  # A GraphQL answer with errors is still a 200: bench/graphql.lua counts them. Counted
  # and shown (the table's errors column); past 10% of a measured run's answers, the run
  # measured failures, not answers.
  local errors=0 requests
  requests=$(awk '/requests in/ { print $1 }' "$WORK/wrk.out")
  case $variant in graphql* | apollo*) errors=$(sed -n 's/^GraphQL answers with errors: //p' "$WORK/wrk.out"); errors=${errors:-0} ;; esac
  if [ "$errors" -gt 0 ]; then
    printf '%s round %s: %s of %s answers with errors\n' "$variant" "$round" "$errors" "$requests" >>"$WORK/error-runs"
    if [ "$round" != 0 ] && [ $((errors * 10)) -gt "$requests" ]; then die "$variant: $errors of $requests answers with errors"; fi
  fi
  [ "$round" = 0 ] && return 0
  local rps p50 p99 wrk_cpu other per_query=""
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$WORK/wrk.out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$WORK/wrk.out")")
  wrk_cpu=$(awk '{ print $1 + $2; exit }' "$WORK/wrk.time")
  # CPU the rest of the machine used during the run (not the server, not wrk), % of a core.
  other=$(awk -v d="$((m1 - m0))" -v srv="$((after - before))" -v w="$wrk_cpu" -v t="$TICKS" -v wall="$WALL" \
    'BEGIN { o = (d - srv) / t - w; if (o < 0) o = 0; printf "%.0f\n", o / wall * 100 }')
  [ -n "$calls0" ] && per_query=$(awk -v c="$((calls1 - calls0))" -v r="$requests" 'BEGIN { printf "%.2f\n", c / r }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$variant" "$round" "$rps" "$requests" "$((after - before))" \
    "$p50" "$p99" "$per_query" "$other" "$errors" >>"$RESULTS"
  say "  round $round  $(printf '%-16s' "$variant") $(printf '%8.0f' "$rps")/s  p50 $p50 ms  p99 $p99 ms" \
    " CPU $(awk -v d="$((after - before))" -v t="$TICKS" -v r="$requests" 'BEGIN { printf "%.0f", d / t * 1e6 / r }') µs/req" \
    "${per_query:+ calls/query $per_query}  other load ${other}%$([ "$errors" = 0 ] || echo "  $errors answers with errors")"
}

# batched ROUND: brigade with DataLoader on — the query and the REST page's two parts.
batched() {
  start true
  for v in graphql rest-catalog rest-accounts; do run "$v" 0; done
  if [ $(($1 % 2)) = 1 ]; then order=(graphql rest-catalog rest-accounts); else order=(rest-accounts rest-catalog graphql); fi
  for v in "${order[@]}"; do run "$v" "$1"; done
  stop
}
executed() {
  start true "${NOKEEP[@]}"
  run graphql-run 0
  run graphql-run "$1"
  stop
}
unbatched() {
  start false "${NOBATCH_ENV[@]}"
  run graphql-nobatch 0
  run graphql-nobatch "$1"
  stop
}

for tool in wrk h2load; do
  if pgrep -x "$tool" >/dev/null 2>&1; then
    say "WARNING: another $tool is running; run one benchmark at a time or the numbers mean little"
  fi
done
LOAD_START=$(uptime | sed 's/.*load average: //')
say "load average at start: $LOAD_START"
run apollo 0
run apollo-cached 0
say "measuring: $ROUNDS rounds, wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    batched "$round"; executed "$round"; unbatched "$round"; run apollo "$round"; run apollo-cached "$round"
  else
    run apollo-cached "$round"; run apollo "$round"; unbatched "$round"; executed "$round"; batched "$round"
  fi
done
LOAD_END=$(uptime | sed 's/.*load average: //')

# The logs: anything at WARN or ERROR is worth a look (counted by message, not fatal;
# the probe of DataLoader off at the shipped limits above logs its refusals).
LOG_PROBLEMS=$(python3 - "$WORK/up.err" <<'EOF'
import collections, json, sys
seen = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        entry = json.loads(line)
    except ValueError:
        continue
    if entry.get("level") in ("WARN", "ERROR"):
        fields = entry.get("fields") or {}
        field = lambda name: entry.get(name) or fields.get(name) or ""
        what = ", ".join(x for x in (field("kind"), field("detail")) if x)
        seen[(entry["level"], field("message"), what)] += 1
print("; ".join(f"{n}× {l} {m}" + (f" ({d})" if d else "") for (l, m, d), n in seen.most_common(8)) or "none")
EOF
)
say "brigade's WARN/ERROR log lines: $LOG_PROBLEMS"

# --- report ------------------------------------------------------------------------------
if [ "$PIN" = 1 ]; then pinning="servers on cpu $SERVER_CPU, wrk on cpu $CLIENT_CPU"; else pinning="unpinned"; fi
echo
echo "GraphQL: \`$QUERY\`; wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS rounds, medians; $pinning"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+changes'); load average $LOAD_START at start, $LOAD_END at end"
echo "data: $USERS users, $PRODUCTS products, $REVIEWS reviews each; brigade up --no-seed at shipped defaults (answers kept; (0) and (b): none) but max_cost 10000, bucket_size = restore_rate = 1e9; Apollo Server $(node -p 'require("./bench/apollo/node_modules/@apollo/server/package.json").version'), node $(node --version), NODE_ENV=production"
echo
awk -F'\t' -v ticks="$TICKS" -v wall="$WALL" -v nc="$CATALOG_N" -v na="$ACCOUNTS_N" '
'"$MEDIAN_AWK"'
  {
    v = $1
    rps[v] = rps[v] " " $3
    each[v] = each[v] (each[v] == "" ? "" : " ") sprintf("%.0f", $3)
    us[v] = us[v] " " ($5 / ticks * 1e6 / $4)
    util[v] = util[v] " " ($5 / ticks / wall * 100)
    p50[v] = p50[v] " " $6; p99[v] = p99[v] " " $7
    if ($8 != "") calls[v] = calls[v] " " $8
    other[v] = other[v] (other[v] == "" ? "" : "/") $9
    errs[v] += $10; reqs[v] += $4
  }
  function row(name, v, r, per, c, q, cpu,   ratio) {
    ratio = (cpu > 0 && name !~ /^  /) ? sprintf("%.1f×", apollo / cpu) : ""
    printf "| %-36s | %8.0f | %-17s | %7s | %7s | %10.0f | %6s | %-11s | %9s | %6s | %8s |\n", name, r, per, \
      (v == "" ? "–" : sprintf("%.2f", median(p50[v]))), (v == "" ? "–" : sprintf("%.2f", median(p99[v]))), \
      cpu, (v == "" ? "–" : sprintf("%.0f%%", median(util[v]))), (v == "" ? "–" : other[v] "%"), q, \
      (v == "" || v ~ /^rest/ ? "–" : sprintf("%.1f%%", errs[v] / reqs[v] * 100)), ratio
  }
  END {
    apollo = median(us["apollo"])
    printf "| %-36s | %8s | %-17s | %7s | %7s | %10s | %6s | %-11s | %9s | %6s | %8s |\n", "variant", "per s", "per round", "p50 ms", "p99 ms", "CPU µs", "server", "other load", "calls", "errors", "Apollo ÷"
    printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", "--------------------------------------", "---------:", "-------------------", "--------:", "--------:", "-----------:", "-------:", "-------------", "----------:", "-------:", "---------:"
    row("GraphQL, shipped (answers kept)", "graphql", median(rps["graphql"]), each["graphql"], "", sprintf("%.2f", median(calls["graphql"])), median(us["graphql"]))
    row("(0) GraphQL, every query run", "graphql-run", median(rps["graphql-run"]), each["graphql-run"], "", sprintf("%.2f", median(calls["graphql-run"])), median(us["graphql-run"]))
    pc = median(rps["rest-catalog"]); pa = median(rps["rest-accounts"])
    page = 1 / (nc / pc + na / pa)
    row(sprintf("(a) REST page (%d requests)", nc + na), "", page, "", "", nc + na " req", nc * median(us["rest-catalog"]) + na * median(us["rest-accounts"]))
    row(sprintf("  catalog part: %d requests (per req)", nc), "rest-catalog", pc, each["rest-catalog"], "", "", median(us["rest-catalog"]))
    row(sprintf("  accounts part: %d requests (per req)", na), "rest-accounts", pa, each["rest-accounts"], "", "", median(us["rest-accounts"]))
    row("(b) GraphQL, DataLoader off (query)", "graphql-nobatch", median(rps["graphql-nobatch"]), each["graphql-nobatch"], "", sprintf("%.2f", median(calls["graphql-nobatch"])), median(us["graphql-nobatch"]))
    row("(c) Apollo Server 5 (query)", "apollo", median(rps["apollo"]), each["apollo"], "", "", apollo)
    row("(d) Apollo Server 5 + response cache", "apollo-cached", median(rps["apollo-cached"]), each["apollo-cached"], "", "", median(us["apollo-cached"]))
    ours = median(us["graphql"]); ran = median(us["graphql-run"]); c = median(calls["graphql-run"])
    printf "\nGoal: ≥ 6× less CPU per request than Apollo Server, ≤ 3 backend calls per query.\n"
    printf "CPU per query, shipped: Apollo %.0f µs, Brigade %.0f µs: Apollo ÷ Brigade = %.2f× — %s\n", apollo, ours, apollo / ours, (apollo / ours >= 6 ? "MET" : "NOT MET")
    printf "CPU per query, every query run: Brigade %.0f µs: Apollo ÷ Brigade = %.2f× — %s\n", ran, apollo / ran, (apollo / ran >= 6 ? "MET" : "NOT MET")
    cached = median(us["apollo-cached"])
    printf "CPU per query, both answering a repeat from memory: Apollo + response cache %.0f µs, Brigade %.0f µs: %.2f×\n", cached, ours, cached / ours
    printf "backend calls per query run, under load: %.2f (calls ÷ completed requests: the queries in flight when wrk stops made calls too)\n", c
  }' "$RESULTS"
echo
# ONE_ON is "calls×queries ...": met when no query made more than 3.
echo "≤ 3 backend calls per query run, one at a time: $(echo "$ONE_ON" | tr ' ' '\n' \
  | awk -F'×' '$1 > 3 { over = 1 } END { print (over ? "NOT MET" : "MET") }') ($ONE_ON)"
echo "one query at a time ($ONE_QUERIES in turn), backend calls per query run (no answer kept; gateway /metrics delta) × how many queries made that many: $ONE_ON with DataLoader on; $ONE_OFF with it off"
if [ -s "$WORK/socket-errors" ]; then echo "wrk socket errors:"; cat "$WORK/socket-errors"; fi
if [ -s "$WORK/error-runs" ]; then echo "runs with GraphQL answers holding errors (warm-ups are round 0):"; cat "$WORK/error-runs"; fi
echo "DataLoader off at the shipped outbound limits (bulkhead 64 calls in flight per downstream, max_in_flight 1024), one query alone: $NOBATCH_SHIPPED; (b) is measured with outbound.max_concurrency = max_in_flight = 100000"
echo "brigade's WARN/ERROR log lines over the whole run: $LOG_PROBLEMS"
echo "brigade idle (nothing asked of it): $IDLE CPU-µs per second, included in every Brigade row's CPU"
cat <<'NOTE'

per s: requests/s (the REST page: pages/s the server sustains, 1 / Σ part requests ÷ part
req/s). CPU µs: the server's utime+stime (all threads) per request — per page for the REST
page, Σ part CPU per request × part requests. server: its CPU use during the run, % of one
core. other load: CPU the rest of the machine used during each round's run, % of one core.
calls: the gateway's backend calls per query (brigade_downstream_calls_total, service
"gateway", over the run ÷ requests). errors: GraphQL answers holding `errors` (a 200
all the same) in the measured runs, all rounds, in % of the answers; a run fails past
10%. Apollo ÷: Apollo's CPU per query ÷ the row's.
NOTE
