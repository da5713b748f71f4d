# Shared by the benchmark scripts: source it after defining `say` and `die`.
#
#   . bench/lib.sh
#   TARGET_DIR=$(target_dir)
#   BRIGADE_ENV=(); brigade_env "$LOG_FILTER"      # env for Brigade at its shipped defaults
#   url=$(wait_for_url "$WORK/x.out" "$pid" name)

# Installs wrk with apt-get when it is missing (sudo when not root).
need_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  say "wrk is missing; installing it with apt-get"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update
  $sudo apt-get install -y wrk
}

# utime+stime of process $1 (all its threads), in clock ticks (`getconf CLK_TCK`). The
# command name may hold spaces, so fields are counted after its closing parenthesis:
# after "pid (comm) ", state is 1 ... utime 12, stime 13. Dies (`die`) once it is gone.
cpu_ticks() {
  local stat
  stat=$(cat "/proc/$1/stat") || die "server $1 is gone"
  stat=${stat##*) }
  awk '{ print $12 + $13 }' <<<"$stat"
}

# Seconds of a wrk duration: "10s", "2m", "500ms".
seconds_of() {
  case $1 in
    *ms) awk -v v="${1%ms}" 'BEGIN { print v / 1000 }' ;;
    *s) printf '%s\n' "${1%s}" ;;
    *m) awk -v v="${1%m}" 'BEGIN { print v * 60 }' ;;
    *) printf '%s\n' "$1" ;;
  esac
}

# Cargo's target directory (where the release binaries are).
target_dir() {
  cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

# Fills BRIGADE_ENV: explicit settings only, so a BRIGADE_CONFIG or BRIGADE_LOG__FILTER in
# the caller's environment cannot change what is measured. JSON logs, as when stderr is
# not a terminal; the log filter is Brigade's shipped default unless $1 names another.
brigade_env() {
  BRIGADE_ENV=(env -u BRIGADE_CONFIG -u BRIGADE_LOG__FILTER BRIGADE_LOG__FORMAT=json)
  if [ -n "${1:-}" ]; then BRIGADE_ENV+=(BRIGADE_LOG__FILTER="$1"); fi
}

# Waits (60 s at most) until FILE holds an http://127.0.0.1:PORT URL printed by process
# PID, and prints it. Dies with the process's stderr (FILE with .err for .out) if it exits.
wait_for_url() {
  local file=$1 pid=$2 name=$3 url=""
  for _ in $(seq 1 600); do
    url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$file" 2>/dev/null | head -n1 || true)
    if [ -n "$url" ]; then printf '%s\n' "$url"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      cat "${file%.out}.err" >&2 2>/dev/null || true
      die "$name exited early"
    fi
    sleep 0.1
  done
  die "$name did not start within 60 s"
}

# A wrk latency ("812.00us", "3.87ms", "1.20s") in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000 }
    else print v }'
}

# awk's median(list): the median of a space-separated list of numbers. Scripts put it in
# front of their own program: awk "$MEDIAN_AWK"' { ... median(x) ... }'.
MEDIAN_AWK='
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
'

# Whether brigade binary $1 has `internal-token`: a build from before the services took
# calls only with an internal identity token has not, and needs none.
has_internal_token() {
  "$1" internal-token --help >/dev/null 2>&1
}

# internal_token BIN DATA_DIR [TTL]: prints an internal identity token for calling
# catalog, accounts, orders or billing directly (header `x-brigade-identity`), as the
# gateway does: `BIN internal-token` on DATA_DIR, the data directory the services use (the
# signing key is DATA_DIR/internal.key, made if absent, so before or after they start).
# Valid for TTL (2h: longer than any run). Prints nothing when BIN predates the command
# (such a build takes calls without a token). Runs with BRIGADE_ENV (brigade_env), so it
# reads the configuration the servers read.
internal_token() {
  local bin=$1 dir=$2 ttl=${3:-2h} out err
  has_internal_token "$bin" || return 0
  err=$(mktemp)
  out=$(env ${BRIGADE_ENV[@]+"${BRIGADE_ENV[@]}"} "$bin" internal-token --data-dir "$dir" --ttl "$ttl" \
    2>"$err") || { cat "$err" >&2; rm -f "$err"; die "brigade internal-token failed"; }
  rm -f "$err"
  [ -n "$out" ] || die "brigade internal-token printed no token"
  tail -n 1 <<<"$out"
}

# identity_args TOKEN: fills IDENTITY with the arguments that send TOKEN to a service, the
# same for curl, wrk and h2load (-H "x-brigade-identity: TOKEN"); empty for no token.
identity_args() {
  IDENTITY=()
  if [ -n "${1:-}" ]; then IDENTITY=(-H "x-brigade-identity: $1"); fi
}

# open_catalog BIN DATA_DIR OUT_PREFIX [WRAPPER...]: starts a catalog on DATA_DIR, a free
# port, that takes calls without an identity token (identity.require_internal_token =
# false), for bench's Rust tools: bare-rest, bare-grpc, grpc-layers and wire-size copy
# Brigade's answers with `--from URL`, and grpc-load calls Brigade, and none of them can
# send a token (crates/bench has no option for it). Same binary, same data: the same
# bytes as the catalog measured. WRAPPER (e.g. `taskset -c 0`, which execs) goes in front
# of BIN. Sets OPEN_PID (the server's own pid) and OPEN_URL; the caller stops it. With a
# BIN that predates the token, a plain catalog.
open_catalog() {
  local bin=$1 dir=$2 out=$3 open=()
  shift 3
  if has_internal_token "$bin"; then open=(BRIGADE_IDENTITY__REQUIRE_INTERNAL_TOKEN=false); fi
  env ${open[@]+"${open[@]}"} ${BRIGADE_ENV[@]+"${BRIGADE_ENV[@]}"} "$@" "$bin" serve catalog \
    --data-dir "$dir" --port 0 >"$out.out" 2>"$out.err" &
  OPEN_PID=$!
  OPEN_URL=$(wait_for_url "$out.out" "$OPEN_PID" "catalog without the token check")
}
