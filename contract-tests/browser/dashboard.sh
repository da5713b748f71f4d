#!/usr/bin/env bash
# The live dashboard in a real browser, against a running system under load: `brigade up`
# on free ports (fresh, unseeded data) whose billing charges through a payments sandbox
# of its own process (`brigade serve payments-sandbox`), so that the sandbox can be taken
# away. dashboard.mjs places orders and reads products through the gateway all along,
# drives Debian's Chromium (headless, playwright-core) over /dashboard and checks: every
# service in the topology, counters moving while traffic flows, and — once it kills the
# sandbox with SIGKILL — billing's edge to it turning red (its breaker open) within
# seconds; then the page's reconnect when the gateway ends its stream, and its heap over
# a hundred-odd snapshots, and that its redrive button is answered by orders. Screenshots: target/browser/dashboard.png (and
# dashboard-breaker.png).
#
# Installs what a new machine lacks (see tools.sh). Usage: contract-tests/browser/dashboard.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
. "$here/tools.sh"
browser_tools

. "$root/contract-tests/lib.sh"
cargo build --quiet -p brigade
brigade="$root/target/debug/brigade"

# The sandbox billing will charge through: its own process, its own data, a free port.
sandbox_dir="$(mktemp -d)"
sandbox_pid=
stop_sandbox() {
  if [ -n "$sandbox_pid" ]; then kill "$sandbox_pid" 2>/dev/null || true; fi
  rm -rf "$sandbox_dir"
}
env BRIGADE_LOG__FILTER=warn BRIGADE_SERVICES__PAYMENTS_SANDBOX__PORT=0 \
  "$brigade" serve payments-sandbox --data-dir "$sandbox_dir/data" \
  >"$sandbox_dir/out" 2>"$sandbox_dir/err" &
sandbox_pid=$!
sandbox=""
for _ in $(seq 1 60); do
  # `|| true`: until the child has opened its output file awk cannot read it (exit 2),
  # and under `set -e` that would end this script, silently.
  sandbox="$(awk '$1 == "payments-sandbox" { print $2 }' "$sandbox_dir/out" 2>/dev/null || true)"
  [ -n "$sandbox" ] && break
  sleep 0.5
done
[ -n "$sandbox" ] || { echo "the sandbox did not start:" >&2; cat "$sandbox_dir/err" >&2; stop_sandbox; exit 1; }
echo "== payments sandbox (its own process, pid $sandbox_pid) at $sandbox"

export BRIGADE_SEED_DEMO_DATA=false
# Billing's calls to the sandbox give up fast, so its breaker sees failures at once.
export BRIGADE_BILLING__PROVIDER_URL="$sandbox"
# Snapshots every 200 ms and streams that end after 5 s: the page's reconnect and its
# memory over many snapshots are checked in a minute, not an hour.
export BRIGADE_GATEWAY__DASHBOARD__INTERVAL=200ms
export BRIGADE_GATEWAY__DASHBOARD__STREAM_LIFETIME=5s
start_brigade
trap 'stop_brigade; stop_sandbox' EXIT
gateway="$(service_url gateway)"
for _ in $(seq 1 60); do
  [ "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$gateway/readyz")" = 200 ] && break
  sleep 0.5
done

echo "== the dashboard in Chromium at $gateway/dashboard"
mkdir -p "$root/target/browser"
status=0
GATEWAY_URL="$gateway" API_KEY_FOR_LOAD="$BRIGADE_API_KEY" SANDBOX_PID="$sandbox_pid" \
  PLAYWRIGHT_DIR="$prefix" CHROMIUM="$(command -v chromium)" \
  SCREENSHOT_DIR="$root/target/browser" node "$here/dashboard.mjs" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== brigade's log (warnings and errors)"
  tail -n 50 "$BRIGADE_ERR"
fi
exit "$status"
