// The gateway's live dashboard in a real browser (Debian's Chromium, headless, through
// playwright-core) while the system is under load, as a person watching it would see it:
//
// - nothing is fetched off 127.0.0.1 (no CDN); no page error, console error or failed
//   response (but the stream's own reconnects, which are allowed);
// - the topology shows every service;
// - counters move while traffic flows: the gateway's requests/s is above zero and the
//   count of PAID orders grows;
// - SIGKILL of the payments sandbox (billing's provider, its own process) turns billing's
//   edge to it red — its breaker open — within seconds, shown on the page;
// - the redrive button of order_processing is answered by orders (moved n);
// - when the gateway ends a stream (its lifetime, 5 s here) the page reconnects by itself;
// - the page's heap stays flat over a hundred-odd snapshots.
//
// Screenshots: $SCREENSHOT_DIR/dashboard.png (under load) and dashboard-breaker.png.
//
// Usage (dashboard.sh does all of this): GATEWAY_URL=… API_KEY_FOR_LOAD=… SANDBOX_PID=…
//   PLAYWRIGHT_DIR=target/playwright CHROMIUM=/usr/bin/chromium SCREENSHOT_DIR=target/browser
//   node dashboard.mjs

import { createRequire } from "node:module";
import path from "node:path";
import { watchedPage } from "./watched.mjs";

const gateway = process.env.GATEWAY_URL;
const key = process.env.API_KEY_FOR_LOAD;
const sandboxPid = Number(process.env.SANDBOX_PID);
const shots = process.env.SCREENSHOT_DIR;
if (!gateway || !key || !sandboxPid || !process.env.PLAYWRIGHT_DIR || !shots) {
  console.error("set GATEWAY_URL, API_KEY_FOR_LOAD, SANDBOX_PID, PLAYWRIGHT_DIR and SCREENSHOT_DIR");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(process.env.PLAYWRIGHT_DIR), "node_modules", "_"));
const { chromium } = require("playwright-core");

const SERVICES = ["gateway", "catalog", "accounts", "orders", "billing", "payments-sandbox"];
const BREAKER_WITHIN_MS = 20_000;
let step = "preparing a user and a product";

