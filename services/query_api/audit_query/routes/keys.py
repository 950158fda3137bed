"""The key service: a producer's signed request for its subjects' keys (see `audit_schemas.keyservice`)."""

import base64
import time
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ValidationError

from audit_query.deps import ControlDep, SettingsDep
from audit_query.errors import BadRequestError, ForbiddenError, NotFoundError, UnauthorizedError
from audit_query.keystore.store import KeyStore, SubjectKey
from audit_query.repository.control import ProducerKey
from audit_schemas.escrow import (
    ESCROW_REQUEST_DOMAIN,
    EscrowError,
    EscrowGrant,
    EscrowRequest,
    Subject,
    open_escrow,
)
from audit_schemas.keyservice import KEY_REQUEST_DOMAIN, KEY_REQUEST_SKEW_S, KeyGrant, KeyRequest, SubjectGrant
from audit_schemas.sealing import Sealed, seal
from audit_schemas.signing import signature_of, verify

router = APIRouter(prefix="/v1/subject-keys", tags=["keys"])
RequestT = TypeVar("RequestT", KeyRequest, EscrowRequest)
_MAX_BODY = 64 * 1024


class _SeenRequests:
    """Request ids answered within the skew window: a captured request is not answered twice."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def first(self, request_id: str) -> bool:
        now = time.monotonic()
        if len(self._seen) > 50_000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < 2 * KEY_REQUEST_SKEW_S}
        if request_id in self._seen:
            return False
        self._seen[request_id] = now
        return True


_seen = _SeenRequests()


async def key_store(request: Request) -> KeyStore:
    store: KeyStore | None = request.app.state.keys
    if store is None:
        raise NotFoundError("this query service has no key store (AUDIT_QUERY_KEYSTORE_URL is not set)")
    return store


KeyStoreDep = Annotated[KeyStore, Depends(key_store)]


@router.post(
    "",
    response_model=KeyGrant,
    summary="Subjects' pseudonyms and data keys, for a producer (request signed with its registered key)",
    responses={401: {"description": "Unsigned, badly signed, stale or replayed request, or an unknown key."}},
)
async def grant_keys(request: Request, control: ControlDep, settings: SettingsDep, store: KeyStoreDep) -> KeyGrant:
    """Signed like an event (headers `audit-key-id`, `audit-signature`) over the body with the key-request
    domain; the key must be registered and valid for the tenant. Keys may be cached for `ttl_s` seconds."""
    body, producer = await _signed_body(request, control, KEY_REQUEST_DOMAIN)
    asked = _parsed(KeyRequest, body, "a key request")
    _fresh(asked.issued_at)
    if not _seen.first(str(asked.request_id)):
        raise UnauthorizedError("this key request was answered already (request_id replayed)")
    if not producer.serves(asked.tenant):
        raise ForbiddenError(f"producer key {producer.key_id} is not registered for tenant {asked.tenant}")
    keys = await store.subject_keys(asked.tenant, asked.subjects)
    return KeyGrant(
        tenant=asked.tenant,
        ttl_s=settings.key_ttl_s,
        issued_at=datetime.now(UTC),
        keys=tuple(
            SubjectGrant(
                subject=subject,
                pseudonym=k.pseudonym,
                generation=k.generation,
                key=base64.urlsafe_b64encode(k.key).rstrip(b"=").decode(),
            )
            for subject, k in keys.items()
        ),
    )


async def _signed_body(request: Request, control: ControlDep, domain: str) -> tuple[bytes, ProducerKey]:
    """The request's body, once its signature by a registered, valid producer key over `domain` is checked."""
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise BadRequestError(f"a request here is at most {_MAX_BODY} bytes")
    try:
        signed = signature_of([(k.lower(), v.encode()) for k, v in request.headers.items()])
    except ValueError as e:
        raise UnauthorizedError(f"key request: {e}") from e
    if signed is None:
        raise UnauthorizedError("a key request must be signed (headers audit-key-id and audit-signature)")
    key_id, signature = signed
    producer = await control.producer_key(key_id)
    if producer is None:
        raise UnauthorizedError(f"no valid registered producer key {key_id!r}")
    if not verify(producer.public_key, signature, domain, None, body):
        raise UnauthorizedError("the key request's signature does not verify")
    return body, producer


def _parsed(model: type[RequestT], body: bytes, what: str) -> RequestT:
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise BadRequestError(f"not {what}: {e.errors()[0]['msg']} at {e.errors()[0]['loc']}") from e


def _fresh(issued_at: datetime) -> None:
    skew = abs((datetime.now(UTC) - issued_at).total_seconds())
    if skew > KEY_REQUEST_SKEW_S:
        raise UnauthorizedError(f"the request was issued {skew:.0f} s from now (at most {KEY_REQUEST_SKEW_S:.0f})")


class EscrowKey(BaseModel):
    """The key service's escrow public key (X25519, base64url): pin it in AUDIT_PRODUCER_KEY_ESCROW_PUBLIC_KEY."""

    public_key: str


@router.get("/escrow-key", response_model=EscrowKey, summary="The escrow public key fail-open producers seal to")
async def escrow_key(store: KeyStoreDep) -> EscrowKey:
    public = (await store.escrow_key()).public_key().public_bytes_raw()
    return EscrowKey(public_key=base64.urlsafe_b64encode(public).rstrip(b"=").decode())


@router.post(
    "/escrow",
    response_model=EscrowGrant,
    summary="Turn a fail-open producer's escrow into fields sealed under the subjects' keys (signed request)",
)
async def resolve_escrow(request: Request, control: ControlDep, store: KeyStoreDep) -> EscrowGrant:
    """The escrow opens only for its tenant and event; each value comes back sealed under its subject's key, at
    its path, exactly as the producer would have sealed it with the keys at hand."""
    body, producer = await _signed_body(request, control, ESCROW_REQUEST_DOMAIN)
    asked = _parsed(EscrowRequest, body, "an escrow request")
    _fresh(asked.issued_at)
    if not producer.serves(asked.tenant):
        raise ForbiddenError(f"producer key {producer.key_id} is not registered for tenant {asked.tenant}")
    try:
        held = open_escrow(await store.escrow_key(), asked.escrow, asked.tenant, asked.event_id)
    except EscrowError as e:
        raise BadRequestError(str(e)) from e
    keys = await store.subject_keys(asked.tenant, list(held.subjects.values()))
    by_role = {role: keys[subject] for role, subject in held.subjects.items()}
    sealed: dict[str, Sealed] = {}
    for path, value in held.values.items():
        role = _role_of(path, by_role)
        if role is None:
            raise BadRequestError(f"the escrow names no subject for {path}")
        k = by_role[role]
        sealed[path] = seal(k.key, k.pseudonym, k.generation, value, asked.tenant, asked.event_id, path)
    return EscrowGrant(pseudonyms={role: k.pseudonym for role, k in by_role.items()}, sealed=sealed)


def _role_of(path: str, roles: dict[Subject, SubjectKey]) -> Subject | None:
    """Whose key seals `path`: the actor's fields the actor's, the entity's id the entity's, change-set values and
    log fields the entity's when it is a subject, else the actor's."""
    if path.startswith(("actor.", "request.")):
        return "actor" if "actor" in roles else None
    if path == "entity.id":
        return "entity" if "entity" in roles else None
    if path.startswith(("changes.", "fields.")):
        return "entity" if "entity" in roles else ("actor" if "actor" in roles else None)
    return None
