"""The FastAPI application: routes, lifespan resources and error mapping."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib import resources

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from audit_query.config import Settings
from audit_query.cursor import CursorCodec
from audit_query.errors import ERROR_RESPONSES, QueryError
from audit_query.guard import InputGuard
from audit_query.kafka import KafkaProbe
from audit_query.metrics import instrument
from audit_query.repository import AuditRepository
from audit_query.routes import audit, entities, health, traces

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in the lifespan so importing this module connects to nothing."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.cursor_codec = CursorCodec(settings.cursor_secret.get_secret_value().encode())
        app.state.repository = await AuditRepository.open(
            str(settings.database_url), settings.db_schema, timedelta(seconds=settings.unknown_after_s)
        )
        app.state.kafka = KafkaProbe(settings.bootstrap_servers)
        try:
            yield
        finally:
            await app.state.kafka.close()
            await app.state.repository.close()

    app = FastAPI(
        title="Audit Trail query API",
        version="1.0.0",
        description="Who did what to which entity, and when — with each action's execution logs.",
        lifespan=lifespan,
    )
    for module in (audit, entities, traces):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.include_router(health.router)
    instrument(app)
    app.add_middleware(InputGuard)

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse({"detail": "internal error; it was logged"}, status_code=500)

    index = (resources.files("audit_query") / "static" / "index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def ui() -> HTMLResponse:
        return HTMLResponse(index)

    return app
