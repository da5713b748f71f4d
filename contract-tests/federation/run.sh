#!/usr/bin/env bash
# Federation in CI: the owning services' subgraphs (graphql/subgraphs/, which a test keeps
# equal to what each service serves) composed by Apollo's own composition library, the
# composed API schema compared with the gateway's (graphql/schema.graphql) type by type
# and field by field, and then Apollo's router for Node (@apollo/gateway in @apollo/server)
# put in front of a running `brigade up` in place of our gateway: the same queries and
# mutations through both must answer the same data. A user who wants Apollo Router,
# Cosmo or Hive Gateway instead of ours composes the same files (see README, Federation).
# npm packages pinned, installed under target/federation.
#
# Usage: contract-tests/federation/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$(dirname "$here")")"
. "$root/contract-tests/lib.sh"
prefix="${FEDERATION_PREFIX:-$root/target/federation}"
packages="@apollo/composition@2.14.4 @apollo/gateway@2.14.4 @apollo/server@5.5.1 graphql@16.11.0"

if [ "$(cat "$prefix/.packages" 2>/dev/null || true)" != "$packages" ]; then
  rm -rf "$prefix"
  # shellcheck disable=SC2086  # one word per package
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error $packages
  echo "$packages" >"$prefix/.packages"
fi

start_brigade
# The router calls the subgraphs with an internal identity token (for a client of its own,
# whose idempotency keys are apart from our gateway's key's); our gateway gets the key.
IDENTITY_TOKEN="$(internal_token federation-router)" API_KEY="$BRIGADE_API_KEY" \
  NODE_PATH="$prefix/node_modules" node "$here/compose.cjs" \
  --subgraphs "$root/graphql/subgraphs" \
  --gateway-sdl "$root/graphql/schema.graphql" \
  --catalog "$(service_url catalog)" \
  --accounts "$(service_url accounts)" \
  --orders "$(service_url orders)" \
  --gateway "$(service_url gateway)"
