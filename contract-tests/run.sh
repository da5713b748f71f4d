#!/usr/bin/env bash
# Property-based tests from the contract: start `brigade up` on free ports with a fresh
# data directory, run Schemathesis with every check against each REST service's
# /openapi.json, stop Brigade. Fails on any server error or any response that violates
# the document. Usage: contract-tests/run.sh [seconds-per-service]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
budget="${1:-90}"
. "$here/lib.sh"
venv="${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}"

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi

start_brigade

status=0
for service in catalog accounts; do
  url="$(service_url "$service")"
  echo "== schemathesis: $service at $url"
  (cd "$here" && "$venv/bin/st" run "$url/openapi.json" --checks all \
      --max-time "$budget" --workers 2 --seed 1 --no-color) || status=1
done
exit $status
