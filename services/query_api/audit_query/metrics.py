"""Prometheus metrics of the query API: request latency by route template, method and status."""

import time
from typing import Final

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_query.deps import AdminDep

REQUEST_SECONDS: Final = Histogram(
    "audit_query_request_duration_seconds",
    "Time to answer a request, by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def instrument(app: FastAPI, *, public: bool = True) -> None:
    """Time every request and serve `/metrics` (without a credential when `public`, else to audit:admin)."""

    app.add_middleware(RequestTimer)

    if public:

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    else:

        @app.get("/metrics", include_in_schema=False)
        async def admin_metrics(principal: AdminDep) -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class RequestTimer:
    """ASGI middleware observing each HTTP request's duration (to its last byte) under its route template; plain
    ASGI rather than an `@app.middleware` function, which runs every request in its own task through a stream."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            REQUEST_SECONDS.labels(template, scope["method"], str(status)).observe(time.perf_counter() - started)
