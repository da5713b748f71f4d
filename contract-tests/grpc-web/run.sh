#!/usr/bin/env bash
# gRPC-Web with real gRPC-Web clients, no proxy: install the pinned npm packages, compile
# the proto files into a descriptor set (buf, from npm), start `brigade up` on free ports
# with a fresh data directory, run test.mjs against catalog's port (with an internal
# identity token), stop Brigade.
# Needs Node 20+ and npm. Usage: contract-tests/grpc-web/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

. "$root/contract-tests/lib.sh"
start_brigade
"$here/node_modules/.bin/buf" build "$root/proto" -o "$BRIGADE_WORK/descriptors.binpb"
url="$(service_url catalog)"
echo "== gRPC-Web: catalog at $url"
status=0
# The internal identity token: catalog refuses calls without one.
(cd "$here" && CATALOG_URL="$url" DESCRIPTORS="$BRIGADE_WORK/descriptors.binpb" \
  IDENTITY_TOKEN="$BRIGADE_TOKEN" node --test-reporter=./reporter.mjs test.mjs) || status=$?
if [ "$status" -ne 0 ]; then
  echo "== brigade's log (warnings and errors)"
  tail -n 50 "$BRIGADE_ERR"
fi
exit "$status"
