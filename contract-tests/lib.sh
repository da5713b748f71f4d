# Shared by the contract-test scripts: source it, do not run it.
#
#   . "$(dirname "$0")/lib.sh"            (or the path from a subfolder)
#   requirements_venv "$venv" "$here/requirements.txt"
#   start_brigade                          # brigade up on free ports, fresh data dir
#   url="$(service_url catalog)"
#   curl -H "x-brigade-identity: $BRIGADE_TOKEN" "$url/v1/products/1"
#   curl -H "Authorization: Bearer $BRIGADE_API_KEY" "$(service_url gateway)/v1/orders"
#
# start_brigade sets BRIGADE_WORK (a temporary directory, removed on exit),
# BRIGADE_OUT and BRIGADE_ERR (brigade's stdout and stderr), BRIGADE_TOKEN (an internal
# identity token: catalog, accounts, orders and billing refuse calls without one) and
# BRIGADE_API_KEY (a secret key, every scope, for the gateway), and stops Brigade on exit.
# None of these is exported, nor may be: brigade reads every BRIGADE_* variable of its
# environment as configuration and refuses unknown ones. Pass them on under other names.

contract_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# A venv at $1 with the packages of requirements file $2; reused while it was installed
# from that very file.
requirements_venv() {
  local venv=$1 requirements=$2
  if ! cmp -s "$requirements" "$venv/.installed-requirements.txt" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.installed-requirements.txt"
  fi
}

BRIGADE_PID=
BRIGADE_WORK=
stop_brigade() {
  if [ -n "$BRIGADE_PID" ]; then
    kill "$BRIGADE_PID" 2>/dev/null || true
    wait "$BRIGADE_PID" 2>/dev/null || true
  fi
  if [ -n "$BRIGADE_WORK" ]; then rm -rf "$BRIGADE_WORK"; fi
}

# An internal identity token for the data directory of start_brigade, printed: what a
# direct call to catalog, accounts, orders or billing sends as `x-brigade-identity` (the
# gateway sends its own). It acts for client $1 (default contract-tests), whose
# idempotency keys are its own, and lasts 2 h: longer than any run.
internal_token() {
  "$contract_root/target/debug/brigade" internal-token --data-dir "$BRIGADE_WORK/data" \
    --ttl 2h --client "${1:-contract-tests}"
}

# A new secret API key (every scope) named $1 (default ci), printed: `keys create` prints
# a description, then the key on its last line. The gateway loads keys at start and then
# every 2 s, so one made before `brigade up` works at once.
api_key() {
  local out
  out="$("$contract_root/target/debug/brigade" keys create --name "${1:-ci}" \
    --data-dir "$BRIGADE_WORK/data" 2>"$BRIGADE_WORK/keys.err")" \
    || { echo "brigade keys create failed:" >&2; cat "$BRIGADE_WORK/keys.err" >&2; return 1; }
  tail -n 1 <<<"$out"
}

# Builds brigade and runs `brigade up` on free ports with a fresh data directory until
# it prints its table (60 s at most). Exits the script, with brigade's log, on failure.
# The token and the key are made first, in the new data directory: the key is then in the
# gateway's first load, and `brigade up` reads the signing key the token was made with.
# The gateway's cost bucket and its rate limits (per key, per address) are made bottomless
# for the fuzzer, whose thousands of queries from one key would otherwise mostly come back
# THROTTLED or 429 and test nothing (a single query's maximum cost still holds).
start_brigade() {
  cargo build --quiet -p brigade
  BRIGADE_WORK="$(mktemp -d)"
  BRIGADE_OUT="$BRIGADE_WORK/up.out"
  BRIGADE_ERR="$BRIGADE_WORK/up.err"
  trap stop_brigade EXIT
  BRIGADE_TOKEN="$(internal_token)" || { echo "brigade internal-token failed"; exit 1; }
  BRIGADE_API_KEY="$(api_key ci)" || exit 1
  env BRIGADE_LOG__FILTER=warn \
    BRIGADE_SERVICES__GATEWAY__PORT=0 BRIGADE_SERVICES__CATALOG__PORT=0 \
    BRIGADE_SERVICES__ACCOUNTS__PORT=0 BRIGADE_SERVICES__ORDERS__PORT=0 \
    BRIGADE_SERVICES__BILLING__PORT=0 BRIGADE_SERVICES__PAYMENTS_SANDBOX__PORT=0 \
    BRIGADE_GATEWAY__GRAPHQL__BUCKET_SIZE=1000000 BRIGADE_GATEWAY__GRAPHQL__RESTORE_RATE=1000000 \
    BRIGADE_GATEWAY__LIMITS__PER_KEY__PER_SECOND=1000000 BRIGADE_GATEWAY__LIMITS__PER_KEY__BURST=1000000 \
    BRIGADE_GATEWAY__LIMITS__ANONYMOUS__PER_SECOND=1000000 BRIGADE_GATEWAY__LIMITS__ANONYMOUS__BURST=1000000 \
    "$contract_root/target/debug/brigade" up --data-dir "$BRIGADE_WORK/data" \
    >"$BRIGADE_OUT" 2>"$BRIGADE_ERR" &
  BRIGADE_PID=$!
  for _ in $(seq 1 120); do
    grep -q "Press Ctrl-C" "$BRIGADE_OUT" 2>/dev/null && return 0
    if ! kill -0 "$BRIGADE_PID" 2>/dev/null; then
      echo "brigade exited during start-up"
      cat "$BRIGADE_ERR"
      exit 1
    fi
    sleep 0.5
  done
  echo "brigade did not start within 60 s"
  cat "$BRIGADE_ERR"
  exit 1
}

# The URL brigade's table gives for service $1.
service_url() {
  local url
  url="$(awk -v s="$1" '$1 == s { print $2 }' "$BRIGADE_OUT")"
  if [ -z "$url" ]; then
    echo "no $1 URL in brigade's table:" >&2
    cat "$BRIGADE_OUT" >&2
    exit 1
  fi
  printf '%s\n' "$url"
}
