#!/usr/bin/env bash
# gRPC-Web with real gRPC-Web clients, no proxy: install the pinned npm packages, compile
# the proto files into a descriptor set (buf, from npm), start `brigade up` on free ports
# with a fresh data directory, run test.mjs against the gateway (the one door a browser
# can use, with an API key) and then against catalog's own port (with an internal
# identity token), stop Brigade. Fails if either run fails.
# Needs Node 20+ and npm. Usage: contract-tests/grpc-web/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

. "$root/contract-tests/lib.sh"
start_brigade
"$here/node_modules/.bin/buf" build "$root/proto" -o "$BRIGADE_WORK/descriptors.binpb"
status=0
# run_target NAME URL VAR=VALUE: test.mjs against NAME at URL with the credential given.
run_target() {
  local name=$1 url=$2 credential=$3
  echo "== gRPC-Web: $name at $url"
  (cd "$here" && env TARGET="$name" BASE_URL="$url" DESCRIPTORS="$BRIGADE_WORK/descriptors.binpb" \
    "$credential" node --test-reporter=./reporter.mjs test.mjs) || status=1
}
# The gateway: a secret API key (every scope), as a page would send it.
run_target gateway "$(service_url gateway)" "API_KEY=$BRIGADE_API_KEY"
# Catalog's own port: the internal identity token, without which it refuses every call.
run_target catalog "$(service_url catalog)" "IDENTITY_TOKEN=$BRIGADE_TOKEN"
if [ "$status" -ne 0 ]; then
  echo "== brigade's log (warnings and errors)"
  tail -n 50 "$BRIGADE_ERR"
fi
exit "$status"