const auth = { Authorization: `Bearer ${key}`, "Content-Type": "application/json" };
async function call(method, url, body, extra = {}) {
  const r = await fetch(`${gateway}${url}`, {
    method, headers: { ...auth, ...extra }, body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10_000),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

// A user and a product to order, through the gateway.
const user = await call("POST", "/v1/users", { name: "Dash Board", email: `dash-${process.pid}@example.com` },
  { "Idempotency-Key": `dash-user-${process.pid}` });
const product = await call("POST", "/v1/products", { name: "Lamp", price: 12.5, stock: 1000000 },
  { "Idempotency-Key": `dash-product-${process.pid}` });
if (user.status !== 201 || product.status !== 201) {
  console.error(`setup failed: user ${user.status} ${JSON.stringify(user.body)}, product ${product.status} ${JSON.stringify(product.body)}`);
  process.exit(1);
}

// Load, all along: four clients placing orders and reading the product.
let loading = true;
let placed = 0;
let loadErrors = 0;
async function client(n) {
  let i = 0;
  while (loading) {
    try {
      const r = await call("POST", "/v1/orders", { user_id: user.body.id, items: [{ product_id: product.body.id, quantity: 1 }] },
        { "Idempotency-Key": `dash-${process.pid}-${n}-${i++}` });
      if (r.status === 202) placed++; else loadErrors++;
      await fetch(`${gateway}/v1/products/${product.body.id}`, { signal: AbortSignal.timeout(10_000) });
    } catch {
      loadErrors++;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
const load = [0, 1, 2, 3].map(client);

step = "launching Chromium";
// The stream's own request is cut when the page closes: not a problem.
const { browser, page, problems, blocked } = await watchedPage(chromium, {
  viewport: { width: 1440, height: 1400 },
  timeout: 30_000,
  failedRequests: false,
});
let failure;
try {
  step = `opening ${gateway}/dashboard`;
  const response = await page.goto(`${gateway}/dashboard`, { waitUntil: "load" });
  if (!response || response.status() !== 200) throw new Error(`GET /dashboard answered ${response?.status()}`);

  step = "waiting for the stream to go live";
  await page.locator('#status[data-state="live"]').waitFor();

  step = "waiting for every service in the topology";
  await page.waitForFunction((ids) => ids.every((id) => document.querySelector(`#topology [data-node="${id}"]`)), SERVICES);
  console.log(`ok: the topology shows ${SERVICES.join(", ")}`);

  step = "waiting for the gateway's requests/s to move above zero";
  const rate = () => page.locator('#services tr[data-key="gateway"] td').nth(2).textContent();
  await page.waitForFunction(() => {
    const cell = document.querySelector('#services tr[data-key="gateway"] td:nth-child(3)');
    return cell && Number(cell.textContent) > 0;
  });
  console.log(`ok: the gateway serves ${await rate()} requests/s on the page`);

  step = "waiting for the count of PAID orders to grow";
  const paid = async () => Number((await page.locator('#orders tr[data-key="PAID"] td').nth(1).textContent().catch(() => "0")) || 0);
  await page.locator('#orders tr[data-key="PAID"]').waitFor();
  const paidBefore = await paid();
  await page.waitForFunction((before) => {
    const cell = document.querySelector('#orders tr[data-key="PAID"] td:nth-child(2)');
    return cell && Number(cell.textContent) > before;
  }, paidBefore);
  console.log(`ok: PAID orders went from ${paidBefore} to ${await paid()} on the page`);

  step = "waiting for billing's edge to the sandbox, healthy";
  const edge = page.locator('#topology [data-edge="billing->payments-sandbox"]');
  await page.waitForFunction(() => document.querySelector('#topology [data-edge="billing->payments-sandbox"].ok'));
  await page.screenshot({ path: path.join(shots, "dashboard.png"), fullPage: true });
  console.log(`ok: billing → payments-sandbox is green (screenshot: ${shots}/dashboard.png)`);

  // The page's one action, as the browser sends it (its Origin, Sec-Fetch-Site and a
  // fresh Idempotency-Key): orders, the queue's consumer, answers what it moved.
  step = "pressing the redrive button of order_processing";
  await page.locator('#redrive button[data-queue="queue:order_processing"]').click();
  await page.waitForFunction(() => /^orders moved \d+ dead letter\(s\) back onto order_processing$/
    .test(document.querySelector("#redrive-result.ok")?.textContent || ""));
  console.log(`ok: the redrive button: ${await page.locator("#redrive-result").textContent()}`);

  step = "killing the sandbox and waiting for billing's edge to turn red";
  process.kill(sandboxPid, "SIGKILL");
  const killed = Date.now();
  // Red, and red because its breaker opened (not only a falling success rate).
  await page.waitForFunction(
    () => {
      const edge = document.querySelector('#topology [data-edge="billing->payments-sandbox"].bad');
      const cell = document.querySelector('#edges tr[data-key="billing->payments-sandbox"] td:nth-child(10)');
      return edge && cell && cell.textContent === "open";
    },
    undefined,
    { timeout: BREAKER_WITHIN_MS },
  );
  const after = Date.now() - killed;
  const breaker = await page.locator('#edges tr[data-key="billing->payments-sandbox"] td').nth(9).textContent();
  console.log(`ok: billing → payments-sandbox turned red ${(after / 1000).toFixed(1)} s after the SIGKILL (breaker ${breaker})`);
  await edge.scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, "dashboard-breaker.png"), fullPage: true });

  // The gateway ends each stream after its lifetime (dashboard.sh sets 5 s): the page
  // must go back to live by itself, and keep drawing new snapshots.
  step = "waiting for the page to reconnect after the server ended its stream";
  const updated = () => page.locator("#updated").textContent();
  await page.locator('#status[data-state="reconnecting"]').waitFor({ timeout: 15_000 });
  await page.locator('#status[data-state="live"]').waitFor({ timeout: 15_000 });
  const before = await updated();
  await page.waitForFunction((text) => document.querySelector("#updated").textContent !== text, before);
  console.log("ok: the stream ended and the page reconnected and went on drawing");

  // Memory stays flat in a page left open: the heap after a garbage collection, once
  // warm and again after many snapshots (one every 200 ms here), grows by < 2 MB.
  step = "measuring the page's heap across many snapshots";
  const cdp = await page.context().newCDPSession(page);
  const heap = async () => {
    await cdp.send("HeapProfiler.collectGarbage");
    return (await cdp.send("Runtime.getHeapUsage")).usedSize;
  };
  const rendered = () => page.evaluate(() => window.__snapshots || 0);
  const heapBefore = await heap();
  const countBefore = await rendered();
  await page.waitForTimeout(30_000);
  const heapAfter = await heap();
  const countAfter = await rendered();
  const grown = heapAfter - heapBefore;
  console.log(`ok: heap ${(heapBefore / 1e6).toFixed(2)} MB → ${(heapAfter / 1e6).toFixed(2)} MB over ${countAfter - countBefore} snapshots`);
  if (countAfter - countBefore < 50) throw new Error(`only ${countAfter - countBefore} snapshots drawn in 30 s`);
  if (grown > 2e6) throw new Error(`the page's heap grew by ${(grown / 1e6).toFixed(2)} MB over ${countAfter - countBefore} snapshots`);
} catch (e) {
  failure = e;
  await page.screenshot({ path: path.join(shots, "dashboard.png"), fullPage: true }).catch(() => {});
} finally {
  loading = false;
  await Promise.all(load);
  await browser.close();
}

console.log(`load: ${placed} orders accepted, ${loadErrors} refusals or errors`);
if (placed === 0) problems.push("no order was accepted: there was no load");
if (blocked.length) problems.unshift(...blocked.map((u) => `a request off 127.0.0.1 was attempted (blocked): ${u}`));
if (failure) problems.unshift(`failed while ${step}: ${failure.message.split("\n")[0]}`);
if (problems.length) {
  console.error(`the dashboard in Chromium: ${problems.length} problem(s):`);
  for (const p of problems) console.error(`- ${p}`);
  if (failure) console.error(failure.stack ?? String(failure));
  process.exit(1);
}
console.log("the dashboard in Chromium: passed");
