"""Prometheus metrics of the query API: request latency by route template, method and status."""

import hashlib
import hmac
import os
import time
from typing import Annotated, Final

from fastapi import FastAPI, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit_query.deps import AdminDep
from audit_query.errors import UnauthorizedError

REQUEST_SECONDS: Final = Histogram(
    "audit_query_request_duration_seconds",
    "Time to answer a request, by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def exposition() -> bytes:
    """The samples to serve: this process's, or with several workers (PROMETHEUS_MULTIPROC_DIR set by
    `audit-query serve --workers N`) every worker's, added up by prometheus_client's multiprocess collector."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def instrument(app: FastAPI, *, public: bool = True, token: str | None = None) -> None:
    """Time every request and serve `/metrics`: to the bearer of `token` when one is set, else without a credential
    when `public`, else to audit:admin."""

    app.add_middleware(RequestTimer)

    if token is not None:
        expected = hashlib.sha256(token.encode()).digest()

        @app.get("/metrics", include_in_schema=False)
        async def scrape(authorization: Annotated[str | None, Header()] = None) -> Response:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                hashlib.sha256(given.strip().encode()).digest(), expected
            ):
                raise UnauthorizedError("/metrics needs the metrics bearer token", invalid=bool(authorization))
            return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    elif public:

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(exposition(), media_type=CONTENT_TYPE_LATEST)

    else:

        @app.get("/metrics", include_in_schema=False)
        async def admin_metrics(principal: AdminDep) -> Response:
            return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


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
