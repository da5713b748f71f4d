#!/usr/bin/env bash
# gRPC read benchmark (issue 4): Brigade's catalog, with its whole stack (one port shared
# with REST, middleware, SQLite), against a bare tonic server (`bare-grpc`: the same
# generated service and codec, `tonic::transport::Server` with its defaults, the same
# messages served from memory). They run side by side in the same run; the load generator
# drives them alternately (A B, then B A, ...) so that whatever else the machine is doing
# hits all alike. With BENCH_REST (default on) the REST reads of the same data run too,
# against Brigade and `bare-rest`. Then `wire-size` measures JSON vs protobuf on the same data. Everything
# stays on 127.0.0.1.
#
#   bench/grpc.sh
#
# Calls: GetProduct {product_id: 1} (unary), ListProducts {page_size: 50} (a server
# stream of 50 messages), and ListProducts(50) spread: the same call with the page_token of
# a different page each time, round robin over every page of the catalog, so that no cache
# of one page stands in for the database. h2load sends one fixed body, so the spread row is
# always driven by `grpc-load --call spread` (on both servers alike; see its CPU column).
#
# The load generator is h2load (Debian's nghttp2-client), sending the framed protobuf
# request with `content-type: application/grpc` and `te: trailers`: a C client that spends
# less CPU per call than a tonic client (at bare-grpc's ≈64k calls/s, 70% of its core vs
# 98%), so on its own core it stays off the critical path and the ratio is the servers'.
# It does not read grpc-status, so the script checks what it can: every server's answers
# are compared message by message with Brigade's before measuring (`grpc-load --once`),
# and every run must have only 2xx responses and the DATA bytes of successful calls (a
# gRPC error carries no DATA). The tonic client `grpc-load`, which checks every status, is
# the cross-check: BENCH_CLIENT=grpc-load.
#
# The catalog takes calls only with an internal identity token, as the gateway sends
# (`brigade internal-token`): h2load and curl send one with every call, to every server
# alike (the bare servers ignore it), so all get the same requests. bench's Rust tools
# cannot send one (crates/bench has no option for it): bare-grpc, bare-rest, grpc-layers
# and wire-size copy their data, and grpc-load makes its calls, from a second catalog on
# the same data with identity.require_internal_token = false (lib.sh's open_catalog,
# pinned like the others). So the rows grpc-load drives (the spread row; every row with
# BENCH_CLIENT=grpc-load) measure Brigade without the token check, one HMAC-SHA256 per
# call less (said under the table); grpc-layers' hosted-memory, which checks tokens made
# with its own scratch key, gets a token from that key and has no grpc-load rows.
#
# Knobs (environment):
#   BENCH_DURATION=10s     duration of each measured run
#   BENCH_WARMUP=2s        unmeasured run per server and call before round 1
#   BENCH_ROUNDS=3         rounds; the table shows the median
#   BENCH_CONNECTIONS=4    HTTP/2 connections (one client thread)
#   BENCH_STREAMS=16       concurrent calls per connection (h2load -m), so 64 in flight
#   BENCH_CLIENT=h2load    h2load | grpc-load
#   BENCH_PIN=1            pin the servers to BENCH_SERVER_CPU and the client to BENCH_CLIENT_CPU
#   BENCH_SERVER_CPU=0     (taskset -c list); 0 = unpinned
#   BENCH_CLIENT_CPU=1
#   BENCH_SKIP_BUILD=0     1 = measure the release binaries already in the target directory
#   BENCH_LOG_FILTER=      Brigade's log filter. Unset (the default): Brigade's own shipped
#                          default (`info,sqlx=warn`), what users run. Set it (e.g. `warn`)
#                          only to report a second figure beside the default one.
#   BENCH_WIRE=1           0 = skip the JSON vs protobuf table (wire-size)
#   BENCH_REST=1           also drive Brigade's REST face on the same port with the same
#                          client (h2load over HTTP/2): GET /v1/products/1 and
#                          GET /v1/products?limit=50, against Brigade and bench/rest.sh's
#                          bare axum server (`bare-rest`): gRPC vs REST with the same client,
#                          both with and without Brigade's layers (h2load only)
#   BENCH_LAYERS=0         1 = also measure grpc-layers' variants, which add Brigade's layers
#                          to the bare server one at a time: plain-memory (axum hosting and
#                          the gRPC face's wrapping), hosted-memory (+ the shared middleware
#                          stack, health, reflection: all of Brigade but its database)
#
# Output: a table of calls/s (median of the rounds), server CPU time per call (utime+stime
# of the whole server process from /proc/<pid>/stat, all threads), the server's and the
# client's CPU use during the run, response header bytes per call, and Brigade's ratio to
# the bare server; then wire-size's table.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-4}
STREAMS=${BENCH_STREAMS:-16}
CLIENT=${BENCH_CLIENT:-h2load}
PIN=${BENCH_PIN:-1}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
LOG_FILTER=${BENCH_LOG_FILTER:-}
# Shown in the report: the filter measured.
LOG_FILTER_SHOWN=${LOG_FILTER:-shipped default (info,sqlx=warn)}
WIRE=${BENCH_WIRE:-1}
LAYERS=${BENCH_LAYERS:-0}
REST=${BENCH_REST:-1}
if [ "$CLIENT" != h2load ]; then REST=0; fi

