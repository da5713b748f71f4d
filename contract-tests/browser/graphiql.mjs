// The gateway's GraphiQL page in a real browser (Debian's Chromium, headless, driven by
// playwright-core), as a person would use it:
//
// - every request that is not to 127.0.0.1 is blocked, and any attempt fails the test:
//   the page's scripts and styles must come from the gateway (no CDN);
// - any uncaught page error, console error or failed (>= 400) response fails it;
// - the query is typed into the query editor, the run button clicked, and the response
//   pane must show the product run.sh created ("Laptop");
// - the docs explorer must show the schema's root type, Query (introspection worked).
//
// A screenshot of the page with the answer is saved to $SCREENSHOT.
//
// Usage: GATEWAY_URL=http://127.0.0.1:8080 PLAYWRIGHT_DIR=target/playwright \
//        CHROMIUM=/usr/bin/chromium SCREENSHOT=target/browser/graphiql.png \
//        node graphiql.mjs                      (run.sh does all of this)

import { createRequire } from "node:module";
import path from "node:path";
import { watchedPage } from "./watched.mjs";

const gateway = process.env.GATEWAY_URL;
const playwrightDir = process.env.PLAYWRIGHT_DIR;
const screenshot = process.env.SCREENSHOT;
if (!gateway || !playwrightDir || !screenshot) {
  console.error("set GATEWAY_URL, PLAYWRIGHT_DIR (where playwright-core is installed) and SCREENSHOT");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(playwrightDir), "node_modules", "_"));
const { chromium } = require("playwright-core");

const QUERY = "{ products(limit: 5) { id name price } }";
const EXPECTED = "Laptop";
const STEP_MS = 15_000;

const graphqlBodies = [];
let step = "launching Chromium";

const { browser, page, problems, blocked } = await watchedPage(chromium, {
  viewport: { width: 1440, height: 900 },
  timeout: STEP_MS,
});
let failure;
try {
  page.on("request", (r) => {
    if (r.method() === "POST" && new URL(r.url()).pathname === "/graphql") {
      graphqlBodies.push(r.postData() ?? "");
    }
  });

  step = `opening ${gateway}/graphiql`;
  const response = await page.goto(`${gateway}/graphiql`, { waitUntil: "load" });
  if (!response || response.status() !== 200) {
    throw new Error(`GET /graphiql answered ${response ? response.status() : "nothing"}`);
  }

  step = "waiting for GraphiQL's query editor and run button";
  const editor = page.locator(".graphiql-query-editor .CodeMirror");
  await editor.waitFor({ state: "visible" });
  const run = page.locator("button.graphiql-execute-button");
  await run.waitFor({ state: "visible" });

  // Typed as a person would (click, select all, type), but as one insertion: key-by-key
  // typing would meet the editor's auto-closed brackets.
  step = "entering the query into the query editor";
  await editor.locator(".CodeMirror-lines").click();
  await page.keyboard.press("ControlOrMeta+a");
  await page.keyboard.insertText(QUERY);
  const typed = await editor.evaluate((el) => el.CodeMirror.getValue());
  if (typed.trim() !== QUERY) {
    throw new Error(`the query editor holds ${JSON.stringify(typed)}, not ${JSON.stringify(QUERY)}`);
  }

  step = "running the query and waiting for the response pane to show the product";
  const before = graphqlBodies.length;
  await run.click();
  const result = page.locator(".graphiql-response .CodeMirror");
  const deadline = Date.now() + STEP_MS;
  let text = "";
  for (;;) {
    text = (await result.count()) ? await result.evaluate((el) => el.CodeMirror.getValue()) : "";
    if (text.includes(EXPECTED)) break;
    if (Date.now() > deadline) {
      throw new Error(`the response pane did not show ${EXPECTED} within ${STEP_MS / 1000} s; it holds:\n${text}`);
    }
    await page.waitForTimeout(100);
  }
  const answer = JSON.parse(text);
  if (answer.errors) throw new Error(`the query answered errors: ${JSON.stringify(answer.errors)}`);
  if (!answer.data?.products?.some((p) => p.name === EXPECTED)) {
    throw new Error(`no product named ${EXPECTED} in the answer: ${text}`);
  }
  const sent = graphqlBodies.slice(before).map((b) => JSON.parse(b).query?.trim());
  if (!sent.includes(QUERY)) {
    throw new Error(`no POST /graphql carried the query; sent: ${JSON.stringify(sent)}`);
  }
  // What a person sees, not only the editor's model.
  await page.locator(".graphiql-response", { hasText: EXPECTED }).waitFor({ state: "visible" });
  console.log(`ok: the response pane shows ${JSON.stringify(answer.data)}`);

  step = "opening the docs explorer and waiting for the schema's root type Query";
  await page.getByRole("button", { name: "Show Documentation Explorer" }).click();
  const docs = page.locator(".graphiql-doc-explorer");
  await docs.waitFor({ state: "visible" });
  await docs.locator("a.graphiql-doc-explorer-type-name", { hasText: /^Query$/ }).first().waitFor({ state: "visible" });
  console.log("ok: the docs explorer shows the schema's root type Query");
  step = "taking the screenshot";
  await page.screenshot({ path: screenshot });
  console.log(`ok: screenshot at ${screenshot}`);
} catch (e) {
  failure = e;
  await page.screenshot({ path: screenshot }).catch(() => {});
} finally {
  await browser.close();
}

if (blocked.length) {
  problems.unshift(...blocked.map((u) => `a request off 127.0.0.1 was attempted (blocked): ${u}`));
}
if (failure) problems.unshift(`failed while ${step}: ${failure.message.split("\n")[0]}`);
if (problems.length) {
  console.error(`GraphiQL in Chromium: ${problems.length} problem(s) (screenshot: ${screenshot}):`);
  for (const p of problems) console.error(`- ${p}`);
  if (failure) console.error(failure.stack ?? String(failure));
  process.exit(1);
}
console.log("GraphiQL in Chromium: passed");
