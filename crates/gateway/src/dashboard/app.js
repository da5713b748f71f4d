// The dashboard's client: reads /dashboard/stream (server-sent events, through fetch so
// that a key can go in the Authorization header), keeps only the latest snapshot, and
// redraws. Reconnects with backoff; nothing accumulates while a tab stays open.
"use strict";

const KEY_STORE = "brigade.dashboard.key";
const LAYOUT = {
  "gateway": [90, 270],
  "catalog": [340, 80], "accounts": [340, 270], "orders": [340, 440],
  "stream:catalog-events": [620, 80], "stream:order-events": [620, 330], "queue:order_processing": [620, 480],
  "billing": [880, 330], "payments-sandbox": [880, 480],
};
const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 1) => v === null || v === undefined ? "–" : Number(v).toFixed(digits);
const pct = (v) => v === null || v === undefined ? "–" : (v * 100).toFixed(v >= 0.9995 ? 0 : 2) + " %";
const ms = (v) => v === null || v === undefined ? "–" : (v < 10 ? v.toFixed(2) : v.toFixed(0)) + " ms";
const label = (id) => id.replace(/^(queue|stream):/, "");

function health(edge) {
  if (edge.breaker === "open" || edge.breaker === "forced_open") return "bad";
  if (!edge.requests_per_second) return "idle";
  if (edge.success_rate === null || edge.success_rate === undefined) return "ok";
  if (edge.success_rate < 0.95) return "bad";
  if (edge.success_rate < 0.99) return "warn";
  return "ok";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tableId, rows) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows.map(({ cells, key }) => {
    const tr = document.createElement("tr");
    if (key) tr.dataset.key = key;
    tr.append(...cells);
    return tr;
  }));
}

function place(nodes) {
  const at = {};
  let spare = 0;
  for (const n of nodes) {
    at[n.id] = LAYOUT[n.id] || [90 + 160 * (spare++ % 6), 520];
  }
  return at;
}

const SVG = "http://www.w3.org/2000/svg";
function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawTopology(snap) {
  const svg = $("topology");
  const at = place(snap.nodes);
  const parts = [];
  const pairs = new Set(snap.edges.map((e) => e.from + "->" + e.to));
  for (const e of snap.edges) {
    const [a, b] = [at[e.from], at[e.to]];
    if (!a || !b) continue;
    // Both directions between two nodes (a stream's producer is often a consumer too):
    // each line a little to its own right, its label further out, so neither hides.
    const both = pairs.has(e.to + "->" + e.from);
    const len = Math.hypot(b[0] - a[0], b[1] - a[1]) || 1;
    const [nx, ny] = both ? [-(b[1] - a[1]) / len, (b[0] - a[0]) / len] : [0, 0];
    const [ox, oy] = [nx * 4, ny * 4];
    const g = el("g", { class: "edge " + health(e), "data-edge": e.from + "->" + e.to });
    g.append(el("line", { x1: a[0] + ox, y1: a[1] + oy, x2: b[0] + ox, y2: b[1] + oy }));
    const rate = fmt(e.requests_per_second) + "/s" + (e.retries_per_second ? " +" + fmt(e.retries_per_second) + " retries" : "");
    const [lx, ly] = both ? [nx * 16, ny * 16 + 4] : [0, -4];
    g.append(el("text", { x: (a[0] + b[0]) / 2 + lx, y: (a[1] + b[1]) / 2 + ly }, e.protocol + " · " + rate));
    g.append(el("title", {}, `${e.from} → ${e.to}: ${pct(e.success_rate)} ok, p99 ${ms(e.p99_ms)}, breaker ${e.breaker || "–"}`));
    parts.push(g);
  }
  for (const n of snap.nodes) {
    const [x, y] = at[n.id];
    const kind = n.kind === "service" ? "service" : "channel";
    const g = el("g", { class: `node ${kind}${n.up === false ? " down" : ""}`, "data-node": n.id, transform: `translate(${x - 75},${y - 28})` });
    g.append(el("rect", { width: 150, height: 56 }));
    g.append(el("text", { x: 75, y: 20, class: "name" }, label(n.id) + (n.up === false ? " · DOWN" : "")));
    let detail;
    if (n.kind === "service") detail = n.up === false ? (n.error || "down") : `${fmt(n.requests_per_second)}/s · ${pct(n.success_rate)} · p99 ${ms(n.p99_ms)}`;
    else if (n.kind === "queue") detail = `queue · ${fmt((n.depth || {}).ready || 0, 0)} ready · ${fmt(n.dead_letters, 0)} dead`;
    else detail = "stream · lag " + Object.entries(n.lag || {}).map(([g, v]) => `${g} ${v}`).join(", ");
    g.append(el("text", { x: 75, y: 40 }, detail));
    parts.push(g);
  }
  svg.replaceChildren(...parts);
}

