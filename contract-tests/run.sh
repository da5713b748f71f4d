#!/usr/bin/env bash
# Property-based tests from the contract: start `brigade up` on free ports with a fresh
# data directory, run Schemathesis with every check (ours in hooks.py among them) against
# each REST service's /openapi.json, the gateway's merged /openapi.json (the public REST
# API, through the door) and, from its schema, the gateway's GraphQL — its phases include
# stateful sequences along the documents' links (create -> get -> patch -> delete) — and
# stop Brigade. Fails on any server error or any response that violates the document.
# Usage: contract-tests/run.sh [seconds-per-service]
# SCHEMATHESIS_SERVICES picks runs (default: all of them): catalog, accounts, orders,
# payments-sandbox (each on its own port), gateway-rest (the gateway's REST face) and
# gateway (its GraphQL).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
budget="${1:-90}"
# A new seed every run, printed, so every run explores other inputs and a failure can be
# replayed: SCHEMATHESIS_SEED=<seed> contract-tests/run.sh
seed="${SCHEMATHESIS_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "== schemathesis seed $seed (replay with SCHEMATHESIS_SEED=$seed $0)"
. "$here/lib.sh"
venv="${SCHEMATHESIS_VENV:-$root/target/schemathesis-venv}"

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi

start_brigade

status=0
for service in ${SCHEMATHESIS_SERVICES:-catalog accounts orders payments-sandbox}; do
  # The gateway's two faces have their own runs below: REST (gateway-rest) and GraphQL
  # (gateway).
  case "$service" in gateway | gateway-rest) continue ;; esac
  url="$(service_url "$service")"
  echo "== schemathesis: $service at $url"
  # One worker: with two, hypothesis parses lambda sources from two threads at once and
  # CPython 3.11's ast.parse can fail with "AST constructor recursion depth mismatch"
  # (a runtime error in the tool, not a finding; seen in CI on 2026-11-26).
  # Each service's own port, with the internal identity token on every call (catalog,
  # accounts and orders refuse calls without one, 401, which would test nothing else).
  (cd "$here" && "$venv/bin/st" run "$url/openapi.json" --checks all \
      -H "x-brigade-identity: $BRIGADE_TOKEN" \
      --max-time "$budget" --workers 1 --seed "$seed" --no-color) || status=1
done
# The gateway's REST face, from the one merged document it serves for the whole public
# REST API (openapi/gateway.json): every operation forwarded to its owning service, with
# the gateway's own answers (401, 403, 429) documented. With a secret API key (every
# scope), so that writes get past the door; the negative phases may still send calls
# without a valid key, and their 401 is documented.
if [ -z "${SCHEMATHESIS_SERVICES:-}" ] || [[ " $SCHEMATHESIS_SERVICES " == *" gateway-rest "* ]]; then
  url="$(service_url gateway)"
  echo "== schemathesis: gateway REST at $url"
  (cd "$here" && "$venv/bin/st" run "$url/openapi.json" --checks all \
      -H "Authorization: Bearer $BRIGADE_API_KEY" \
      --max-time "$budget" --workers 1 --seed "$seed" --no-color) || status=1
fi
# The gateway's GraphQL, from its schema (introspection, on in development): every
# generated query and mutation must be answered without a server error. With a secret
# API key: without one every mutation is refused before it runs, and would test nothing.
if [ -z "${SCHEMATHESIS_SERVICES:-}" ] || [[ " $SCHEMATHESIS_SERVICES " == *" gateway "* ]]; then
  url="$(service_url gateway)/graphql"
  echo "== schemathesis: gateway GraphQL at $url"
  (cd "$here/graphql" && "$venv/bin/st" --config-file schemathesis.toml run "$url" \
      --checks not_a_server_error -H "Authorization: Bearer $BRIGADE_API_KEY" \
      --max-time "$budget" --workers 1 --seed "$seed" --no-color) || status=1
fi
exit $status
