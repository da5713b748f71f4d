#!/usr/bin/env bash
# GraphiQL in a real browser: start `brigade up` on free ports with a fresh, unseeded data
# directory, create a product through catalog's REST API, then let graphiql.mjs drive
# Debian's Chromium (headless, through playwright-core) over the gateway's /graphiql: the
# page must load with nothing but 127.0.0.1 (no CDN), show no error, load the schema
# (the docs explorer shows Query) and run a query whose answer holds that product.
# Screenshot: target/browser/graphiql.png.
#
# Installs what a new machine lacks: Debian's `chromium` (apt-get, when not on PATH) and
# playwright-core from npm, pinned, under target/playwright. Needs Node 20+ and npm.
# Usage: contract-tests/browser/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$here/tools.sh"
browser_tools

. "$root/contract-tests/lib.sh"
# No demo data: the only product is the one created below, so the answer GraphiQL shows
# can only have come from it.
export BRIGADE_SEED_DEMO_DATA=false
start_brigade
catalog="$(service_url catalog)"
gateway="$(service_url gateway)"

# Both services ready (30 s at most), then one product through catalog's REST API, with
# the internal identity token catalog requires. GraphiQL's query itself is a public read
# at the gateway: the page needs no API key.
for url in "$catalog" "$gateway"; do
  ready=""
  for _ in $(seq 1 60); do
    if [ "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ]; then
      ready=1
      break
    fi
    sleep 0.5
  done
  [ -n "$ready" ] || { echo "$url is not ready after 30 s" >&2; tail -n 50 "$BRIGADE_ERR"; exit 1; }
done
created="$(curl -s --max-time 10 -w '\n%{http_code}' -X POST "$catalog/v1/products" \
  -H 'Content-Type: application/json' -H "Idempotency-Key: browser-graphiql-$$" \
  -H "x-brigade-identity: $BRIGADE_TOKEN" \
  -d '{"name": "Laptop", "price": 999.99, "stock": 50}')"
if [ "$(tail -n 1 <<<"$created")" != 201 ]; then
  echo "POST $catalog/v1/products did not answer 201:" >&2
  printf '%s\n' "$created" >&2
  exit 1
fi
echo "== created product: $(head -n 1 <<<"$created")"

echo "== GraphiQL in Chromium at $gateway/graphiql"
mkdir -p "$root/target/browser"
status=0
GATEWAY_URL="$gateway" PLAYWRIGHT_DIR="$prefix" CHROMIUM="$(command -v chromium)" \
  SCREENSHOT="$root/target/browser/graphiql.png" node "$here/graphiql.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== brigade's log (warnings and errors)"
  tail -n 50 "$BRIGADE_ERR"
fi
exit "$status"