say() { printf '%s\n' "$*" >&2; }
die() { say "grpc.sh: $*"; exit 1; }
. bench/lib.sh

case $CLIENT in
  h2load | grpc-load) ;;
  *) die "BENCH_CLIENT must be h2load or grpc-load, not '$CLIENT'" ;;
esac

# --- tools -------------------------------------------------------------------------------
if [ "$CLIENT" = h2load ] && ! command -v h2load >/dev/null 2>&1; then
  say "h2load is missing; installing nghttp2-client with apt-get"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO apt-get install -y nghttp2-client
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
  say "BENCH_SKIP_BUILD=1: using the release binaries already built"
else
  say "building release binaries (brigade, bare-grpc, bare-rest, grpc-load, grpc-layers, wire-size)"
  cargo build --release -p brigade -p bench
fi
TARGET_DIR=$(target_dir)
BRIGADE="$TARGET_DIR/release/brigade"
BARE="$TARGET_DIR/release/bare-grpc"
LOAD="$TARGET_DIR/release/grpc-load"
WIRE_SIZE="$TARGET_DIR/release/wire-size"
LAYERS_BIN="$TARGET_DIR/release/grpc-layers"
BARE_REST="$TARGET_DIR/release/bare-rest"
for bin in "$BRIGADE" "$BARE" "$LOAD" "$WIRE_SIZE" "$LAYERS_BIN" "$BARE_REST"; do
  [ -x "$bin" ] || die "release binary $bin not found"
done

