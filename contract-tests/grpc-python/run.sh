#!/usr/bin/env bash
# A client that is not ours: start `brigade up` on free ports with a fresh data directory,
# generate a Python gRPC client from proto/ with grpcio-tools (into a temporary directory,
# at test time) and run test_catalog.py against the catalog service, then stop Brigade.
# Fails on any failed check. Usage: contract-tests/grpc-python/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$(dirname "$here")")"
venv="${GRPC_PYTHON_VENV:-$root/target/grpc-python-venv}"

# The venv is reused while it was installed from this very requirements.txt.
if ! cmp -s "$here/requirements.txt" "$venv/.installed-requirements.txt" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/.installed-requirements.txt"
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

url="$(awk '$1 == "catalog" { print $2 }' "$out")"
[ -n "$url" ] || { echo "no catalog URL in brigade's table:"; cat "$out"; exit 1; }
echo "== grpc-python: catalog at $url"
status=0
"$venv/bin/python" "$here/test_catalog.py" "$url" "$root/proto" || status=$?
if [ $status -ne 0 ]; then
  echo "-- brigade's log (warnings and errors):"
  tail -n 40 "$data/up.err"
fi
exit $status
