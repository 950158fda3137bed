"""Console sign-in: a credential pasted once becomes an HttpOnly session cookie; sign-out ends it server-side."""

import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, Field

from audit_query.auth import SESSION_COOKIE, secret_hash
from audit_query.deps import ControlDep, CurrentPrincipal, SettingsDep, authenticate
from audit_query.errors import UnauthorizedError

router = APIRouter(prefix="/v1/session", tags=["session"])


class SignIn(BaseModel):
    """The credential to open a session with: an API token or an OIDC access token."""

    credential: Annotated[str, Field(min_length=1, max_length=16384)]


class SessionPublic(BaseModel):
    """Who is signed in, with what."""

    name: str
    scopes: list[str]
    tenants: list[str] | None
    """null: every tenant."""


@router.post("", response_model=SessionPublic, summary="Sign in (sets the session cookie)")
async def sign_in(
    request: Request,
    response: Response,
    body: Annotated[SignIn, Body()],
    control: ControlDep,
    settings: SettingsDep,
) -> SessionPublic:
    """Check the credential once; the browser then holds only an opaque session id in an HttpOnly cookie."""
    principal = await authenticate(request, body.credential.strip(), control)
    session_id = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    ends = principal.session_end(now, timedelta(seconds=settings.session_ttl_s))
    if ends <= now:
        raise UnauthorizedError("the credential has expired: sign in with a fresh one", invalid=True)
    await control.open_session(secret_hash(session_id), principal, ends)
    secure = settings.cookie_secure if settings.cookie_secure is not None else request.url.scheme == "https"
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=max(1, int((ends - now).total_seconds())),
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    request.state.principal = principal
    tenants = None if principal.tenants is None else sorted(principal.tenants)
    return SessionPublic(name=principal.name, scopes=sorted(principal.scopes), tenants=tenants)


@router.get("", response_model=SessionPublic, summary="Who is signed in")
async def whoami(principal: CurrentPrincipal) -> SessionPublic:
    """The caller, however it authenticated."""
    tenants = None if principal.tenants is None else sorted(principal.tenants)
    return SessionPublic(name=principal.name, scopes=sorted(principal.scopes), tenants=tenants)


@router.delete("", status_code=204, summary="Sign out (ends the session server-side)")
async def sign_out(request: Request, response: Response, control: ControlDep) -> Response:
    """The session row is ended, so a copied cookie stops working too."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        await control.end_session(secret_hash(session))
    response.status_code = 204
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
