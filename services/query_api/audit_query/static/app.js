// The console: Audit Log (chart, filters, search, table), Entities (browser and Activity), Trace (live logs).
// Served as a file so the page needs no inline script (CSP script-src 'self'). The URL holds each view's state.
"use strict";

const ACTIONS = ["create", "update", "delete", "execute", "approve", "reject", "destroy", "recreate", "retry", "sync",
  "enable", "disable", "dryrun"];
const RANGES = { hour: 3600e3, day: 86400e3, week: 7 * 86400e3 };
const $ = (id) => document.getElementById(id);
const statusLine = $("status");
let generation = 0;
const stale = (mine) => mine !== generation;

// ---- small helpers ----------------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v; else if (k.startsWith("on")) node[k] = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}
// One time-zone setting for every time on the page: the browser's zone, or UTC (`tz=utc` in the URL). Table,
// chart (its days are that zone's days), tooltips, ranges, details and CSV exports all follow it.
const LOCAL_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const useUtc = () => new URLSearchParams(location.search).get("tz") === "utc";
const zone = () => (useUtc() ? "UTC" : LOCAL_ZONE);
function zoneAbbreviation(at = new Date()) {
  const part = new Intl.DateTimeFormat("en-US", { timeZone: zone(), timeZoneName: "short" }).formatToParts(at)
    .find((p) => p.type === "timeZoneName");
  return part ? part.value : zone();
}
function formatTime(iso, options = {}) { return new Date(iso).toLocaleString(undefined, { timeZone: zone(), ...options }); }
function timeCell(iso) {
  const d = new Date(iso);
  return el("time", { datetime: iso, title: `${d.toISOString()} (UTC) · ${formatTime(iso, { timeZoneName: "long" })}` },
    formatTime(iso));
}
function who(user) {
  if (user.type === "system") return user.id ? `System (${user.id})` : "System";
  if (erased(user.id)) return `${user.id} person`;
  return user.display_name ? `${user.display_name} (${user.id})` : user.id;
}
function outcomeLabel(status) { return status === "in_progress" ? "in progress" : status; }
function setStatus(message, kind = "") { statusLine.className = kind; statusLine.textContent = message; }

// Signed out or expired: to the sign-in page, which comes back here afterwards (and says why when a session ended).
function signIn(res) {
  const next = location.pathname + location.search;
  const expired = (res.headers.get("www-authenticate") || "").includes("invalid_token");
  location.assign(`/login?next=${encodeURIComponent(next)}${expired ? "&expired=1" : ""}`);
}

// A person's data erased (its key destroyed), withheld, or not opening reads as a word, never as an object.
const MARKERS = { $erased: "(erased)", $withheld: "(withheld)", $unreadable: "(unreadable)" };
function plain(value) {
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] in MARKERS) return MARKERS[keys[0]];
    return Object.fromEntries(keys.map((k) => [k, plain(value[k])]));
  }
  return value;
}
const erased = (v) => Object.values(MARKERS).includes(v);

