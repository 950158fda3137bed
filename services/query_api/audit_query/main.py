"""The FastAPI application: routes, lifespan resources, security, static pages and error mapping."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib import resources
from typing import Any, Final

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from audit_query.auth import JwtVerifier
from audit_query.config import Settings
from audit_query.cursor import CursorCodec
from audit_query.errors import ERROR_RESPONSES, QueryError, TooManyRequestsError, UnauthorizedError
from audit_query.guard import InputGuard
from audit_query.kafka import KafkaProbe
from audit_query.keystore.store import KeyStore
from audit_query.live import StreamSlots
from audit_query.metrics import instrument
from audit_query.pools import Pools
from audit_query.repository import AuditRepository, ControlRepository, ProofRepository
from audit_query.routes import audit, deadletters, entities, health, keys, proofs, session, subjects, traces
from audit_query.security import SecurityHeaders
from audit_query.unsealing import Unsealer

log = structlog.get_logger(__name__)

WATCHERS_STOP_S: Final = 2.0
"""How long shutting down waits for the database watchers to notice, before cancelling them."""
STATIC = resources.files("audit_query") / "static"
SWAGGER = resources.files("fastapi_offline") / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; resources open in the lifespan so importing this module connects to nothing."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.cursor_codec = CursorCodec(settings.cursor_secret.get_secret_value().encode())
        pools = await Pools.open(str(settings.database_url), settings.read_dsn(), settings.db_schema)
        app.state.pools = pools
        keks = settings.keks()
        keys = None
        if settings.keystore_url is not None and keks is not None:
            keys = await KeyStore.open(str(settings.keystore_url), settings.keystore_schema, keks)
        app.state.keys = keys
        app.state.unsealer = Unsealer(keys)
        app.state.repository = AuditRepository(
            pools.read, timedelta(seconds=settings.unknown_after_s), app.state.unsealer
        )
        app.state.control = ControlRepository(pools.write, settings.control_schema, on_error=pools.write_failed)
        app.state.proofs = ProofRepository(app.state.repository, settings.control_schema)
        app.state.jwt = JwtVerifier(settings) if settings.oidc_issuer else None
        app.state.kafka = KafkaProbe(settings.bootstrap_servers, security=settings.kafka)
        app.state.streams = StreamSlots(settings.live_streams_per_credential)
        stop = asyncio.Event()
        watchers = [
            asyncio.create_task(pools.watch_swaps(settings.db_schema, stop)),
            asyncio.create_task(pools.follow_failovers(stop, settings.failover_check_s)),
        ]
        try:
            yield
        finally:
            stop.set()
            _, busy = await asyncio.wait(watchers, timeout=WATCHERS_STOP_S)
            for task in busy:  # waiting on a server that does not answer: shutting down does not wait for it
                task.cancel()
            await app.state.kafka.close()
            await pools.close()  # bounded; ends what a cancelled watcher still waits for (asyncpg shields release)
            await asyncio.wait(watchers)
            for task in watchers:
                if not task.cancelled() and task.exception() is not None:
                    log.error("watcher_failed", error=repr(task.exception()))
            if keys is not None:
                await keys.close()

    app = FastAPI(
        title="Audit Trail query API",
        version="1.0.0",
        description="Who did what to which entity, and when — with each action's execution logs. Every data "
        "route needs a credential: an API token or an OIDC access token as `Authorization: Bearer …`, or the "
        "console's session cookie.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    for module in (proofs, audit, entities, traces, deadletters, keys, subjects):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.include_router(session.router, responses={401: ERROR_RESPONSES[401], 400: ERROR_RESPONSES[400]})
    app.include_router(health.router)
    instrument(app, public=settings.public_metrics, token=settings.scrape_token())
    app.add_middleware(InputGuard)
    app.add_middleware(SecurityHeaders)
    app.mount("/static/swagger", StaticFiles(directory=str(SWAGGER)), name="swagger")
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(QueryError)
    async def query_error(request: Request, exc: QueryError) -> JSONResponse:
        headers = {"www-authenticate": exc.challenge} if isinstance(exc, UnauthorizedError) else None
        if isinstance(exc, TooManyRequestsError):
            headers = {"retry-after": str(exc.retry_after_s)}
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse({"detail": "internal error; it was logged"}, status_code=500)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        """The console's icon, for browsers that ask before reading the page's `<link rel="icon">`."""
        return FileResponse(str(STATIC / "favicon.svg"), media_type="image/svg+xml")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/entities", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/entities/{path:path}", response_class=HTMLResponse, include_in_schema=False)
    @app.get("/traces/{trace_id}", response_class=HTMLResponse, include_in_schema=False)
    async def ui() -> FileResponse:
        """The console's one page; it shows the view its URL names (audit log, entities, an entity, a trace)."""
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login() -> FileResponse:
        return FileResponse(str(STATIC / "login.html"))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(str(STATIC / "docs.html"))

    return app


def server_options(settings: Settings, **overrides: object) -> dict[str, Any]:
    """How uvicorn serves the app: no `server` banner; forwarded headers believed only from configured proxies."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "info",
        "access_log": False,  # the service logs each authenticated request itself, with who made it
        "log_config": None,  # uvicorn's records go through the service's own structlog chain
        "server_header": False,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": ",".join(settings.trusted_proxies) or "",
        **overrides,
    }


def server_config(app: FastAPI, settings: Settings, **overrides: object) -> uvicorn.Config:
    """`server_options` for one app in this process."""
    return uvicorn.Config(app, **server_options(settings, **overrides))
