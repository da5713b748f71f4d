#!/usr/bin/env bash
# Orders (issue 15's benchmark): `brigade up` at its shipped defaults (SQLite, the embedded
# broker, the payments sandbox with no latency), then wrk placing orders — POST /v1/orders,
# a fresh Idempotency-Key each, BENCH_CONNECTIONS connections — and, side by side in the
# same run, the catalog's idempotent product create (POST /v1/products): one service's
# write beside the accept, which also asks accounts and catalog over gRPC and writes two
# outbox messages. Then it waits until every accepted order is final and reads the
# accept→paid latency from orders' own histogram.
#
#   bench/orders.sh
#
# Orders and catalog take calls only with an internal identity token, as the gateway
# sends: every request to them carries one (`brigade internal-token` on the round's data
# directory).
#
# Knobs: BENCH_DURATION=10s, BENCH_ROUNDS=3, BENCH_CONNECTIONS=16, BENCH_SKIP_BUILD=0.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
PRODUCTS=100

say() { printf '%s\n' "$*" >&2; }
die() { say "orders.sh: $*"; exit 1; }
. bench/lib.sh

command -v wrk >/dev/null 2>&1 || { say "installing wrk"; apt-get update && apt-get install -y wrk; }
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  say "building brigade (release)"
  cargo build --release -p brigade
fi
BIN="$(target_dir)/release/brigade"

WORK=$(mktemp -d -t brigade-orders.XXXXXX)
PID=""
stop() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; fi
  PID=""
}
trap 'stop; rm -rf "$WORK"' EXIT
brigade_env ""

# A fresh `brigade up` (demo users, and $PRODUCTS products of our own with ample stock);
# sets PID, ORDERS, CATALOG, FIRST (the first of our products' ids) and IDENTITY (the
# arguments that send the token).
start() {
  local token
  rm -rf "$WORK/data"
  "${BRIGADE_ENV[@]}" \
    BRIGADE_SERVICES__GATEWAY__PORT=0 BRIGADE_SERVICES__CATALOG__PORT=0 \
    BRIGADE_SERVICES__ACCOUNTS__PORT=0 BRIGADE_SERVICES__ORDERS__PORT=0 \
    BRIGADE_SERVICES__BILLING__PORT=0 BRIGADE_SERVICES__PAYMENTS_SANDBOX__PORT=0 \
    "$BIN" up --data-dir "$WORK/data" >"$WORK/up.out" 2>"$WORK/up.err" &
  PID=$!
  for _ in $(seq 1 600); do grep -q '^Press Ctrl-C' "$WORK/up.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^Press Ctrl-C' "$WORK/up.out" || { cat "$WORK/up.err" >&2; die "brigade up did not start"; }
  ORDERS=$(awk '$1 == "orders" { print $2 }' "$WORK/up.out")
  CATALOG=$(awk '$1 == "catalog" { print $2 }' "$WORK/up.out")
  token=$(internal_token "$BIN" "$WORK/data")
  identity_args "$token"
  FIRST=""
  for i in $(seq 1 "$PRODUCTS"); do
    id=$(curl -sf -X POST "$CATALOG/v1/products" "${IDENTITY[@]}" -H "Idempotency-Key: bench-product-$i" \
      -H 'Content-Type: application/json' \
      -d "{\"name\": \"Bench $i\", \"price\": 9.99, \"stock\": 1000000}" \
      | sed -n 's/^{"id":\([0-9]*\).*/\1/p')
    [ -n "$id" ] || die "could not create a product"
    [ -n "$FIRST" ] || FIRST=$id
  done
}

# metric NAME [LABEL-FILTER]: the sum of orders' series NAME whose labels match.
metric() {
  curl -sf "$ORDERS/metrics" | awk -v n="$1" -v f="${2:-}" '
    index($0, n) == 1 && (f == "" || index($0, f) > 0) { s += $NF } END { printf "%d\n", s }'
}

# run NAME SCRIPT PATH ARGS...: one wrk run; appends "NAME round rps p50 p99" to results.
run() {
  local name=$1 script=$2 url=$3; shift 3
  wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "${IDENTITY[@]}" -s "$script" "$url" -- "$@" \
    >"$WORK/wrk.out" 2>&1 || die "wrk failed: $(cat "$WORK/wrk.out")"
  if grep -q 'Non-2xx' "$WORK/wrk.out"; then cat "$WORK/wrk.out" >&2; die "$name answered with errors"; fi
  local rps p50 p99
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/wrk.out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$WORK/wrk.out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$WORK/wrk.out")")
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$rps" "$p50" "$p99" >>"$WORK/results"
  say "  round $round  $(printf '%-16s' "$name") $(printf '%8.0f' "$rps")/s  p50 ${p50} ms  p99 ${p99} ms"
}

