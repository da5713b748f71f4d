#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: Brigade's catalog at its
# shipped defaults (log filter included) against bare-rest serving the same bytes, and its
# gRPC face (grpc:GetProduct, grpc:ListProducts) against bare-grpc serving the same
# messages. Unlike requests/s on this shared machine, the count repeats run to run, so it
# is reported beside bench/rest.sh's and bench/grpc.sh's ratios where those scatter.
#
#   bench/callgrind.sh
#
# For each endpoint and server: start the server under callgrind, send BENCH_WARM requests,
# zero the counters (callgrind_control -z), send BENCH_REQUESTS requests over one
# keep-alive connection (one curl; gRPC: h2load, one call at a time), dump the counters (callgrind_control -d) and divide the
# instructions of every thread of the process by the request count. User-space
# instructions only: the kernel's share (sockets, scheduling) is not counted.
#
# The catalog takes calls only with an internal identity token, as the gateway sends
# (`brigade internal-token`; not with a BENCH_BRIGADE from before it): every request
# carries one, to the bare servers too (which ignore it), so all get the same requests.
# bare-rest and bare-grpc cannot send one, so they copy from a catalog on the same data
# without the check (lib.sh's open_catalog).
#
# Knobs: BENCH_REQUESTS=300, BENCH_WARM=50, BENCH_SKIP_BUILD=0, BENCH_LOG_FILTER= (unset:
# Brigade's shipped default; set it only for a second figure beside that one),
# BENCH_BRIGADE= (another brigade binary to count, e.g. an earlier revision's build),
# BENCH_ENDPOINTS= (a space-separated subset of the endpoints below).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${BENCH_REQUESTS:-300}
WARM=${BENCH_WARM:-50}
LOG_FILTER=${BENCH_LOG_FILTER:-}

say() { printf '%s\n' "$*" >&2; }
die() { say "callgrind.sh: $*"; exit 1; }
. bench/lib.sh

command -v valgrind >/dev/null 2>&1 || {
  say "valgrind is missing; installing it with apt-get"
  apt-get update && apt-get install -y valgrind
}
command -v curl >/dev/null 2>&1 || die "curl is needed"
command -v h2load >/dev/null 2>&1 || {
  say "h2load is missing (for the gRPC rows); installing nghttp2-client with apt-get"
  apt-get update && apt-get install -y nghttp2-client
}

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  say "building release binaries (brigade, bare-rest)"
  cargo build --release -p brigade -p bench
fi
TARGET_DIR=$(target_dir)
BRIGADE=${BENCH_BRIGADE:-$TARGET_DIR/release/brigade}
BARE="$TARGET_DIR/release/bare-rest"
BARE_GRPC="$TARGET_DIR/release/bare-grpc"

WORK=$(mktemp -d -t brigade-callgrind.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

brigade_env "$LOG_FILTER"


say "seeding a fresh data directory"
"${BRIGADE_ENV[@]}" "$BRIGADE" seed --data-dir "$WORK/data" >/dev/null 2>"$WORK/seed.err" \
  || die "brigade seed failed: $(cat "$WORK/seed.err")"

TOKEN=$(internal_token "$BRIGADE" "$WORK/data")
identity_args "$TOKEN"

# A plain run of Brigade for bare-rest and bare-grpc to copy their bodies, paths and
# messages from: without the token check, as they send no token.
open_catalog "$BRIGADE" "$WORK/data" "$WORK/source"
SOURCE_PID=$OPEN_PID
PIDS+=("$SOURCE_PID")
SOURCE_URL=$OPEN_URL

# URLS NAME: the paths of one endpoint (a fixed path, or @products / @reviews as in
# bench/rest.sh), repeated to $1 requests.
paths_of() {
  local endpoint=$1 count=$2
  case $endpoint in
    @*) awk -v n="$count" '{ p[NR] = $0 } END { for (i = 0; i < n; i++) print p[i % NR + 1] }' \
          "$WORK/${endpoint#@}.paths" ;;
    *) yes "$endpoint" | head -n "$count" ;;
  esac
}

# One curl, one keep-alive connection, every URL in file $2 against base $1. A gRPC
# endpoint (grpc:METHOD) instead: h2load, one connection, one call at a time, $3 calls of
# the framed request in $WORK/METHOD.bin.
drive() {
  local base=$1 list=$2 count=$3 args=()
  case $ENDPOINT in
    grpc:*)
      local method=${ENDPOINT#grpc:} out
      out=$(h2load -n "$count" -c1 -m1 -d "$WORK/$method.bin" -H 'content-type: application/grpc' \
        -H 'te: trailers' "${IDENTITY[@]}" "$base/ecommerce.v1.ProductService/$method") \
        || die "h2load against $base failed"
      grep -q "^requests: $count total, $count started, $count done, $count succeeded" <<<"$out" \
        || die "not every $method call to $base succeeded: $(grep '^requests:' <<<"$out")"
      # A gRPC error (a refused token: UNAUTHENTICATED) is an HTTP 200 without DATA: every
      # call must bring at least one framed message (5 bytes of header and more).
      local data
      data=$(sed -n 's/^traffic:.*(\([0-9]*\)) data.*/\1/p' <<<"$out")
      [ "${data:-0}" -gt $((count * 5)) ] \
        || die "$method calls to $base brought ${data:-0} DATA bytes for $count calls: gRPC errors"
      return
      ;;
  esac
  while read -r path; do args+=(-o /dev/null "$base$path"); done <"$list"
  curl -sf "${IDENTITY[@]}" "${args[@]}" || die "a request to $base failed"
}

