"""Who is asking: API tokens, OIDC access tokens (JWTs) and console sessions become a Principal."""

import asyncio
import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Literal
from uuid import UUID

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from audit_query.config import Settings
from audit_query.errors import ForbiddenError, UnauthorizedError

TOKEN_PREFIX: Final = "atr_"
SESSION_COOKIE: Final = "audit_session"


class Scope(StrEnum):
    """What a credential may do."""

    READ = "audit:read"
    EXPORT = "audit:export"
    ADMIN = "audit:admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name, scopes and the tenants it may see (None: every tenant)."""

    name: str
    kind: Literal["token", "jwt"]
    scopes: frozenset[str]
    tenants: frozenset[str] | None
    token_id: UUID | None = None
    expires_at: datetime | None = None
    """When the credential itself stops being valid (a JWT's `exp`, a token's expiry): no session outlives it."""

    def session_end(self, now: datetime, ttl: timedelta) -> datetime:
        """When a console session opened now with this credential must end: after `ttl`, or with the credential."""
        end = now + ttl
        return end if self.expires_at is None else min(end, self.expires_at)

    @property
    def tenant_setting(self) -> str:
        """The value of `audit.tenants` for this caller's transactions: `*`, or a comma-separated list."""
        return "*" if self.tenants is None else ",".join(sorted(self.tenants))

    def require(self, scope: Scope) -> None:
        """403 unless the caller holds `scope` (admin holds every scope)."""
        if scope.value not in self.scopes and Scope.ADMIN.value not in self.scopes:
            raise ForbiddenError(f"this credential lacks the {scope.value} scope")

    def as_json(self) -> dict[str, Any]:
        """For a session row."""
        return {
            "name": self.name,
            "kind": self.kind,
            "scopes": sorted(self.scopes),
            "tenants": None if self.tenants is None else sorted(self.tenants),
            "token_id": str(self.token_id) if self.token_id else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Principal":
        tenants = raw.get("tenants")
        return cls(
            name=raw["name"],
            kind=raw["kind"],
            scopes=frozenset(raw["scopes"]),
            tenants=None if tenants is None else frozenset(tenants),
            token_id=UUID(raw["token_id"]) if raw.get("token_id") else None,
            expires_at=datetime.fromisoformat(raw["expires_at"]) if raw.get("expires_at") else None,
        )


def new_secret() -> str:
    """A random API token: 256 bits, URL-safe, recognisable by its prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> bytes:
    """How a token or session id is stored: sha256 (the secrets are 256-bit random, so no slow hash is needed)."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(slots=True)
class JwksCache:
    """The identity provider's signing keys, fetched from its JWKS URL and cached; refetched for an unknown kid."""

    url: str
    ttl_s: float
    _keys: KeySet | None = None
    _fetched: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def keys(self, kid: str | None) -> KeySet:
        async with self._lock:
            stale = time.monotonic() - self._fetched > self.ttl_s
            unknown = kid is not None and self._keys is not None and not _has_kid(self._keys, kid)
            recent = time.monotonic() - self._fetched < 10
            if self._keys is None or stale or (unknown and not recent):
                self._keys = await self._fetch()
                self._fetched = time.monotonic()
            return self._keys

    async def _fetch(self) -> KeySet:
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                return KeySet.import_key_set(response.json())
        except (httpx.HTTPError, ValueError, JoseError) as e:
            raise UnauthorizedError(f"the identity provider's keys are unavailable: {e}") from e


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in keys.keys)


class JwtVerifier:
    """Verifies OIDC access tokens: allowed algorithms only, issuer, audience, expiry and not-before."""

    def __init__(self, settings: Settings) -> None:
        if not (settings.oidc_jwks_url and settings.oidc_issuer and settings.oidc_audience):
            raise ValueError("OIDC is not configured")
        self._settings = settings
        self._jwks = JwksCache(settings.oidc_jwks_url, settings.jwks_cache_s)
        self._claims = jwt.JWTClaimsRegistry(
            leeway=30,
            iss={"essential": True, "value": settings.oidc_issuer},
            aud={"essential": True, "value": settings.oidc_audience},
            exp={"essential": True},
            sub={"essential": True},
        )

    async def verify(self, token: str) -> Principal:
        try:
            header = json.loads(_b64url(token.split(".", 1)[0]))
        except (ValueError, IndexError) as e:
            raise UnauthorizedError("malformed bearer token", invalid=True) from e
        if not isinstance(header, dict) or header.get("alg") not in self._settings.oidc_algorithms:
            raise UnauthorizedError("bearer token signed with an algorithm that is not allowed", invalid=True)
        keys = await self._jwks.keys(header.get("kid") if isinstance(header.get("kid"), str) else None)
        try:
            decoded = jwt.decode(token, keys, algorithms=list(self._settings.oidc_algorithms))
            self._claims.validate(decoded.claims)
        except (JoseError, ValueError) as e:
            raise UnauthorizedError(f"invalid bearer token: {e}", invalid=True) from e
        claims = decoded.claims
        return Principal(
            name=str(claims["sub"]),
            kind="jwt",
            scopes=_scopes(claims.get(self._settings.oidc_scopes_claim)),
            tenants=_tenants(claims.get(self._settings.oidc_tenants_claim)),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _scopes(raw: object) -> frozenset[str]:
    values = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return frozenset(v for v in values if isinstance(v, str) and v in {s.value for s in Scope})


def _tenants(raw: object) -> frozenset[str] | None:
    if raw == "*":
        return None
    if isinstance(raw, list):
        return frozenset(t for t in raw if isinstance(t, str) and t and "," not in t and t != "*")
    return frozenset()
