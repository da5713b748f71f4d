#!/usr/bin/env bash
# gRPC-Web with real gRPC-Web clients, no proxy: install the pinned npm packages, compile
# the proto files into a descriptor set (buf, from npm), start `brigade up` on free ports
# with a fresh data directory, run test.mjs against catalog's port, stop Brigade.
# Needs Node 20+ and npm. Usage: contract-tests/grpc-web/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

cargo build --quiet -p brigade
work="$(mktemp -d)"
out="$work/up.out"
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$here/node_modules/.bin/buf" build "$root/proto" -o "$work/descriptors.binpb"

env BRIGADE_LOG__FILTER=warn \
  BRIGADE_SERVICES__GATEWAY__PORT=0 BRIGADE_SERVICES__CATALOG__PORT=0 \
  BRIGADE_SERVICES__ACCOUNTS__PORT=0 BRIGADE_SERVICES__ORDERS__PORT=0 \
  BRIGADE_SERVICES__BILLING__PORT=0 \
  "$root/target/debug/brigade" up --data-dir "$work/data" >"$out" 2>"$work/up.err" &
pid=$!

for _ in $(seq 1 120); do
  grep -q "Press Ctrl-C" "$out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { echo "brigade exited during start-up"; cat "$work/up.err"; exit 1; }
  sleep 0.5
done
grep -q "Press Ctrl-C" "$out" || { echo "brigade did not start"; cat "$work/up.err"; exit 1; }

url="$(awk '$1 == "catalog" { print $2 }' "$out")"
echo "== gRPC-Web: catalog at $url"
status=0
(cd "$here" && CATALOG_URL="$url" DESCRIPTORS="$work/descriptors.binpb" \
  node --test-reporter=./reporter.mjs test.mjs) || status=$?
if [ "$status" -ne 0 ]; then
  echo "== brigade's log (warnings and errors)"
  tail -n 50 "$work/up.err"
fi
exit "$status"
