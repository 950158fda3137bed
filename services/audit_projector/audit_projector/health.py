"""The projector's /healthz and /readyz, served from inside its own event loop."""

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from audit_projector.state import ProjectorState


def create_health_app(state: ProjectorState) -> FastAPI:
    """Liveness is 'the loop runs'; readiness also needs no partition stopped at a newer schema."""
    app = FastAPI(title="audit-projector health", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse(state.snapshot(), status_code=200 if state.running else 503)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        return JSONResponse(state.snapshot(), status_code=200 if state.ready else 503)

    return app