async function api(path) {
  const res = await fetch(path, { credentials: "same-origin" });
  if (res.status === 401) { signIn(res); throw new Error("signed out"); }
  const type = res.headers.get("content-type") || "";
  const body = type.includes("json") ? plain(await res.json()) : await res.text();
  if (!res.ok) {
    const detail = typeof body === "object" ? body.detail : body;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}
function show(view) {
  for (const id of ["audit-view", "entities-view", "entity-view", "trace-view"]) $(id).hidden = id !== view;
  const nav = view === "audit-view" ? "audit" : view.startsWith("entit") ? "entities" : "";
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
}

// ---- Audit Log ----------------------------------------------------------------------------------------------------
const caller = { spansTenants: false };
const MAX_CHART_DAYS = 400;
const filters = $("filters");
for (const a of ACTIONS) $("f-event").add(new Option(a, a));
const FILTER_KEYS = ["q", "event", "user_id", "model", "entity_id", "outcome", "range", "since", "until", "sort", "order", "cursor", "tz"];

function viewState() {
  const p = new URLSearchParams(location.search);
  const state = {};
  for (const k of FILTER_KEYS) if (p.get(k)) state[k] = p.get(k);
  return state;
}
function navigate(state, replace = false) {
  const p = new URLSearchParams();
  for (const k of FILTER_KEYS) if (state[k]) p.set(k, state[k]);
  const url = "/" + (p.toString() ? "?" + p : "");
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  route();
}
// The custom range's fields hold wall times of the chosen zone (UTC, or the browser's own).
function toLocalInput(iso) {
  const d = new Date(iso);
  if (useUtc()) return d.toISOString().slice(0, 16);
  return new Date(d.getTime() - d.getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
}
function fromLocalInput(value) { return new Date(useUtc() ? `${value}Z` : value).toISOString(); }
// The API's parameters for a state: the search box and the outcome control both become search terms.
function apiParams(state) {
  const p = new URLSearchParams();
  const q = [state.q, state.outcome ? `outcome:${state.outcome}` : ""].filter(Boolean).join(" ");
  if (q) p.set("q", q);
  for (const k of ["event", "user_id", "model", "entity_id"]) if (state[k]) p.set(k, state[k]);
  if (state.range && RANGES[state.range]) {
    p.set("since", new Date(Date.now() - RANGES[state.range]).toISOString());
  } else if (state.range === "custom") {
    if (state.since) p.set("since", new Date(state.since).toISOString());
    if (state.until) p.set("until", new Date(state.until).toISOString());
  }
  return p;
}

async function auditView() {
  show("audit-view");
  const state = viewState();
  $("q").value = state.q || "";
  for (const [k, id] of [["event", "f-event"], ["user_id", "f-user"], ["model", "f-model"], ["entity_id", "f-entity"],
    ["outcome", "f-outcome"], ["range", "f-range"]]) $(id).value = state[k] || "";
  $("f-since").value = state.since ? toLocalInput(state.since) : "";
  $("f-until").value = state.until ? toLocalInput(state.until) : "";
  for (const l of document.querySelectorAll("label.custom")) l.hidden = state.range !== "custom";
  const sort = state.sort || "time", order = state.order || "desc";
  for (const b of document.querySelectorAll("button.sort")) {
    const th = b.closest("th");  // aria-sort belongs to the column header, not to its button
    if (b.dataset.sort === sort) th.setAttribute("aria-sort", order === "asc" ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
  const params = apiParams(state);
  const exported = [...params, ["sort", sort], ["order", order], ["tz", zone()]];
  $("export-csv").href = "/v1/audit/export?" + new URLSearchParams([...exported, ["format", "csv"]]);
  $("export-ndjson").href = "/v1/audit/export?" + new URLSearchParams([...exported, ["format", "ndjson"]]);
  setStatus("Loading…", "loading");
  const mine = generation;
  const list = new URLSearchParams([...params, ["sort", sort], ["order", order], ["limit", "50"]]);
  if (state.cursor) list.set("cursor", state.cursor);
  try {
    const [page, count] = await Promise.all([api("/v1/audit?" + list), api("/v1/audit/count?" + params)]);
    if (stale(mine)) return;
    renderRows(page, state);
    $("total").textContent = count.exact ? `${count.count.toLocaleString()} entries` : `${count.count.toLocaleString()}+ entries`;
    setStatus(page.data.length ? "" : "No entries match this view.");
  } catch (e) {
    if (stale(mine)) return;
    // Every part of the page shows the same error: no chart, top lists or pager left over from another view.
    $("rows").replaceChildren(); $("total").textContent = "";
    $("chart").replaceChildren(); $("top-users").replaceChildren(); $("top-entities").replaceChildren();
    $("prev").disabled = true; $("next").disabled = true;
    setStatus(e.message, "error");
    return;
  }
  drawCharts(params, mine).catch((e) => { $("chart").replaceChildren(el("p", { class: "error" }, e.message)); });
}

function renderRows(page, state) {
  const rows = $("rows");
  rows.replaceChildren();
  for (const e of page.data) {
    const tr = el("tr", { class: "entry", tabindex: "0", "data-audit-id": e.audit_id });
    const entityLink = erased(e.entity.id) ? el("span", {}, e.entity.id)
      : el("a", { href: entityHref(e.entity.model, e.entity.id, e.tenant_id) }, e.entity.id);
    entityLink.title = e.entity.id;
    tr.append(
      el("td", { "data-label": `Time (${zoneAbbreviation(new Date(e.time))})` }, timeCell(e.time)),
      el("td", { "data-label": "User", class: "clip", title: who(e.user) }, who(e.user)),
      el("td", { "data-label": "Event" }, e.event), el("td", { "data-label": "Entity ID", class: "clip" }, entityLink),
      el("td", { "data-label": "Model", class: "clip", title: e.entity.model }, e.entity.model),
      el("td", { "data-label": "Audit Log ID", class: "mono" }, e.audit_id),
      el("td", { "data-label": "Outcome", class: e.outcome.status }, outcomeLabel(e.outcome.status)));
    if (caller.spansTenants) tr.append(el("td", { "data-label": "Tenant", class: "tenant clip", title: e.tenant_id }, e.tenant_id));
    const open = () => {
      history.replaceState({ ...(history.state || {}), focus: e.audit_id }, "");  // Back returns to this row
      go(`/traces/${e.trace_id}`);
    };
    tr.onclick = (ev) => { if (ev.target.tagName !== "A") open(); };
    tr.onkeydown = (ev) => {
      if (ev.key === "Enter") open();
      else if (ev.key === "ArrowDown" || ev.key === "j") { ev.preventDefault(); (tr.nextElementSibling || tr).focus(); }
      else if (ev.key === "ArrowUp" || ev.key === "k") { ev.preventDefault(); (tr.previousElementSibling || tr).focus(); }
    };
    rows.append(tr);
  }
  const back = history.state && history.state.focus;
  const row = back && [...rows.rows].find((r) => r.dataset.auditId === back);
  if (row) row.focus();
  $("prev").disabled = !page.prev_cursor;
  $("next").disabled = !page.next_cursor;
  $("prev").onclick = () => navigate({ ...state, cursor: page.prev_cursor });
  $("next").onclick = () => navigate({ ...state, cursor: page.next_cursor });
}

async function drawCharts(params, mine = generation) {
  const stack = $("stack").value;
  const chartParams = new URLSearchParams([...params, ["stack", stack], ["tz", zone()]]);
  $("chart-range").textContent = "";
  if (!chartParams.get("since")) {
    // All time: the chart and top lists start where the view's oldest entry is, as the table's count does
    // (the API draws at most 400 days; beyond that the caption says what is left out).
    const oldest = await api("/v1/audit?" + new URLSearchParams([...params, ["sort", "time"], ["order", "asc"], ["limit", "1"]]));
    const now = Date.now();
    let since = oldest.data.length ? Date.parse(oldest.data[0].time) : now - 86400e3;
    if (now - since > MAX_CHART_DAYS * 86400e3) {
      since = now - MAX_CHART_DAYS * 86400e3;
      $("chart-range").textContent = `The chart and top lists cover the last ${MAX_CHART_DAYS} days; the table covers all time.`;
    }
    chartParams.set("since", new Date(Math.min(since, now - 60e3)).toISOString());
    chartParams.set("until", new Date(now + 1e3).toISOString());
  }
  const [svgText, users, entities] = await Promise.all([
    api("/v1/audit/chart.svg?" + chartParams),
    api("/v1/audit/stats?" + new URLSearchParams([...chartParams].filter(([k]) => k !== "stack" && k !== "tz").concat([["group_by", "user"], ["limit", "5"]]))),
    api("/v1/audit/stats?" + new URLSearchParams([...chartParams].filter(([k]) => k !== "stack" && k !== "tz").concat([["group_by", "entity"], ["limit", "5"]]))),
  ]);
  if (stale(mine)) return;
  const svg = new DOMParser().parseFromString(svgText, "image/svg+xml").documentElement;
  $("chart").replaceChildren(document.importNode(svg, true));
  // One tab stop for the whole chart (a roving tabindex): the arrow keys move between bars, Enter narrows.
  const bars = [...$("chart").querySelectorAll("rect.bar")];
  bars.forEach((bar, i) => {
    bar.setAttribute("tabindex", i === 0 ? "0" : "-1");
    const narrow = () => navigate({ ...viewState(), range: "custom", since: bar.dataset.since, until: bar.dataset.until, cursor: "" });
    bar.addEventListener("click", narrow);
    bar.addEventListener("keydown", (ev) => {
      const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[ev.key];
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); narrow(); return; }
      if (ev.key !== "Home" && ev.key !== "End" && !step) return;
      ev.preventDefault();
      const to = ev.key === "Home" ? 0 : ev.key === "End" ? bars.length - 1 : Math.min(bars.length - 1, Math.max(0, i + step));
      bar.setAttribute("tabindex", "-1");
      bars[to].setAttribute("tabindex", "0");
      bars[to].focus();
    });
  });
  $("top-users").replaceChildren(...users.rows.map((r) => el("li", {}, r.user
    ? el("a", { href: "/?" + new URLSearchParams(Object.entries({ ...viewState(), user_id: r.user }).filter(([k]) => k !== "cursor")) }, r.user)
    : "System", ` — ${r.count}`)));
  $("top-entities").replaceChildren(...entities.rows.map((r) => {
    const [model, ...id] = r.entity.split("/");
    return el("li", {}, el("a", { href: `/entities/${encodeURIComponent(model)}/${encodeURIComponent(id.join("/"))}` }, r.entity), ` — ${r.count}`);
  }));
}

// Keyboard: "/" focuses the search box from anywhere but a field; in the table, ↓/↑ (or j/k) move between rows
// and Enter opens one; "n" and "p" page forward and back.
document.addEventListener("keydown", (ev) => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.target.closest("input, select, textarea")) return;
  if (ev.key === "/" && !$("audit-view").hidden) { ev.preventDefault(); $("q").focus(); $("q").select(); }
  else if (ev.key === "n" && !$("audit-view").hidden && !$("next").disabled) $("next").click();
  else if (ev.key === "p" && !$("audit-view").hidden && !$("prev").disabled) $("prev").click();
});

