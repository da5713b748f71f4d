#!/usr/bin/env bash
# A client that is not ours: start `brigade up` on free ports with a fresh data directory,
# generate a Python gRPC client from proto/ with grpcio-tools (into a temporary directory,
# at test time) and run test_catalog.py against the catalog and accounts services (with an
# internal identity token), then stop Brigade.
# Fails on any failed check. Usage: contract-tests/grpc-python/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$(dirname "$here")")"
venv="${GRPC_PYTHON_VENV:-$root/target/grpc-python-venv}"

. "$root/contract-tests/lib.sh"
requirements_venv "$venv" "$here/requirements.txt"
start_brigade
url="$(service_url catalog)"
accounts="$(service_url accounts)"
echo "== grpc-python: catalog at $url, accounts at $accounts"
status=0
# The internal identity token: catalog and accounts refuse calls without one.
IDENTITY_TOKEN="$BRIGADE_TOKEN" "$venv/bin/python" "$here/test_catalog.py" "$url" "$root/proto" \
  "$accounts" || status=$?
if [ $status -ne 0 ]; then
  echo "-- brigade's log (warnings and errors):"
  tail -n 40 "$BRIGADE_ERR"
fi
exit $status