function render(snap) {
  if (!Array.isArray(snap.nodes) || !Array.isArray(snap.edges)) return;
  // How many snapshots this page has drawn (the browser test reads it).
  window.__snapshots = (window.__snapshots || 0) + 1;
  drawTopology(snap);
  const services = snap.nodes.filter((n) => n.kind === "service");
  fill("services", services.map((n) => ({ key: n.id, cells: [
    cell(n.id), cell(n.up === false ? "down" : "up", n.up === false ? "bad" : "ok"),
    cell(fmt(n.requests_per_second)), cell(pct(n.success_rate)),
    cell(ms(n.p50_ms)), cell(ms(n.p95_ms)), cell(ms(n.p99_ms)),
    cell(fmt(n.unavailable_per_second, 2)), cell(fmt(n.deadlines_exceeded_per_second, 2)),
    cell(n.outbox_backlog === null || n.outbox_backlog === undefined ? "–" : String(n.outbox_backlog)),
  ] })));
  fill("edges", snap.edges.map((e) => ({ key: e.from + "->" + e.to, cells: [
    cell(label(e.from)), cell(label(e.to) + (e.group ? ` (${e.group})` : ""), "text"), cell(e.protocol, "text"),
    cell(fmt(e.requests_per_second)), cell(pct(e.success_rate), health(e)),
    cell(ms(e.p50_ms)), cell(ms(e.p95_ms)), cell(ms(e.p99_ms)),
    cell(fmt(e.retries_per_second, 2)), cell(e.breaker || "–", e.breaker && e.breaker !== "closed" ? "bad" : ""),
  ] })));
  fill("channels", snap.nodes.filter((n) => n.kind !== "service").map((n) => ({ key: n.id, cells: [
    cell(n.id),
    cell(n.kind === "queue" ? Object.entries(n.depth || {}).map(([s, v]) => `${s} ${v}`).join(" · ")
                            : Object.entries(n.lag || {}).map(([g, v]) => `${g} lag ${v}`).join(" · "), "text"),
    cell(n.kind === "queue" ? String(n.dead_letters) : "–", n.dead_letters ? "bad" : ""),
    cell(n.redrive ? n.redrive.command : "–", "text"),
  ] })));
  drawRedrive(snap.nodes.filter((n) => n.redrive && n.redrive.action));
  const orders = snap.orders || {};
  fill("orders", Object.entries(orders.by_status || {}).map(([s, v]) => ({ key: s, cells: [cell(s), cell(String(v))] })));
  const paid = orders.accept_to_paid || {};
  $("paid").textContent = `accept → paid, last minute: ${fmt(paid.paid_per_second, 2)}/s, p50 ${ms(paid.p50_ms)}, p99 ${ms(paid.p99_ms)} · since start: p50 ${ms(paid.all_time_p50_ms)}, p99 ${ms(paid.all_time_p99_ms)}`;
  const budgets = [];
  for (const n of services) {
    for (const [slo, b] of Object.entries(n.slo || {})) {
      const alert = b.page ? "PAGE" : b.ticket ? "ticket" : "–";
      budgets.push({ key: n.id + ":" + slo, cells: [
        cell(`${n.id} ${slo}`), cell(pct(b.objective)), cell(pct(b.remaining), b.remaining < 0.25 ? "bad" : b.remaining < 0.75 ? "warn" : "ok"),
        cell(fmt(b.burn["5m"], 2)), cell(fmt(b.burn["30m"], 2)), cell(fmt(b.burn["1h"], 2)), cell(fmt(b.burn["6h"], 2)),
        cell(alert, b.page ? "bad" : b.ticket ? "warn" : ""),
      ] });
    }
  }
  fill("budgets", budgets);
  $("updated").textContent = "updated " + new Date(snap.at).toLocaleTimeString() + ` · window ${fmt(snap.window_seconds, 0)} s`;
}