: >"$WORK/results"
: >"$WORK/paid"
for round in $(seq 1 "$ROUNDS"); do
  start
  if [ $((round % 2)) = 1 ]; then
    run "order accept" bench/order.lua "$ORDERS" "r$round" 1000 "$FIRST" "$PRODUCTS"
    run "product create" bench/create.lua "$CATALOG" "r$round"
  else
    run "product create" bench/create.lua "$CATALOG" "r$round"
    run "order accept" bench/order.lua "$ORDERS" "r$round" 1000 "$FIRST" "$PRODUCTS"
  fi
  # Every accepted order final, and how: PAID unless something refused it. Accepts still
  # in flight when wrk stopped are counted after it, so both sides are read each time.
  for _ in $(seq 1 600); do
    accepted=$(metric brigade_orders_transitions_total 'to="PENDING"')
    final=$(( $(metric brigade_orders_transitions_total 'to="PAID"') + $(metric brigade_orders_transitions_total 'to="REJECTED"') + $(metric brigade_orders_transitions_total 'to="CANCELLED"') ))
    [ "$final" -ge "$accepted" ] && break
    sleep 0.5
  done
  paid=$(metric brigade_orders_transitions_total 'to="PAID"')
  [ "$paid" -eq "$accepted" ] || die "round $round: $accepted accepted, $paid paid (final $final)"
  sum=$(curl -sf "$ORDERS/metrics" | awk '/^brigade_orders_accept_to_paid_seconds_sum/ { s += $NF } END { print s }')
  count=$(curl -sf "$ORDERS/metrics" | awk '/^brigade_orders_accept_to_paid_seconds_count/ { s += $NF } END { print s }')
  # The histogram's p50 and p99: the upper bound of the first bucket holding them.
  quantiles=$(curl -sf "$ORDERS/metrics" | awk -v c="$count" '
    /^brigade_orders_accept_to_paid_seconds_bucket/ {
      le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le)
      if (!p50 && $NF >= c * 0.5) p50 = le
      if (!p99 && $NF >= c * 0.99) p99 = le
    } END { print p50 " " p99 }')
  printf '%s\t%s\t%s\t%s\n' "$round" "$accepted" "$(awk -v s="$sum" -v c="$count" 'BEGIN { printf "%.0f", s / c * 1000 }')" "$quantiles" >>"$WORK/paid"
  say "  round $round  $accepted orders accepted, all paid; accept→paid mean $(tail -n1 "$WORK/paid" | cut -f3) ms, p50 ≤ $(echo "$quantiles" | cut -d' ' -f1) s, p99 ≤ $(echo "$quantiles" | cut -d' ' -f2) s"
  stop
done

echo
echo "Orders: wrk -t2 -c$CONNECTIONS -d$DURATION; POST /v1/orders (one line, a fresh Idempotency-Key each) and POST /v1/products side by side; brigade up at shipped defaults (SQLite, embedded broker); $ROUNDS rounds, medians"
echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)); $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo '+changes')"
echo
awk -F'\t' '
'"$MEDIAN_AWK"'
  { if (!($1 in rps)) order[++n] = $1; rps[$1] = rps[$1] " " $3; p50[$1] = p50[$1] " " $4; p99[$1] = p99[$1] " " $5 }
  END {
    printf "| %-14s | %8s | %-24s | %8s | %8s |\n", "request", "per s", "per round", "p50 ms", "p99 ms"
    printf "|%s|%s|%s|%s|%s|\n", "----------------", "---------:", "--------------------------", "---------:", "---------:"
    for (i = 1; i <= n; i++) { s = order[i]
      printf "| %-14s | %8.0f | %-24s | %8.2f | %8.2f |\n", s, median(rps[s]), rps[s], median(p50[s]), median(p99[s]) }
    printf "\norder accept / product create: %.2fx requests/s\n", median(rps["order accept"]) / median(rps["product create"])
  }' "$WORK/results"
echo
awk -F'\t' '{ printf "round %s: %s orders, every one PAID; accept→paid mean %s ms, p50 ≤ %s s, p99 ≤ %s s\n", $1, $2, $3, substr($4, 1, index($4, " ") - 1), substr($4, index($4, " ") + 1) }' "$WORK/paid"
