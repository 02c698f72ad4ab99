// slum's dashboard: reads the management API (the session cookie stands for
// a token on GETs) and redraws its panels every 2 s; the tenants and the
// instances, which are paged and ask the servers, every 10 s or on a page
// change. Every value from the API goes into the page as text, never as HTML.
"use strict";

const FAST_MS = 2000;
const SLOW_EVERY = 5; // fast rounds between two looks at tenants and instances
const PAGE = { servers: 100, tenants: 25, instances: 25 };

const $ = (id) => document.getElementById(id);

/// An element with attributes (`class`, `data-*`, ...) and children (text or
/// elements).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class SignedOut extends Error {}

/// GETs `path` of the API: its JSON and the next page's key, if any.
async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) throw new SignedOut();
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const why = body && body.error ? body.error.message : r.statusText;
    const e = new Error(`${path}: ${r.status} ${why}`);
    e.status = r.status;
    throw e;
  }
  return { json: body, next: r.headers.get("slum-next-after") };
}

// ----- formatting -----

const rate = (r) => (r >= 100 ? r.toFixed(0) : r.toFixed(1));
const percent = (share) => {
  const p = share * 100;
  if (p === 0) return "0%";
  if (p < 0.1) return "<0.1%";
  return p < 10 ? `${p.toFixed(1)}%` : `${p.toFixed(0)}%`;
};
const millis = (ms) => {
  if (ms === null || ms === undefined) return "–";
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 10000) return `${ms.toFixed(0)} ms`;
  return `${(ms / 1000).toFixed(0)} s`;
};
const clock = (d) => d.toLocaleTimeString([], { hour12: false });
function ago(when) {
  if (!when) return "never";
  const s = Math.round((Date.now() - Date.parse(when)) / 1000);
  if (s < 5) return "just now";
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

function fill(tbody, rows, columns, empty) {
  tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colspan: columns }, empty))]));
}

// ----- paged lists -----

/// A paged list: the keys each page starts after, walked forwards and back.
class Pager {
  constructor(name, onChange) {
    this.name = name;
    this.starts = [null];
    this.next = null;
    this.prev = el("button", { type: "button", "data-page": "prev" }, "‹ Previous");
    this.fwd = el("button", { type: "button", "data-page": "next" }, "Next ›");
    this.where = el("span", { class: "muted" });
    this.prev.addEventListener("click", () => { if (this.starts.length > 1) { this.starts.pop(); onChange(); } });
    this.fwd.addEventListener("click", () => { if (this.next) { this.starts.push(this.next); onChange(); } });
    $(`${name}-pager`).replaceChildren(this.prev, this.where, this.fwd);
  }
  path(base, limit) {
    const after = this.starts[this.starts.length - 1];
    return `${base}?limit=${limit}` + (after ? `&after=${encodeURIComponent(after)}` : "");
  }
  shown(count, next) {
    this.next = next;
    this.prev.disabled = this.starts.length <= 1;
    this.fwd.disabled = !next;
    this.where.textContent = `page ${this.starts.length}` + (count ? ` (${count})` : "");
  }
}

// ----- panels -----

let serverTraffic = new Map();

async function drawServers(pager) {
  const [list, traffic] = await Promise.all([
    api(pager.path("/v1/servers", PAGE.servers)),
    api("/v1/traffic/servers"),
  ]);
  serverTraffic = new Map(traffic.json.servers.map((s) => [s.server, s]));
  const rows = list.json.map((s) => {
    const t = serverTraffic.get(s.id);
    const used = s.used_capacity_mb, cap = s.capacity_mb;
    const share = cap > 0 ? Math.min(used / cap, 1) : 1;
    const fillBar = el("span");
    fillBar.style.width = `${(share * 100).toFixed(1)}%`;
    const bar = el("span", { class: "bar" + (share >= 1 ? " full" : share >= 0.85 ? " high" : ""), title: `${used} of ${cap} MB reserved` }, fillBar);
    const health = el("td", { class: "status" },
      el("span", { class: "badge", "data-status": s.status }, s.status),
      s.routing_problem ? el("span", { class: "note", title: s.routing_problem }, "unroutable") : null);
    return el("tr", { "data-server": s.id },
      el("td", {}, s.id),
      el("td", {}, s.region || "–"),
      health,
      el("td", {}, bar, `${used} / ${cap} MB`),
      el("td", { class: "num" }, t ? rate(t.requests_per_second) : "0.0"),
      el("td", { class: "num" }, t ? percent(t.error_rate) : "–"),
      el("td", { class: "num" }, millis(t && t.p50_ms)),
      el("td", { class: "num" }, millis(t && t.p99_ms)),
      el("td", { title: s.last_seen || "" }, ago(s.last_seen)));
  });
  fill($("servers").tBodies[0], rows, 9, "no servers yet: slum server add");
  pager.shown(list.json.length, list.next);
  const offline = list.json.filter((s) => s.status === "offline").length;
  $("servers-note").textContent = offline ? `${offline} offline` : "";
}