# --- servers -----------------------------------------------------------------------------
WORK=$(mktemp -d -t brigade-bench.XXXXXX)
# The servers measured, in order; their URLs and pids.
SERVERS=()
declare -A URL=() PID=()
cleanup() {
  for pid in "${PID[@]}"; do
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

# start NAME COMMAND...: starts a server, records its pid and URL. `env` and `taskset`
# both exec, so $! is the server's own pid.
start() {
  local name=$1
  shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID[$name]=$!
  URL[$name]=$(wait_for_url "$WORK/$name.out" "${PID[$name]}" "$name")
  SERVERS+=("$name")
}

say "seeding a fresh data directory in $WORK/data"
"${BRIGADE_ENV[@]}" "$BRIGADE" seed --data-dir "$WORK/data" >"$WORK/seed.out" 2>"$WORK/seed.err" \
  || { cat "$WORK/seed.err" >&2; die "brigade seed failed"; }

# The token every call sends (see the header); TOKEN_OF a server that checks tokens made
# with another key.
TOKEN=$(internal_token "$BRIGADE" "$WORK/data")
declare -A TOKEN_OF=()

start brigade "${BRIGADE_ENV[@]}" "${PIN_SERVER[@]}" \
  "$BRIGADE" serve catalog --data-dir "$WORK/data" --port 0
BRIGADE_URL=${URL[brigade]}
# `open`: the same catalog without the token check, for the Rust tools (see the header).
open_catalog "$BRIGADE" "$WORK/data" "$WORK/open" "${PIN_SERVER[@]}"
PID[open]=$OPEN_PID
URL[open]=$OPEN_URL
start bare "${PIN_SERVER[@]}" "$BARE" --from "${URL[open]}" --port 0
if [ "$REST" = 1 ]; then
  start bare-rest "${PIN_SERVER[@]}" "$BARE_REST" --from "${URL[open]}" --port 0
fi
if [ "$LAYERS" = 1 ]; then
  start plain-memory "${PIN_SERVER[@]}" \
    "$LAYERS_BIN" serve --variant plain-memory --from "${URL[open]}"
  start hosted-memory env BENCH_LOG_FILTER="$LOG_FILTER" "${PIN_SERVER[@]}" \
    "$LAYERS_BIN" serve --variant hosted-memory --from "${URL[open]}"
  # It checks tokens as Brigade does, with the key of its scratch data directory (where
  # its open catalog.db is).
  scratch=$(for fd in /proc/"${PID[hosted-memory]}"/fd/*; do readlink "$fd"; done 2>/dev/null \
    | sed -n 's|/catalog\.db$||p' | head -n1)
  [ -n "$scratch" ] && [ -f "$scratch/internal.key" ] \
    || die "found no scratch data directory with an internal.key for hosted-memory"
  TOKEN_OF[hosted-memory]=$(internal_token "$BRIGADE" "$scratch")
fi

# Each call: its name in the table, its gRPC path and its request message (protobuf, hex):
# ProductRequest {product_id: 1} = 08 01; ListProductsRequest {page_size: 50} = 08 32.
# The keys are grpc-load's --call values. With BENCH_REST, the REST reads of the same
# data on the same port (Brigade only; plain GETs, no request body).
CALLS=(get list spread)
declare -A NAME=([get]="GetProduct(1)" [list]="ListProducts(50)" [spread]="ListProducts(50) spread"
  [rest-one]="GET /v1/products/1" [rest-page]="GET /v1/products?limit=50")
declare -A RPC=([get]=/ecommerce.v1.ProductService/GetProduct [list]=/ecommerce.v1.ProductService/ListProducts
  [spread]=/ecommerce.v1.ProductService/ListProducts  [rest-one]=/v1/products/1 [rest-page]=/v1/products?limit=50)
declare -A REQUEST_HEX=([get]=0801 [list]=0832)
declare -A DATA_PER_CALL=()
if [ "$REST" = 1 ]; then
  command -v curl >/dev/null 2>&1 || die "curl is needed for BENCH_REST (or BENCH_REST=0)"
  CALLS+=(rest-one rest-page)
fi

is_rest() { [[ $1 == rest-* ]]; }
# Whether CALL is driven by h2load (with BENCH_CLIENT=h2load): not the spread, whose
# request body changes from call to call.
by_h2load() { [ "$CLIENT" = h2load ] && [ "$1" != spread ]; }
# Whether SERVER answers CALL: Brigade all; bare-rest REST only; the others gRPC only,
# hosted-memory only with h2load (grpc-load cannot send it a token).
serves() {
  case $1 in
    brigade) return 0 ;;
    bare-rest) is_rest "$2" ;;
    hosted-memory) ! is_rest "$2" && by_h2load "$2" ;;
    *) ! is_rest "$2" ;;
  esac
}
# The arguments that send SERVER's token (IDENTITY, from lib.sh's identity_args).
identity_for() { identity_args "${TOKEN_OF[$1]:-$TOKEN}"; }

# A gRPC request body: the message behind its 5-byte frame header (uncompressed, length).
command -v xxd >/dev/null 2>&1 || die "xxd is needed (to write the framed request bodies)"
frame() {
  local hex=$1
  printf '00%08x%s' $((${#hex} / 2)) "$hex" | xxd -r -p
}

# grpc_call SERVER CALL OUT: one call of CALL (a fixed request) with curl over h2c, with
# SERVER's token; the framed answer in OUT, its headers and trailers in OUT.head. Fails
# unless grpc-status is 0.
grpc_call() {
  local server=$1 call=$2 out=$3
  identity_for "$server"
  curl -sS --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    "${IDENTITY[@]}" --data-binary @"$WORK/request-$call.bin" -D "$out.head" -o "$out" \
    "${URL[$server]}${RPC[$call]}" || return 1
  grep -qi '^grpc-status: *0' "$out.head"
}

# The comparison is only fair if all send the same messages. grpc-load sends no token, so
# Brigade's reference answers come from `open` (the same binary and data); then the
# servers that check tokens (brigade, hosted-memory) are called with theirs by curl and
# must answer the same bytes.
for call in "${CALLS[@]}"; do
  if is_rest "$call"; then
    identity_for brigade
    curl -sf "${IDENTITY[@]}" -o "$WORK/rest.body" "$BRIGADE_URL${RPC[$call]}" || die "${NAME[$call]} on brigade failed"
    curl -sf "${IDENTITY[@]}" -o "$WORK/bare-rest.body" "${URL[bare-rest]}${RPC[$call]}" \
      || die "${NAME[$call]} on bare-rest failed"
    cmp -s "$WORK/rest.body" "$WORK/bare-rest.body" \
      || die "the bodies of ${NAME[$call]} differ between brigade and bare-rest"
    DATA_PER_CALL[$call]=$(wc -c <"$WORK/rest.body")
    say "${NAME[$call]}: identical ${DATA_PER_CALL[$call]}-byte JSON bodies from brigade and bare-rest"
    continue
  fi
  if [ -n "${REQUEST_HEX[$call]:-}" ]; then frame "${REQUEST_HEX[$call]}" >"$WORK/request-$call.bin"; fi
  "$LOAD" --url "${URL[open]}" --call "$call" --once >"$WORK/brigade.msgs" \
    || die "${NAME[$call]} on brigade (open) failed"
  for server in "${SERVERS[@]}"; do
    case $server in brigade | hosted-memory) continue ;; esac
    serves "$server" "$call" || continue
    "$LOAD" --url "${URL[$server]}" --call "$call" --once >"$WORK/other.msgs" \
      || die "${NAME[$call]} on $server failed"
    cmp -s "$WORK/brigade.msgs" "$WORK/other.msgs" \
      || die "the messages of ${NAME[$call]} differ between brigade and $server"
  done
  if [ -n "${REQUEST_HEX[$call]:-}" ]; then
    grpc_call open "$call" "$WORK/open.grpc" || die "${NAME[$call]} on brigade (open) failed (curl)"
    for server in brigade hosted-memory; do
      [ -n "${URL[$server]:-}" ] || continue
      grpc_call "$server" "$call" "$WORK/token.grpc" \
        || { cat "$WORK/token.grpc.head" >&2; die "${NAME[$call]} on $server with its token failed"; }
      cmp -s "$WORK/open.grpc" "$WORK/token.grpc" \
        || die "the answer of ${NAME[$call]} differs between $server (with its token) and brigade (open)"
    done
  fi
  if [ "$call" = spread ]; then
    say "${NAME[$call]}: identical answers from all gRPC servers on every whole page;" \
      "$(wc -l <"$WORK/brigade.msgs") messages in all"
    continue
  fi
  # DATA bytes of one successful call: each message plus its 5-byte frame header.
  DATA_PER_CALL[$call]=$(awk '{ n += length($0) / 2 + 5 } END { print n }' "$WORK/brigade.msgs")
  say "${NAME[$call]}: identical answers from all gRPC servers; $(wc -l <"$WORK/brigade.msgs")" \
    "message(s), ${DATA_PER_CALL[$call]} DATA bytes per call"
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

# load CALL URL DURATION SERVER: runs the client; prints "calls_per_s calls
# header_bytes_per_call mean_latency".
load() {
  local call=$1 url=$2 duration=$3 server=$4 out=$WORK/client.out
  if by_h2load "$call"; then
    local request=(-d "$WORK/request-$call.bin" -H 'content-type: application/grpc' -H 'te: trailers')
    if is_rest "$call"; then request=(); fi
    identity_for "$server"
    "${PIN_CLIENT[@]}" h2load -t1 -c"$CONNECTIONS" -m"$STREAMS" -D "$duration" "${request[@]}" \
      "${IDENTITY[@]}" "$url${RPC[$call]}" >"$out" || { cat "$out" >&2; return 1; }
    # requests: T total, S started, D done, K succeeded, F failed, E errored, O timeout
    local started done ok bad non2xx data headers
    read -r started done ok bad < <(awk '/^requests:/ {
      gsub(",", ""); print $4, $6, $8, $10 + $12 + $14 }' "$out")
    non2xx=$(awk '/^status codes:/ { gsub(",", ""); print $5 + $7 + $9 }' "$out")
    data=$(sed -n 's/^traffic:.*(\([0-9]*\)) data.*/\1/p' "$out")
    headers=$(sed -n 's/^traffic:.*(\([0-9]*\)) headers.*/\1/p' "$out")
    if [ "$bad" != 0 ] || [ "$non2xx" != 0 ] || [ "$ok" != "$done" ] || [ "$done" = 0 ]; then
      cat "$out" >&2
      say "${NAME[$call]}: $bad failed/errored/timed out, $non2xx non-2xx"
      return 1
    fi
    # Every finished call brought a whole answer: calls still in flight at the end may
    # have brought part of theirs, so the DATA lies between done and started whole ones.
    local per=${DATA_PER_CALL[$call]}
    if [ "$data" -lt $((done * per)) ] || [ "$data" -gt $((started * per)) ]; then
      cat "$out" >&2
      say "${NAME[$call]}: $data DATA bytes for $done calls ($per each): some did not succeed"
      return 1
    fi
    awk -v done="$done" -v headers="$headers" '
      /^finished in/ { gsub(",", ""); rps = $4 }
      /^time for request:/ { mean = $6 }
      END { printf "%s %s %.1f %s\n", rps, done, headers / done, mean }' "$out"
  else
    "${PIN_CLIENT[@]}" "$LOAD" --url "$url" --call "$call" \
      --connections "$CONNECTIONS" --concurrency $((CONNECTIONS * STREAMS)) \
      --duration "$(seconds_of "$duration")" >"$out" || { cat "$out" >&2; return 1; }
    local line
    line=$(cat "$out")
    case $line in
      *" failures=0 "*) ;;
      *) say "$line"; return 1 ;;
    esac
    sed -n 's/^calls=\([0-9]*\) .*calls_per_s=\([0-9.]*\).*/\2 \1 - -/p' "$out"
  fi
}

