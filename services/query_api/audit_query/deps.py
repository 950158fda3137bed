"""FastAPI dependencies: settings, repositories, the cursor codec, and the caller (a Principal)."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from audit_query.auth import SESSION_COOKIE, TOKEN_PREFIX, JwtVerifier, Principal, Scope, secret_hash
from audit_query.config import Settings
from audit_query.cursor import CursorCodec
from audit_query.errors import UnauthorizedError
from audit_query.kafka import KafkaProbe
from audit_query.live import StreamSlots
from audit_query.pools import Pools
from audit_query.repository import AuditRepository, ControlRepository

_bearer = HTTPBearer(auto_error=False, description="An API token (`atr_…`) or an OIDC access token (JWT).")
_session = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="The console's session cookie.")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_repository(request: Request) -> AuditRepository:
    repository: AuditRepository = request.app.state.repository
    return repository


async def get_pools(request: Request) -> Pools:
    pools: Pools = request.app.state.pools
    return pools


async def get_control(request: Request) -> ControlRepository:
    control: ControlRepository = request.app.state.control
    return control


async def get_probe(request: Request) -> KafkaProbe:
    probe: KafkaProbe = request.app.state.kafka
    return probe


async def get_codec(request: Request) -> CursorCodec:
    codec: CursorCodec = request.app.state.cursor_codec
    return codec


async def get_streams(request: Request) -> StreamSlots:
    streams: StreamSlots = request.app.state.streams
    return streams


SettingsDep = Annotated[Settings, Depends(get_settings)]
StreamsDep = Annotated[StreamSlots, Depends(get_streams)]
RepositoryDep = Annotated[AuditRepository, Depends(get_repository)]
ControlDep = Annotated[ControlRepository, Depends(get_control)]
PoolsDep = Annotated[Pools, Depends(get_pools)]
ProbeDep = Annotated[KafkaProbe, Depends(get_probe)]
CodecDep = Annotated[CursorCodec, Depends(get_codec)]


async def authenticate(request: Request, credential: str, control: ControlRepository) -> Principal:
    """A bearer credential as a Principal: an API token by its prefix, otherwise an OIDC access token."""
    if credential.startswith(TOKEN_PREFIX):
        found = await control.token(secret_hash(credential))
        if found is None:
            raise UnauthorizedError("invalid, expired or revoked API token", invalid=True)
        principal, stale = found
        if stale and principal.token_id is not None:
            await control.touch(principal.token_id)
        return principal
    verifier: JwtVerifier | None = request.app.state.jwt
    if verifier is None or credential.count(".") != 2:
        raise UnauthorizedError("unrecognised bearer token", invalid=True)
    return await verifier.verify(credential)


async def current_principal(
    request: Request,
    control: ControlDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    session: Annotated[str | None, Depends(_session)],
) -> Principal:
    """The caller, from `Authorization: Bearer …` or the console's session cookie; 401 otherwise."""
    if bearer is not None:
        principal = await authenticate(request, bearer.credentials, control)
    elif session:
        found = await control.session(secret_hash(session))
        if found is None:
            raise UnauthorizedError("the session has ended or expired: sign in again", invalid=True)
        principal = found
    else:
        raise UnauthorizedError("a credential is required: an API token, an access token or a session")
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def reader(principal: CurrentPrincipal) -> Principal:
    """The caller, who must hold audit:read."""
    principal.require(Scope.READ)
    return principal


async def exporter(principal: CurrentPrincipal) -> Principal:
    """The caller, who must hold audit:export (reading a whole view at once)."""
    principal.require(Scope.EXPORT)
    return principal


async def admin(principal: CurrentPrincipal) -> Principal:
    """The caller, who must hold audit:admin."""
    principal.require(Scope.ADMIN)
    return principal


ReaderDep = Annotated[Principal, Depends(reader)]
ExporterDep = Annotated[Principal, Depends(exporter)]
AdminDep = Annotated[Principal, Depends(admin)]
