"""Prometheus metrics of the query API: request latency by route template, method and status."""

import time
from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest

from audit_query.deps import AdminDep

REQUEST_SECONDS: Final = Histogram(
    "audit_query_request_duration_seconds",
    "Time to answer a request, by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def instrument(app: FastAPI, *, public: bool = True) -> None:
    """Time every request and serve `/metrics` (without a credential when `public`, else to audit:admin)."""

    @app.middleware("http")
    async def timed(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(template, request.method, str(status)).observe(time.perf_counter() - started)

    if public:

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    else:

        @app.get("/metrics", include_in_schema=False)
        async def admin_metrics(principal: AdminDep) -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