$("search").onsubmit = (ev) => { ev.preventDefault(); navigate({ ...viewState(), q: $("q").value.trim(), cursor: "" }); };
filters.onsubmit = (ev) => {
  ev.preventDefault();
  const state = { q: $("q").value.trim(), sort: viewState().sort, order: viewState().order, tz: viewState().tz };
  for (const [k, v] of new FormData(filters)) if (v) state[k] = (k === "since" || k === "until") ? fromLocalInput(v) : v;
  navigate(state);
};
$("f-range").onchange = () => { for (const l of document.querySelectorAll("label.custom")) l.hidden = $("f-range").value !== "custom"; };
$("reset").onclick = () => navigate({ tz: viewState().tz });
$("stack").onchange = () => drawCharts(apiParams(viewState())).catch((e) => setStatus(e.message, "error"));
for (const b of document.querySelectorAll("button.sort")) {
  b.onclick = () => {
    const state = viewState();
    const same = (state.sort || "time") === b.dataset.sort;
    const order = same ? ((state.order || "desc") === "desc" ? "asc" : "desc") : (b.dataset.sort === "time" ? "desc" : "asc");
    navigate({ ...state, sort: b.dataset.sort, order, cursor: "" });
  };
}

// ---- Entities -----------------------------------------------------------------------------------------------------
let entityPage = null;
async function entitiesView() {
  show("entities-view");
  const p = new URLSearchParams(location.search);
  $("e-model").value = p.get("model") || "";
  $("e-prefix").value = p.get("prefix") || "";
  setStatus("Loading…", "loading");
  const mine = generation;
  try {
    const models = await api("/v1/entities/models");
    if (stale(mine)) return;
    $("models").replaceChildren("Models: ", ...models.flatMap((m, i) => [i ? " · " : "",
      el("a", { href: `/entities?model=${encodeURIComponent(m.model)}` }, `${m.model} (${m.entries})`)]));
    $("entity-list").replaceChildren();
    entityPage = null;
    await moreEntities(mine);
    if (stale(mine)) return;
    setStatus($("entity-list").children.length ? "" : "No entities match.");
  } catch (e) { if (!stale(mine)) setStatus(e.message, "error"); }
}
async function moreEntities(mine = generation) {
  const p = new URLSearchParams(location.search);
  const q = new URLSearchParams();
  for (const k of ["model", "prefix"]) if (p.get(k)) q.set(k, p.get(k));
  if (entityPage && entityPage.next_after) { q.set("after", entityPage.next_after); q.set("after_model", entityPage.next_after_model); }
  const page = await api("/v1/entities?" + q);
  if (stale(mine)) return;
  entityPage = page;
  $("entity-list").append(...entityPage.data.map((e) => el("li", {},
    el("a", { href: `/entities/${encodeURIComponent(e.model)}/${encodeURIComponent(e.entity_id)}` }, `${e.model}/${e.entity_id}`))));
  $("entity-more").hidden = !entityPage.next_after;
}
$("entity-more").onclick = () => moreEntities().catch((e) => setStatus(e.message, "error"));
$("entity-search").onsubmit = (ev) => {
  ev.preventDefault();
  const q = new URLSearchParams();
  if ($("e-model").value.trim()) q.set("model", $("e-model").value.trim());
  if ($("e-prefix").value.trim()) q.set("prefix", $("e-prefix").value.trim());
  go("/entities" + (q.toString() ? "?" + q : ""));
};