# run SERVER CALL ROUND (ROUND 0 = warm-up, not recorded)
run() {
  local server=$1 call=$2 round=$3 url=${URL[$1]} pid=${PID[$1]} duration before after m0 m1
  # grpc-load sends no token: its rows of Brigade measure `open` (see the header).
  if [ "$server" = brigade ] && ! by_h2load "$call"; then
    url=${URL[open]} pid=${PID[open]}
    OPEN_MEASURED[${NAME[$call]}]=1
  fi
  duration=$DURATION
  if [ "$round" = 0 ]; then duration=$WARMUP; fi
  m0=$(machine_jiffies)
  before=$(cpu_ticks "$pid")
  # bash's `time` gives the client's own CPU time, so the rest of the machine's load can
  # be told apart.
  if ! { TIMEFORMAT='%3U %3S'; time load "$call" "$url" "$duration" "$server" >"$WORK/result"; } \
      2>"$WORK/client.time"; then
    if [ "$round" = 0 ]; then
      say "  warm-up of $server ${NAME[$call]} had failures (ignored: the measured runs are checked)"
      return 0
    fi
    cat "$WORK/client.time" >&2
    die "$CLIENT failed against $server ${NAME[$call]}"
  fi
  after=$(cpu_ticks "$pid")
  m1=$(machine_jiffies)
  [ "$round" = 0 ] && return 0
  local rps calls header_bytes latency client_cpu other steal
  read -r rps calls header_bytes latency <"$WORK/result"
  client_cpu=$(awk '{ print $1 + $2; exit }' "$WORK/client.time")
  # CPU used by everything but the server and the client during the run, in % of one
  # core; steal is time the hypervisor gave our vCPUs to someone else.
  read -r other steal < <(awk -v m0="$m0" -v m1="$m1" -v srv="$((after - before))" \
    -v cli="$client_cpu" -v t="$TICKS" -v wall="$WALL" 'BEGIN {
      split(m0, a, " "); split(m1, b, " ")
      o = ((b[1] - a[1]) - srv) / t - cli; if (o < 0) o = 0
      printf "%.0f %.0f\n", o / wall * 100, (b[2] - a[2]) / t / wall * 100 }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${NAME[$call]}" "$server" "$round" "$rps" \
    "$calls" "$((after - before))" "$header_bytes" "$latency" "$client_cpu" "$other" \
    "$steal" >>"$RESULTS"
  say "  round $round  $(printf '%-17s %-8s' "${NAME[$call]}" "$server") $(printf '%10.0f' "$rps") calls/s" \
    " mean $latency  $(if by_h2load "$call"; then echo h2load; else echo grpc-load; fi) CPU ${client_cpu}s  other load ${other}%  steal ${steal}%"
}

