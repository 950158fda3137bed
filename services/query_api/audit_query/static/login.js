// Sign in once: the credential is posted in the body (never a URL) and exchanged for an HttpOnly session cookie.
const form = document.getElementById("signin");
const message = document.getElementById("message");
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
  if (res.ok) { location.assign("/"); return; }
  const body = await res.json().catch(() => ({ detail: res.statusText }));
  message.className = "error";
  message.textContent = typeof body.detail === "string" ? body.detail : "sign-in failed";
};