let activityCursor = null;
async function entityView(model, id) {
  show("entity-view");
  const p = new URLSearchParams(location.search);
  const tenant = p.get("tenant");
  $("entity-title").replaceChildren(`${model} / ${id}`, ...(tenant
    ? [el("span", { class: "tenant" }, ` in tenant ${tenant} · `), el("a", { href: entityHref(model, id) }, "every tenant")]
    : []));
  const tab = p.get("tab") === "logs" ? "logs" : "audit";
  selectTab(tab);
  if (tab === "logs") {
    const level = p.get("level") || "";
    $("logs-more").onclick = () => entityLogs(model, id, tenant, level, generation, true);
    return entityLogs(model, id, tenant, level);
  }
  $("activity").replaceChildren();
  activityCursor = null;
  setStatus("Loading…", "loading");
  const mine = generation;
  try { await moreActivity(model, id, tenant, mine); if (!stale(mine)) setStatus(""); } catch (e) { if (!stale(mine)) setStatus(e.message, "error"); }
  $("activity-more").onclick = () => moreActivity(model, id, tenant).catch((e) => setStatus(e.message, "error"));
}
// The Activity tabs (Audit, Execution logs), as the WAI-ARIA tabs pattern: one tab stop, the arrow keys, Home and
// End move between tabs and select them; the selected tab is in the URL (`tab=logs`, with its `level`).
const TABS = [...$("activity-tabs").querySelectorAll('[role="tab"]')];
function selectTab(tab) {
  for (const b of TABS) {
    const on = b.dataset.tab === tab;
    b.setAttribute("aria-selected", String(on));
    b.tabIndex = on ? 0 : -1;
    $(b.getAttribute("aria-controls")).hidden = !on;
  }
}
function openTab(tab, extra = {}) {
  const url = new URL(location.href);
  url.searchParams.delete("level");
  if (tab === "logs") url.searchParams.set("tab", "logs"); else url.searchParams.delete("tab");
  for (const [k, v] of Object.entries(extra)) if (v) url.searchParams.set(k, v);
  history.replaceState(history.state, "", url.pathname + url.search);
  route();
}
TABS.forEach((b, i) => {
  b.onclick = () => { openTab(b.dataset.tab); b.focus(); };
  b.onkeydown = (ev) => {
    const to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: TABS.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    const next = TABS[(to + TABS.length) % TABS.length];
    openTab(next.dataset.tab);
    next.focus();
  };
});
$("log-level").onchange = () => openTab("logs", { level: $("log-level").value });

