// A page in Debian's Chromium (headless, through playwright-core) that may reach nothing
// but 127.0.0.1, with every problem it meets written down: a request off 127.0.0.1
// (blocked, and listed in `blocked`), an uncaught page error, a console error, a
// response of 400 or more, and (unless `failedRequests: false`) a request that failed.
// Shared by the browser tests (graphiql.mjs, dashboard.mjs).

export function allowed(url) {
  const u = new URL(url);
  if (u.protocol === "data:" || u.protocol === "blob:" || u.protocol === "about:") return true;
  return u.hostname === "127.0.0.1";
}

export async function watchedPage(chromium, { viewport, timeout, failedRequests = true }) {
  const problems = [];
  const blocked = [];
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox"],
    timeout: 60_000,
  });
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(timeout);
  // Service workers could fetch around page.route; neither page registers one, but be sure.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (allowed(url)) return route.continue();
    blocked.push(url);
    return route.abort("blockedbyclient");
  });
  const page = await context.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });
  if (failedRequests) {
    page.on("requestfailed", (r) => {
      if (allowed(r.url())) problems.push(`request failed: ${r.url()} (${r.failure()?.errorText})`);
    });
  }
  page.on("websocket", (ws) => {
    if (!allowed(ws.url().replace(/^ws/, "http"))) blocked.push(ws.url());
  });
  return { browser, page, problems, blocked };
}