declare -A OPEN_MEASURED=()
if [ -n "${URL[hosted-memory]:-}" ] && [ "$CLIENT" != h2load ]; then
  say "hosted-memory is left out: grpc-load cannot send it a token"
fi
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "warming up ($WARMUP per server and call)"
for call in "${CALLS[@]}"; do
  for server in "${SERVERS[@]}"; do
    if serves "$server" "$call"; then run "$server" "$call" 0; fi
  done
done

say "measuring: $ROUNDS rounds x ${#CALLS[@]} calls x ${#SERVERS[@]} servers, $CLIENT $CONNECTIONS connections x $STREAMS streams, $DURATION"
for round in $(seq 1 "$ROUNDS"); do
  for call in "${CALLS[@]}"; do
    # Alternate the order (forwards, then backwards), so drift in the machine's load
    # hits all alike.
    order=("${SERVERS[@]}")
    if [ $((round % 2)) = 0 ]; then
      order=()
      for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do order+=("${SERVERS[$i]}"); done
    fi
    for server in "${order[@]}"; do
      if serves "$server" "$call"; then run "$server" "$call" "$round"; fi
    done
  done
done

# --- report ------------------------------------------------------------------------------
if [ "$PIN" = 1 ]; then
  pinning="servers on cpu $SERVER_CPU, the client on cpu $CLIENT_CPU"