// One button per queue whose consumer redrives: made once and only relabelled, so a
// click is never lost to a redraw.
const redriveButtons = new Map();
function drawRedrive(queues) {
  const box = $("redrive");
  const seen = new Set();
  for (const n of queues) {
    seen.add(n.id);
    let button = redriveButtons.get(n.id);
    if (!button) {
      button = document.createElement("button");
      button.type = "button";
      button.dataset.queue = n.id;
      button.addEventListener("click", () => redrive(button));
      redriveButtons.set(n.id, button);
      box.append(button);
    }
    button.dataset.action = n.redrive.action;
    button.dataset.dead = String(Number(n.dead_letters) || 0);
    if (!button.disabled) button.textContent = redriveLabel(button);
  }
  for (const [id, button] of redriveButtons) {
    if (!seen.has(id)) { button.remove(); redriveButtons.delete(id); }
  }
}

// What a press does: the owner moves at most 100 (its default) per redrive.
function redriveLabel(button) {
  const dead = Number(button.dataset.dead || 0);
  return `Redrive ${dead > 100 ? "100 of " + dead : dead} dead letter(s) of ${label(button.dataset.queue)}`;
}

// An idempotency key per redrive (crypto.randomUUID needs a secure context; this page
// may be served over plain HTTP to another host).
function freshKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return "dashboard-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function redrive(button) {
  const result = $("redrive-result");
  const key = sessionStorage.getItem(KEY_STORE);
  // A press after one whose outcome is unknown (no answer, a 5xx, a 409 while it ran)
  // repeats that redrive under its key: the owner answers it once, never moves twice.
  button.dataset.key = button.dataset.key || freshKey();
  const headers = { "Idempotency-Key": button.dataset.key };
  if (key) headers.Authorization = "Bearer " + key;
  button.disabled = true;
  button.textContent = "Redriving…";
  try {
    const response = await fetch(button.dataset.action, { method: "POST", headers });
    const body = await response.json().catch(() => ({}));
    const settled = response.ok || (response.status < 500 && response.status !== 409);
    if (settled) delete button.dataset.key;
    result.className = response.ok ? "ok" : "bad";
    result.textContent = response.ok
      ? `${body.owner} moved ${body.moved} dead letter(s) back onto ${body.queue}`
      : `redrive ${settled ? "refused" : "not done, press again to retry it"} (${response.status}): ${body.detail || body.title || "no reason given"}`;
  } catch (err) {
    result.className = "bad";
    result.textContent = "redrive not answered, press again to retry it: " + err;
  } finally {
    button.disabled = false;
    button.textContent = redriveLabel(button);
  }
}

function setStatus(state, text) {
  const s = $("status");
  s.dataset.state = state;
  s.textContent = text;
}

async function watch() {
  let delay = 1000;
  for (;;) {
    const key = sessionStorage.getItem(KEY_STORE);
    try {
      const response = await fetch("/dashboard/stream", { headers: key ? { Authorization: "Bearer " + key } : {} });
      if (response.status === 401 || response.status === 403) {
        setStatus("refused", response.status === 401 ? "needs a secret API key" : "this key may not watch");
        $("key-form").hidden = false;
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      setStatus("live", "live");
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = message.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) render(JSON.parse(data));
        }
        // A message larger than any snapshot means the stream is not ours: start over.
        if (buffer.length > 8 << 20) throw new Error("oversized message");
      }
    } catch (err) {
      console.warn("dashboard stream:", err);
    }
    setStatus("reconnecting", "reconnecting…");
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("key").value.trim());
  $("key").value = "";
  $("key-form").hidden = true;
  setStatus("connecting", "connecting…");
  watch();
});

watch();