// Every execution-log line of the entity's actions, newest first, a page at a time, each linked to its trace.
let logsCursor = null;
async function entityLogs(model, id, tenant, level, mine = generation, more = false) {
  $("log-level").value = level;
  const body = $("entity-logs").tBodies[0];
  const q = new URLSearchParams({ limit: "100" });
  if (tenant) q.set("tenant", tenant);
  for (const l of level.split(",").filter(Boolean)) q.append("level", l);
  if (more && logsCursor) q.set("cursor", logsCursor);
  if (!more) { body.replaceChildren(); logsCursor = null; $("logs-more").hidden = true; }
  setStatus("Loading…", "loading");
  try {
    const page = await api(`/v1/entities/${encodeURIComponent(model)}/${encodeURIComponent(id)}/logs?${q}`);
    if (stale(mine)) return;
    for (const l of page.data) body.append(entityLogRow(l));
    if (!body.rows.length) {
      body.append(el("tr", { class: "empty" }, el("td", { colspan: "6" }, level
        ? "No execution-log lines at this level."
        : "No execution-log lines were recorded under this entity's actions.")));
    }
    logsCursor = page.next_cursor;
    $("logs-more").hidden = !logsCursor;
    setStatus("");
  } catch (e) { if (!stale(mine)) setStatus(e.message, "error"); }
}
function entityLogRow(l) {
  const row = logRow(l);
  const action = el("td", { "data-label": "Action" },
    el("a", { href: `/traces/${l.trace_id}`, title: `Open trace ${l.trace_id}` }, l.event));
  row.insertBefore(action, row.cells[2]);
  return row;
}
// An entity's page, within one tenant when given (the same id may name different entities in different tenants).
function entityHref(model, id, tenant) {
  const path = `/entities/${encodeURIComponent(model)}/${encodeURIComponent(id)}`;
  return tenant ? `${path}?${new URLSearchParams({ tenant })}` : path;
}
async function moreActivity(model, id, tenant, mine = generation) {
  const q = new URLSearchParams({ limit: "50" });
  if (tenant) q.set("tenant", tenant);
  if (activityCursor) q.set("cursor", activityCursor);
  const page = await api(`/v1/entities/${encodeURIComponent(model)}/${encodeURIComponent(id)}/audit?${q}`);
  if (stale(mine)) return;
  for (const e of page.data) $("activity").append(activityItem(e));
  activityCursor = page.next_cursor;
  $("activity-more").hidden = !activityCursor;
}
function activityItem(e) {
  const details = el("details", {},
    el("summary", {}, timeCell(e.time), " ", el("strong", {}, e.event), " by ", who(e.user), " — ",
      el("span", { class: e.outcome.status }, outcomeLabel(e.outcome.status)), el("span", { class: "tenant" }, ` · tenant ${e.tenant_id}`)));
  details.addEventListener("toggle", async () => {
    if (!details.open || details.dataset.loaded) return;
    details.dataset.loaded = "1";
    try {
      // A page of log lines at a time: an action with thousands of lines opens as fast as one with three.
      const first = await api(`/v1/traces/${e.trace_id}`);
      const table = logTable(first.logs);
      const more = el("button", { type: "button", class: "more" }, "More log lines");
      more.hidden = !first.logs_next;
      let next = first.logs_next;
      more.onclick = async () => {
        more.disabled = true;
        try {
          const page = await api(`/v1/traces/${e.trace_id}?logs_after=${encodeURIComponent(next)}`);
          for (const l of page.logs) table.append(logRow(l));
          next = page.logs_next;
          more.hidden = !next;
        } catch (err) { details.append(el("p", { class: "error" }, err.message)); }
        more.disabled = false;
      };
      details.append(...entryBody(first.entry), table, more,
        el("p", {}, el("a", { href: `/traces/${e.trace_id}` }, "Open the trace view")));
    } catch (err) { details.append(el("p", { class: "error" }, err.message)); }
  });
  return el("li", { "data-audit-id": e.audit_id }, details);
}
// A change set's nested objects diffed by path (`config.limits.cpu`): only the paths whose values differ, with
// "—" where a side has no such path; arrays and scalars compare whole.
const ABSENT = Symbol("absent");
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
function changedPaths(path, before, after) {
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((k) => changedPaths(`${path}.${k}`,
      Object.hasOwn(before, k) ? before[k] : ABSENT, Object.hasOwn(after, k) ? after[k] : ABSENT));
  }
  if (isObject(before) && after === ABSENT) return Object.keys(before).sort().flatMap((k) => changedPaths(`${path}.${k}`, before[k], ABSENT));
  if (isObject(after) && before === ABSENT) return Object.keys(after).sort().flatMap((k) => changedPaths(`${path}.${k}`, ABSENT, after[k]));
  if (erased(before) || erased(after)) return [[path, before, after]];  // erased on both sides is still a change
  return JSON.stringify(before) === JSON.stringify(after) ? [] : [[path, before, after]];
}
function entryBody(entry) {
  const out = [];
  const o = entry.outcome;
  if (o.error) out.push(el("p", { class: "error" }, `${o.error.type}: ${o.error.message}`));
  if (o.changes && Object.keys(o.changes).length) {
    const table = el("table", { class: "diff" }, el("tr", {}, el("th", {}, "Field"), el("th", {}, "Before"), el("th", {}, "After")));
    for (const [field, change] of Object.entries(o.changes)) {
      for (const [path, before, after] of changedPaths(field, change.before, change.after)) {
        table.append(el("tr", {}, el("td", { class: "mono" }, path),
          el("td", { class: "before" }, before === ABSENT ? "—" : erased(before) ? before : JSON.stringify(before)),
          el("td", { class: "after" }, after === ABSENT ? "—" : erased(after) ? after : JSON.stringify(after))));
      }
    }
    out.push(table);
  }
  return out;
}
function logTable(logs) {
  const head = [`Time (${zoneAbbreviation()})`, "Level", "Logger", "Message", "Fields"];
  const table = el("table", { class: "logs" }, el("tr", {}, ...head.map((t) => el("th", {}, t))));
  for (const l of [...logs].sort((a, b) => a.time.localeCompare(b.time))) table.append(logRow(l));
  return table;
}
function logRow(l) {
  const fields = JSON.stringify(l.fields);
  return el("tr", { class: `level-${l.level}`, "data-log-id": l.log_id },
    el("td", { "data-label": `Time (${zoneAbbreviation(new Date(l.time))})` }, timeCell(l.time)),
    el("td", { "data-label": "Level" }, l.level), el("td", { "data-label": "Logger", class: "clip", title: l.logger || "" }, l.logger),
    el("td", { "data-label": "Message", class: "message" }, l.message),
    el("td", { "data-label": "Fields", class: "mono fields", title: fields }, fields));
}