# measure SERVER ENDPOINT -> instructions per request
measure() {
  local server=$1 endpoint=$2 out="$WORK/cg.$1" pid url
  rm -f "$out".*
  if [ "$server" = brigade ]; then
    "${BRIGADE_ENV[@]}" valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
      "$BRIGADE" serve catalog --data-dir "$WORK/data" --port 0 \
      >"$WORK/cg.out" 2>"$WORK/cg.err" &
  elif [[ $endpoint == grpc:* ]]; then
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
      "$BARE_GRPC" --from "$SOURCE_URL" --port 0 >"$WORK/cg.out" 2>"$WORK/cg.err" &
  else
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
      "$BARE" --from "$SOURCE_URL" --port 0 --crawl --reviews-of 500 \
      >"$WORK/cg.out" 2>"$WORK/cg.err" &
  fi
  pid=$!
  PIDS+=("$pid")
  url=$(wait_for_url "$WORK/cg.out" "$pid" "$server under callgrind")
  paths_of "$endpoint" "$WARM" >"$WORK/warm.list"
  paths_of "$endpoint" "$REQUESTS" >"$WORK/run.list"
  ENDPOINT=$endpoint drive "$url" "$WORK/warm.list" "$WARM"
  callgrind_control -z "$pid" >/dev/null 2>&1
  ENDPOINT=$endpoint drive "$url" "$WORK/run.list" "$REQUESTS"
  callgrind_control -d "$pid" >/dev/null 2>&1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  # The dump made after zeroing: the newest numbered file (the final one, at exit,
  # holds only what came after it).
  local dump
  dump=$(ls "$out".*.1 2>/dev/null | head -n1)
  [ -n "$dump" ] || dump=$(ls -t "$out".* | tail -n1)
  awk -v n="$REQUESTS" '/^(summary|totals):/ { print int($2 / n); exit }' "$dump"
}

# bare-rest (not under callgrind) writes the spread paths once.
"$BARE" --from "$SOURCE_URL" --port 0 --crawl --reviews-of 500 --write-paths "$WORK" \
  >"$WORK/paths.out" 2>"$WORK/paths.err" &
PATHS_PID=$!
PIDS+=("$PATHS_PID")
wait_for_url "$WORK/paths.out" "$PATHS_PID" bare-rest >/dev/null
kill -TERM "$PATHS_PID"

read -r -a ENDPOINTS <<<"${BENCH_ENDPOINTS:-/v1/products/1 /v1/products?limit=50 @products @reviews grpc:GetProduct grpc:ListProducts}"
# The framed gRPC requests (5-byte header, then the message): ProductRequest {product_id:
# 1} = 08 01, ListProductsRequest {page_size: 50} = 08 32.
printf '\x00\x00\x00\x00\x02\x08\x01' >"$WORK/GetProduct.bin"
printf '\x00\x00\x00\x00\x02\x08\x32' >"$WORK/ListProducts.bin"
printf '\nInstructions per request (callgrind, user space, all threads); %s requests after %s warm-up; brigade log filter: %s\n' \
  "$REQUESTS" "$WARM" "${LOG_FILTER:-shipped default (info,sqlx=warn)}"
printf 'brigade: %s\n' "$BRIGADE"
printf '%s; %s; valgrind %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)" "$(valgrind --version)"
printf '| %-21s | %12s | %12s | %8s |\n' endpoint brigade "bare server" ratio
printf '|%s|%s|%s|%s|\n' "-----------------------" "-------------:" "-------------:" "---------:"
for endpoint in "${ENDPOINTS[@]}"; do
  say "measuring $endpoint"
  b=$(measure brigade "$endpoint")
  r=$(measure bare "$endpoint")
  printf '| %-21s | %12s | %12s | %7s× |\n' "$endpoint" "$b" "$r" \
    "$(awk -v b="$b" -v r="$r" 'BEGIN { printf "%.2f", b / r }')"
done
echo
cat <<'NOTE'
ratio: Brigade's user-space instructions per request over the bare server's (bare-rest;
bare-grpc for the grpc: rows). Not a throughput ratio: the kernel's work per request
(loopback TCP, wake-ups), most of a bare server's cost, is not counted. Under valgrind the CPU reports no SHA extensions, so sha2 runs its portable
code: the ETag of a 7 KB page costs ~370k instructions here against a few µs natively
(the identity token's HMAC-SHA256, checked on every request, runs it too).
Compare Brigade's counts across revisions; use bench/rest.sh and bench/grpc.sh for the
ratio to bare.
NOTE
