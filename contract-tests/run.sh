#!/usr/bin/env bash
# Property-based tests from the contract: start `brigade up` on free ports with a fresh
# data directory, run Schemathesis with every check against each REST service's
# /openapi.json, stop Brigade. Fails on any server error or any response that violates
# the document. Usage: contract-tests/run.sh [seconds-per-service]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
budget="${1:-90}"
venv="${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}"

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi

cargo build --quiet -p brigade
data="$(mktemp -d)"
out="$data/up.out"
env BRIGADE_LOG__FILTER=warn \
  BRIGADE_SERVICES__GATEWAY__PORT=0 BRIGADE_SERVICES__CATALOG__PORT=0 \
  BRIGADE_SERVICES__ACCOUNTS__PORT=0 BRIGADE_SERVICES__ORDERS__PORT=0 \
  BRIGADE_SERVICES__BILLING__PORT=0 \
  "$root/target/debug/brigade" up --data-dir "$data/data" >"$out" 2>"$data/up.err" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT

for _ in $(seq 1 120); do
  grep -q "Press Ctrl-C" "$out" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$data/up.err"; exit 1; }
  sleep 0.5
done
grep -q "Press Ctrl-C" "$out" || { echo "brigade did not start"; cat "$data/up.err"; exit 1; }

status=0
for service in catalog accounts; do
  url="$(awk -v s="$service" '$1 == s { print $2 }' "$out")"
  echo "== schemathesis: $service at $url"
  (cd "$here" && "$venv/bin/st" run "$url/openapi.json" --checks all \
      --max-time "$budget" --workers 2 --seed 1 --no-color) || status=1
done
exit $status