else
  pinning="unpinned"
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
# What was measured: the commit, and whether the built tree differed from it.
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# (crates/bench is not part of the brigade binary.)
if ! git diff --quiet HEAD -- crates Cargo.toml Cargo.lock proto ':!crates/bench' 2>/dev/null \
    || [ -n "$(git ls-files --others --exclude-standard -- crates proto ':!crates/bench' 2>/dev/null)" ]; then
  REVISION="$REVISION + uncommitted changes"
fi
echo
echo "gRPC reads: $CLIENT (the spread row: grpc-load), $CONNECTIONS HTTP/2 connections x $STREAMS concurrent streams, $DURATION per run, $ROUNDS rounds, medians; $pinning; brigade log filter: $LOG_FILTER_SHOWN; Brigade at $REVISION"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM; $(uname -sr); load average $LOAD_START at start, $LOAD_END at end"
echo
awk -F'\t' -v ticks="$TICKS" -v wall="$WALL" '
'"$MEDIAN_AWK"'
  {
    key = $1 SUBSEP $2
    if (!(key in rps)) { order[++n] = key }
    rps[key] = rps[key] " " $4
    us[key] = us[key] " " ($6 / ticks * 1e6 / $5)
    util[key] = util[key] " " ($6 / ticks / wall * 100)
    cli[key] = cli[key] " " ($9 / wall * 100)
    each[key] = each[key] (each[key] == "" ? "" : " / ") sprintf("%.0f", $4)
    other[key] = other[key] (other[key] == "" ? "" : "/") $10
    hdr[key] = $7
  }
  END {
    fmt = "| %-25s | %-13s | %7s | %-24s | %11s | %6s | %6s | %-12s | %10s | %7s | %11s |\n"
    printf fmt, "call", "server", "calls/s", "calls/s per round", "CPU µs/call", "server", "client", "other load", "hdr B/call", "vs bare", "vs bare CPU"
    printf "|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n", "---------------------------", "---------------", "--------:", "--------------------------", "------------:", "-------:", "-------:", "--------------", "-----------:", "--------:", "------------:"
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP)
      m[k[1], k[2]] = median(rps[order[i]])
      c[k[1], k[2]] = median(us[order[i]])
    }
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP)
      call = k[1]; server = k[2]
      ratio = ""; cratio = ""
      # REST rows compare with bare-rest, gRPC rows with bare.
      b = (call ~ /^GET /) ? "bare-rest" : "bare"
      if (server != b && m[call, b] > 0) ratio = sprintf("%.2f×", m[call, server] / m[call, b])
      if (server != b && c[call, b] > 0 && c[call, server] > 0) cratio = sprintf("%.2f×", c[call, b] / c[call, server])
      printf fmt, call, server, sprintf("%.0f", m[call, server]), each[order[i]], \
        sprintf("%.1f", c[call, server]), sprintf("%.0f%%", median(util[order[i]])), \
        sprintf("%.0f%%", median(cli[order[i]])), other[order[i]] "%", hdr[order[i]], ratio, cratio
    }
    print ""
    for (i = 1; i <= n; i++) {
      split(order[i], k, SUBSEP)
      b = (k[1] ~ /^GET /) ? "bare-rest" : "bare"
      if (k[2] != b && c[k[1], b] > 0)
        printf "%s: %s spends %.1f× %s'"'"'s CPU per call (%.1f vs %.1f µs).\n", \
          k[1], k[2], c[k[1], k[2]] / c[k[1], b], b, c[k[1], k[2]], c[k[1], b]
    }
    if (m["GetProduct(1)", "bare"] > 0) {
      r = m["GetProduct(1)", "brigade"] / m["GetProduct(1)", "bare"]
      rc = c["GetProduct(1)", "bare"] / c["GetProduct(1)", "brigade"]
      printf "Goal (issue 4): unary GetProduct at >= 0.85× the bare server: %.2f× by calls/s, %.2f× by CPU per call; %s.\n", \
        r, rc, (r >= 0.85 && rc >= 0.85 ? "met" : "NOT met")
    }
    split("GetProduct(1)|GET /v1/products/1|ListProducts(50)|GET /v1/products?limit=50", pair, "|")
    for (i = 1; i <= 3; i += 2) {
      g = pair[i]; h = pair[i + 1]
      if (m[h, "brigade"] > 0 && c[g, "brigade"] > 0)
        printf "gRPC vs REST, Brigade (one port): %s %.0f calls/s vs %s %.0f req/s = %.2f× (by CPU per call: %.2f×).\n", \
          g, m[g, "brigade"], h, m[h, "brigade"], m[g, "brigade"] / m[h, "brigade"], c[h, "brigade"] / c[g, "brigade"]
      if (m[h, "bare-rest"] > 0 && c[g, "bare"] > 0)
        printf "gRPC vs REST, bare servers (bare-grpc vs bare-rest): %s %.0f calls/s vs %s %.0f req/s = %.2f× (by CPU per call: %.2f×).\n", \
          g, m[g, "bare"], h, m[h, "bare-rest"], m[g, "bare"] / m[h, "bare-rest"], c[h, "bare-rest"] / c[g, "bare"]
    }
  }' "$RESULTS"
