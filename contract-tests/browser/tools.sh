# Shared by the browser tests: source it. `browser_tools` installs what a new machine
# lacks: Debian's `chromium` (apt-get, when not on PATH) and playwright-core from npm,
# pinned, under $prefix (target/playwright unless PLAYWRIGHT_PREFIX says otherwise).
version="1.65.2"
prefix="${PLAYWRIGHT_PREFIX:-$root/target/playwright}"

browser_tools() {
  if ! command -v chromium >/dev/null; then
    echo "== installing Debian's chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
  if [ ! -f "$prefix/node_modules/playwright-core/package.json" ] \
    || [ "$(cat "$prefix/.version" 2>/dev/null || true)" != "$version" ]; then
    echo "== installing playwright-core $version under $prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "playwright-core@$version"
    echo "$version" >"$prefix/.version"
  fi
}
