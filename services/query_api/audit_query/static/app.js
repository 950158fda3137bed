// The console's behaviour; served as a file so the page needs no inline script (CSP script-src 'self').
const ACTIONS = ["create","update","delete","execute","approve","reject","destroy","recreate","retry","sync","enable","disable","dryrun"];
const form = document.getElementById("filters");
const rows = document.getElementById("rows");
const more = document.getElementById("more");
const statusLine = document.getElementById("status");
const detail = document.getElementById("detail");
for (const a of ACTIONS) form.event.add(new Option(a, a));
let nextCursor = null;

function text(value) { return document.createTextNode(value ?? ""); }
function cell(tr, value, cls) { const td = tr.insertCell(); td.append(text(value)); if (cls) td.className = cls; return td; }

function query() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    if (!v) continue;
    params.append(k, (k === "since" || k === "until") ? new Date(v).toISOString() : v);
  }
  return params;
}

async function load(reset) {
  const params = query();
  if (!reset && nextCursor) params.set("cursor", nextCursor);
  const res = await fetch("/v1/audit?" + params, { credentials: "same-origin" });
  if (res.status === 401) { location.assign("/login"); return; }
  const body = await res.json();
  if (!res.ok) { statusLine.className = "error"; statusLine.textContent = JSON.stringify(body.detail); return; }
  statusLine.className = ""; statusLine.textContent = "";
  if (reset) rows.replaceChildren();
  for (const e of body.data) {
    const tr = rows.insertRow(); tr.className = "entry";
    cell(tr, new Date(e.time).toLocaleString());
    cell(tr, e.user.display_name ? `${e.user.display_name} (${e.user.id})` : (e.user.id ?? e.user.type));
    cell(tr, e.event);
    cell(tr, e.entity.id);
    cell(tr, e.entity.model);
    cell(tr, e.outcome.status, e.outcome.status);
    cell(tr, e.audit_id).style.fontFamily = "monospace";
    tr.onclick = () => showEntry(e.audit_id);
  }
  nextCursor = body.next_cursor;
  more.hidden = !nextCursor;
}

async function showEntry(id) {
  const res = await fetch("/v1/audit/" + id, { credentials: "same-origin" });
  if (res.status === 401) { location.assign("/login"); return; }
  const body = await res.json();
  detail.style.display = "block";
  detail.replaceChildren();
  const h = document.createElement("h3"); h.append(text(`${body.entry.event} ${body.entry.entity.model}/${body.entry.entity.id} — trace ${body.entry.trace_id}`));
  const pre = document.createElement("pre"); pre.append(text(JSON.stringify(body.entry.outcome, null, 2)));
  const table = document.createElement("table");
  table.createTHead().insertRow().append(...["Time", "Level", "Logger", "Message", "Fields"].map(t => { const th = document.createElement("th"); th.append(text(t)); return th; }));
  const tb = table.createTBody();
  for (const l of body.logs) {
    const tr = tb.insertRow();
    cell(tr, new Date(l.time).toISOString()); cell(tr, l.level); cell(tr, l.logger); cell(tr, l.message);
    cell(tr, JSON.stringify(l.fields));
  }
  const h4 = document.createElement("h4"); h4.append(text(`Execution logs (${body.logs.length})`));
  detail.append(h, pre, h4, table);
}

form.onsubmit = (ev) => { ev.preventDefault(); nextCursor = null; load(true); };
more.onclick = () => load(false);
load(true);

document.getElementById("signout").onclick = async () => {
  await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" });
  location.assign("/login");
};
(async () => {
  const res = await fetch("/v1/session", { credentials: "same-origin" });
  if (res.ok) { const who = await res.json(); document.getElementById("who").textContent = `signed in as ${who.name}`; }
})();