echo
cat <<'NOTE'
calls/s: median of the rounds (a ListProducts call is one whole stream of 50 messages; a
REST row counts requests). vs bare: the server's calls/s over bare-grpc's (REST rows: over
bare-rest's). vs bare CPU: the bare server's CPU per call over the server's, the ratio of
what one core serves when CPU is the limit; it is the steadier of the two when other load
takes the servers' core (server column well below 100%): the scheduler shares a core per
thread, so Brigade's extra SQLite threads win it a larger share than a one-thread server.
CPU µs/call: the server's utime+stime (all its threads) per call, median of the rounds.
server, client: CPU each used during the run, in % of one core (a server below ~95% was
not the bottleneck). other load: CPU the rest of the machine used during each round's run,
in % of one core; when it is high, the absolute numbers are not comparable across runs,
only the side-by-side ratios are. hdr B/call: response header bytes per call as received
(HPACK-compressed HEADERS and trailers; h2load only).
NOTE
if [ "${#OPEN_MEASURED[@]}" -gt 0 ]; then
  echo "brigade rows driven by grpc-load ($(printf '%s\n' "${!OPEN_MEASURED[@]}" | sort | paste -sd, - | sed 's/,/, /g')): measured on a catalog with identity.require_internal_token = false (grpc-load cannot send the token), so without the token check every other row pays (one HMAC-SHA256 per call)."
fi

if [ "$WIRE" = 1 ]; then
  echo
  say "measuring JSON vs protobuf (wire-size) on the data of the running catalog"
  "${PIN_CLIENT[@]}" "$WIRE_SIZE" --from "${URL[open]}"
fi