async function drawTraffic() {
  const { json } = await api("/v1/traffic/top?limit=10");
  $("traffic-window").textContent = `last ${Math.round(json.window_seconds)} s, this router`;
  const t = json.total;
  $("traffic-total").textContent =
    `All tenants: ${rate(t.requests_per_second)} req/s, ${percent(t.error_rate)} errors, p50 ${millis(t.p50_ms)}, p99 ${millis(t.p99_ms)}`;
  const rows = json.tenants.map((x) => el("tr", { "data-tenant": x.tenant },
    el("td", {}, x.tenant),
    el("td", { class: "num", title: x.requests_min < x.requests ? "at most: other tenants' requests may be counted in" : "" },
      (x.requests_min < x.requests ? "≤" : "") + rate(x.requests_per_second)),
    el("td", { class: "num" }, percent(x.error_rate)),
    el("td", { class: "num" }, millis(x.p50_ms)),
    el("td", { class: "num" }, millis(x.p99_ms))));
  fill($("top").tBodies[0], rows, 5, "no tenant requests in the last minute");
}

async function drawDrains() {
  const { json } = await api("/v1/drains");
  const shown = json.filter((d) => !d.done || (d.finished_at && Date.now() - Date.parse(d.finished_at) < 3600e3));
  const items = shown.map((d) => {
    const handled = Math.min(d.moved.length + d.failed.length, d.total);
    const fillBar = el("span");
    fillBar.style.width = d.total ? `${(100 * handled / d.total).toFixed(0)}%` : "100%";
    const state = d.done ? `done ${ago(d.finished_at)}` : "moving";
    return el("div", { class: "drain", "data-drain": d.server },
      el("strong", {}, d.server), " ",
      el("span", { class: "bar" }, fillBar),
      `${handled}/${d.total} instances, ${state}`,
      d.failed.length ? el("span", { class: "note" }, `${d.failed.length} failed`) : null);
  });
  $("drains").replaceChildren(...(items.length ? items : [el("p", { class: "muted" }, "no drain in progress")]));
}

async function drawEvents() {
  const { json } = await api("/v1/events?limit=10");
  // The newest, oldest first: shown newest first.
  const items = json.slice().reverse().map((e) => {
    const about = e.instance || e.tenant || e.server;
    return el("li", { "data-kind": e.kind, class: e.level === "warning" ? "warning" : null },
      el("time", { datetime: e.at, title: `${e.at} by ${e.router}` }, clock(new Date(e.at))),
      el("span", { class: "kind" }, e.kind), " ",
      about ? el("strong", {}, about) : null, about ? ": " : "",
      e.cause);
  });
  $("events").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "no events yet")]));
}

async function drawTenants(pager) {
  const list = await api(pager.path("/v1/tenants", PAGE.tenants));
  const rows = list.json.map((t) => el("tr", { "data-domain": t.domain },
    el("td", {}, t.domain),
    el("td", {}, t.name),
    el("td", {}, t.server_id),
    el("td", {}, `${t.name}:${t.instance_id} (${t.process})`),
    el("td", {}, t.failover)));
  fill($("tenants").tBodies[0], rows, 5, "no tenants yet: slum tenant add");
  pager.shown(list.json.length, list.next);
}

async function drawInstances(pager) {
  const list = await api(pager.path("/v1/instances", PAGE.instances));
  const rows = list.json.map((s) => {
    const i = s.instance;
    const key = `${i.tenant}:${i.instance_id}`;
    return el("tr", { "data-instance": key },
      el("td", {}, key),
      el("td", {}, i.server_id + (i.moving_to ? ` → ${i.moving_to}` : "")),
      el("td", {}, el("span", { class: "badge", "data-state": s.state }, s.state)),
      el("td", {}, s.health || "–"),
      el("td", { class: "num" }, `${i.memory_mb} MB`));
  });
  fill($("instances").tBodies[0], rows, 5, "no instances");
  pager.shown(list.json.length, list.next);
}

// ----- the loop -----

function signedOut() {
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("live").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-failed").hidden = !new URLSearchParams(location.search).has("signin");
  $("token").focus();
}

async function start() {
  let who;
  try {
    who = (await api("/ui/session")).json;
  } catch (e) {
    if (e instanceof SignedOut) return signedOut();
    throw e;
  }
  if (location.search) history.replaceState(null, "", "/ui/");
  $("who").textContent = `signed in with ${who.token.name} (${who.token.id})`;
  $("sign-in").hidden = true;
  $("sign-out").hidden = false;
  $("dashboard").hidden = false;
  $("live").hidden = false;

  let round = 0;
  let timer = null;
  const servers = new Pager("servers", () => tick(true));
  const tenants = new Pager("tenants", () => slow());
  const instances = new Pager("instances", () => slow());

  async function slow() {
    await Promise.allSettled([drawTenants(tenants), drawInstances(instances)]).then(report);
  }

  function report(results) {
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    if (failed.some((e) => e instanceof SignedOut)) {
      clearTimeout(timer);
      signedOut();
      return false;
    }
    const problem = $("problem");
    problem.hidden = failed.length === 0;
    problem.textContent = failed.map((e) => e.message).join("; ");
    const live = $("live");
    live.classList.toggle("stale", failed.length > 0);
    live.textContent = failed.length ? `could not update (${clock(new Date())})` : `live, updated ${clock(new Date())}`;
    return true;
  }

  async function tick(once) {
    clearTimeout(timer);
    const work = [drawServers(servers), drawTraffic(), drawDrains(), drawEvents()];
    if (round % SLOW_EVERY === 0) work.push(drawTenants(tenants), drawInstances(instances));
    round += 1;
    const going = report(await Promise.allSettled(work));
    if (going) timer = setTimeout(tick, FAST_MS);
    return once;
  }

  tick();
}

document.addEventListener("DOMContentLoaded", () => {
  start().catch((e) => {
    $("problem").hidden = false;
    $("problem").textContent = String(e);
    $("dashboard").hidden = false;
  });
});
