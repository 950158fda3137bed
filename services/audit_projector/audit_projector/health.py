"""The projector's /healthz, /readyz and /metrics, served from inside its own event loop."""

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audit_projector.state import ProjectorState


def create_health_app(state: ProjectorState) -> FastAPI:
    """Liveness: the process still supervises its pipelines (outages it recovers from keep it alive).

    Readiness: every pipeline projects and keeps up, and no partition is blocked.
    """
    app = FastAPI(title="audit-projector health", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(state.snapshot(), status_code=200 if state.alive else 503)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return JSONResponse(state.snapshot(), status_code=200 if state.ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