// Every field of an entry, its raw JSON (copyable), and its inclusion proof with the command that checks it
// offline; `#browser-verification` is where a verification made in this browser reports.
function exactTime(iso) {
  if (!iso) return "—";
  const local = formatTime(iso, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
    fractionalSecondDigits: 3, timeZoneName: "short",
  });
  return `${iso} (${local})`;
}
function detailBlock(e) {
  const o = e.outcome, r = e.request || {};
  const fields = [
    ["Audit id", e.audit_id], ["Trace id", e.trace_id], ["Tenant", e.tenant_id], ["Time", exactTime(e.time)],
    ["Event", e.event], ["Entity", `${e.entity.model}/${e.entity.id}`],
    ["User", `${e.user.type}${e.user.id ? ` ${e.user.id}` : ""}${e.user.display_name ? ` (${e.user.display_name})` : ""}`],
    ["Source", e.source], ["Request id", r.request_id], ["Client IP", r.client_ip], ["User agent", r.user_agent],
    ["Correlation id", e.correlation_id], ["OpenTelemetry trace", e.otel_trace_id],
    ["Outcome", outcomeLabel(o.status)], ["Finished", o.finished_at ? exactTime(o.finished_at) : null],
    ["Duration", o.duration_ms == null ? null : `${Number(o.duration_ms.toFixed(3))} ms`], ["Revision", o.revision],
    ["Error", o.error ? `${o.error.type}: ${o.error.message}` : null],
  ];
  const list = el("dl", { class: "detail", id: "entry-detail" });
  for (const [name, value] of fields) {
    list.append(el("dt", {}, name), el("dd", { class: value == null ? "none" : "" }, value == null ? "—" : String(value)));
  }
  const raw = JSON.stringify(e, null, 2);
  const copy = el("button", { type: "button", id: "copy-json" }, "Copy JSON");
  copy.onclick = async () => {
    try { await navigator.clipboard.writeText(raw); copy.textContent = "Copied"; }
    catch { const sel = getSelection(); sel.selectAllChildren($("raw-json")); copy.textContent = "Selected: press Ctrl+C"; }
  };
  const proof = `/v1/audit/${e.audit_id}/proof`;
  return el("section", { class: "entry-detail", "aria-label": "Entry detail" },
    el("h3", {}, "Detail"), list,
    el("details", {}, el("summary", {}, "Raw JSON"), copy, el("pre", { id: "raw-json", class: "mono" }, raw)),
    el("p", { id: "proof" }, "Proof: ", el("a", { href: proof, download: `proof-${e.trace_id}.json` }, "inclusion proof (JSON)"),
      " — check it offline, against the log key you pinned (", el("a", { href: "/v1/keys" }, "published keys"), "):"),
    el("pre", { class: "mono command" }, `audit-schemas verify-inclusion proof-${e.trace_id}.json --key <log verifier key>` +
      " --witness <witness key> --min-witnesses <k>"),
    pinForm(e), el("p", { id: "browser-verification", role: "status", "aria-live": "polite" }),
    el("p", { class: "note" }, "The check in this browser runs code this server delivers, so it cannot vouch for the " +
      "server's own operator: for independence, verify offline with the command above."));
}

