// Sign in once: the credential is posted in the body (never a URL) and exchanged for an HttpOnly session cookie.
const form = document.getElementById("signin");
const message = document.getElementById("message");
const params = new URLSearchParams(location.search);
// Where to go after signing in: only a path of this console (never another origin, a protocol-relative `//host`
// or a backslash trick), else the audit log.
function destination() {
  const next = params.get("next") || "/";
  if (!/^\/(?![\/\\])/.test(next) || next.startsWith("/login") || next.startsWith("/v1/")) return "/";
  const url = new URL(next, location.origin);
  return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
}
if (params.get("expired") === "1") {
  message.className = "error";
  message.textContent = "Your session has ended (it expired or you signed out elsewhere). Sign in again to continue.";
}
form.onsubmit = async (ev) => {
  ev.preventDefault();
  const credential = form.credential.value.trim();
  const res = await fetch("/v1/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ credential }),
  });
  form.credential.value = "";
  if (res.ok) { location.assign(destination()); return; }
  const body = await res.json().catch(() => ({ detail: res.statusText }));
  message.className = "error";
  message.textContent = typeof body.detail === "string" ? body.detail : "sign-in failed";
};
