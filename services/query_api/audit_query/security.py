"""HTTP hardening: security headers on every response and an access log of who read what."""

from typing import Final

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("audit_query.access")

HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
"""No inline scripts (the pages load their scripts from files), no framing, no sniffing, no referrer."""


def carries_audit_data(path: str) -> bool:
    """Whether a response to `path` may hold audit data (every API answer and the console's pages, not its static
    assets): such answers are `Cache-Control: no-store`, so Back after sign-out shows nothing from a cache."""
    return not path.startswith(("/static/", "/favicon"))


class SecurityHeaders:
    """ASGI middleware: adds the headers above (and no-store wherever audit data may be), drops any `server`
    header, and logs authenticated requests."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if carries_audit_data(scope["path"]):
                    headers["cache-control"] = "no-store"
                if "server" in headers:
                    del headers["server"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            principal = scope.get("state", {}).get("principal")
            if principal is not None:
                route = scope.get("route")
                log.info(
                    "request",
                    principal=principal.name,
                    principal_kind=principal.kind,
                    method=scope["method"],
                    route=getattr(route, "path", scope["path"]),
                    tenants=principal.tenant_setting,
                    status=status,
                )