// Keys the viewer pinned (never taken from the server): the log's verifier key(s), witness keys and how many of
// those witnesses must have cosigned. Kept in this browser's local storage.
const PINS = "audit-trail-pinned-keys";
function pinned() {
  try {
    const p = JSON.parse(localStorage.getItem(PINS) || "{}");
    return { logKeys: p.logKeys || [], witnesses: p.witnesses || [], minWitnesses: Number(p.minWitnesses || 0) };
  } catch { return { logKeys: [], witnesses: [], minWitnesses: 0 }; }
}
function pinForm(e) {
  const p = pinned();
  const lines = (id) => $(id).value.split("\n").map((l) => l.trim()).filter(Boolean);
  const form = el("form", { id: "pin-form" },
    el("label", {}, "Log verifier key(s), one per line", el("textarea", { id: "pin-log", rows: "2" }, p.logKeys.join("\n"))),
    el("label", {}, "Witness verifier keys, one per line", el("textarea", { id: "pin-witnesses", rows: "2" }, p.witnesses.join("\n"))),
    el("label", {}, "Witnesses required", el("input", { id: "pin-min", type: "number", min: "0", max: "32", value: String(p.minWitnesses) })),
    el("button", { type: "submit" }, "Save and verify"));
  form.onsubmit = (ev) => {
    ev.preventDefault();
    localStorage.setItem(PINS, JSON.stringify({ logKeys: lines("pin-log"), witnesses: lines("pin-witnesses"), minWitnesses: Number($("pin-min").value || 0) }));
    verifyHere(e);
  };
  return el("details", { id: "pins", open: p.logKeys.length ? undefined : "" }, el("summary", {}, "Keys pinned in this browser"), form);
}
let verifying = 0;
async function verifyHere(e) {
  const mine = ++verifying;
  const out = $("browser-verification");
  if (!out) return;
  const policy = pinned();
  if (!policy.logKeys.length) {
    out.className = "";
    out.textContent = "Not verified in this browser: pin the log's verifier key (from someone you trust, not this page) to check the proof here.";
    return;
  }
  out.className = "loading";
  out.textContent = "Verifying in this browser…";
  try {
    const proof = await api(`/v1/audit/${e.audit_id}/proof`);
    const verdict = await window.AuditVerify.verifyInclusion(proof, policy);
    if (mine !== verifying) return;
    out.className = verdict.ok ? "verified" : "error";
    out.textContent = verdict.ok ? `✔ Verified in this browser: ${verdict.detail}` : `✘ Not verified in this browser: ${verdict.detail}`;
  } catch (err) {
    if (mine !== verifying) return;
    out.className = "error";
    out.textContent = `Not verified in this browser: ${err.message}`;
  }
}

// ---- Trace view (live) ------------------------------------------------------------------------------------------
let source = null;
const TRACE_ID = /^(?:[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i;
function liveState(state, text) { $("trace-live").className = state; $("trace-live").textContent = text; }
function traceView(traceId) {
  show("trace-view");
  $("trace-title").textContent = `Trace ${traceId}`;
  const body = $("trace-logs").tBodies[0];
  body.replaceChildren();
  setStatus("");
  if (source) { source.close(); source = null; }
  $("trace-logs").hidden = false;
  if (!TRACE_ID.test(traceId)) {
    $("trace-logs").hidden = true;
    $("trace-entry").replaceChildren(el("p", { class: "error", role: "alert" },
      `"${traceId}" is not a trace id: 32 hexadecimal digits, with or without the dashes of a UUID.`));
    liveState("", "");
    return;
  }
  $("trace-entry").replaceChildren(el("p", {}, "Waiting for the action to be recorded…"));
  liveState("connecting", "connecting…");
  const url = `/v1/traces/${traceId}/stream`;
  const stream = new EventSource(url);
  source = stream;
  stream.addEventListener("open", () => liveState("live", "live"));
  const entry = (ev) => {
    const e = plain(JSON.parse(ev.data));
    $("trace-entry").replaceChildren(
      el("p", {}, timeCell(e.time), " ", el("strong", {}, e.event), " ",
        erased(e.entity.id) ? `${e.entity.model}/${e.entity.id}`
          : el("a", { href: entityHref(e.entity.model, e.entity.id, e.tenant_id) }, `${e.entity.model}/${e.entity.id}`),
        " by ", who(e.user), " (tenant ", e.tenant_id, ") — ", el("span", { class: e.outcome.status, id: "trace-outcome" }, outcomeLabel(e.outcome.status))),
      ...entryBody(e), detailBlock(e));
    verifyHere(e);
  };
  stream.addEventListener("entry", entry);
  stream.addEventListener("outcome", entry);
  stream.addEventListener("log", (ev) => {
    const l = plain(JSON.parse(ev.data));
    const row = logRow(l);
    const later = [...body.rows].find((r) => r.querySelector("time").getAttribute("datetime") > l.time);
    body.insertBefore(row, later || null);
  });
  stream.addEventListener("end", () => {
    stream.close();
    liveState("", "finished");
    if (!body.rows.length) {
      body.append(el("tr", { class: "empty" }, el("td", { colspan: "5" }, "No execution-log lines were recorded under this trace.")));
    }
  });
  stream.addEventListener("error", async (ev) => {
    if (source !== stream) return;
    if (ev.data) { setStatus(JSON.parse(ev.data).detail, "error"); stream.close(); liveState("", "stopped"); return; }
    if (stream.readyState === EventSource.CONNECTING) { liveState("reconnecting", "connection lost — reconnecting…"); return; }
    // Closed: the server answered with an error, which EventSource does not expose; ask once to learn which.
    liveState("", "not live");
    const probe = new AbortController();
    const res = await fetch(url, { credentials: "same-origin", signal: probe.signal }).catch(() => null);
    probe.abort();
    if (source !== stream) return;
    if (res === null) { setStatus("the server cannot be reached", "error"); return; }
    if (res.status === 401) { signIn(res); return; }
    if (res.status === 404) {
      $("trace-logs").hidden = true;
      $("trace-entry").replaceChildren(el("p", { role: "status" }, "Nothing recorded for this trace."));
      return;
    }
    const detail = await res.clone().json().then((b) => b.detail).catch(() => res.statusText);
    setStatus(typeof detail === "string" ? detail : `the live view failed (${res.status})`, "error");
  });
}

// ---- routing ------------------------------------------------------------------------------------------------------
// The zone setting travels with every link inside the console.
function withZone(path) {
  if (!useUtc()) return path;
  const url = new URL(path, location.origin);
  url.searchParams.set("tz", "utc");
  return url.pathname + url.search;
}
function go(path) { history.pushState(null, "", withZone(path)); route(); }
function route() {
  generation += 1;  // answers to an earlier view's requests are dropped, not drawn over this one
  $("tz").value = useUtc() ? "utc" : "";
  for (const label of document.querySelectorAll("th .zone")) label.textContent = `(${zoneAbbreviation()})`;
  if (source && !location.pathname.startsWith("/traces/")) { source.close(); source = null; }
  const parts = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "entities" && parts.length >= 3) return entityView(parts[1], parts.slice(2).join("/"));
  if (parts[0] === "entities") return entitiesView();
  if (parts[0] === "traces" && parts[1]) return traceView(parts[1]);
  return auditView();
}
document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a");
  if (!a || a.target || ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith("/v1/") || url.pathname.startsWith("/docs")) return;
  ev.preventDefault();
  go(url.pathname + url.search);
});
window.addEventListener("popstate", route);
$("tz-local").textContent = `local (${LOCAL_ZONE})`;
$("tz").onchange = () => {
  const url = new URL(location.href);
  if ($("tz").value === "utc") url.searchParams.set("tz", "utc"); else url.searchParams.delete("tz");
  history.replaceState(history.state, "", url.pathname + url.search);
  route();
};

// The skip link lands on the current view's content: the audit log's table, or the view's heading.
$("skip").onclick = (ev) => {
  ev.preventDefault();
  const view = document.querySelector("main > section:not([hidden])");
  const target = view && view.id === "audit-view" ? $("audit-table") : view && view.querySelector("h2");
  if (target) { if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1"); target.focus(); }
};
$("signout").onclick = async () => {
  await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" });
  location.assign("/login");
};
// Who is signed in decides what the page offers: exports only with audit:export (a link that can only fail is
// not offered), a tenant column when the view spans tenants.
const whoami = (async () => {
  const res = await fetch("/v1/session", { credentials: "same-origin" });
  if (!res.ok) return;
  const me = await res.json();
  $("who").textContent = `signed in as ${me.name}`;
  caller.spansTenants = me.tenants === null || me.tenants.length > 1;
  $("th-tenant").hidden = !caller.spansTenants;
  $("exports").hidden = !me.scopes.includes("audit:export");
})();
whoami.finally(route);
