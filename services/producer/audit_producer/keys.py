"""The key service's client: each subject's pseudonym and data key, fetched with a signed request and cached for
a bounded time (the erasure delay: a key destroyed at the service may still seal new events here until then)."""

import asyncio
import base64
import importlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from audit_producer.errors import KeyServiceError
from audit_schemas.escrow import ESCROW_REQUEST_DOMAIN, EscrowGrant, EscrowRequest
from audit_schemas.keyservice import KEY_REQUEST_DOMAIN, MAX_SUBJECTS, KeyGrant, KeyRequest
from audit_schemas.signing import EventSigner

if TYPE_CHECKING:
    import httpx

_MAX_CACHED: Final = 100_000


@dataclass(frozen=True, slots=True)
class SubjectKey:
    """A subject's pseudonym and the key (and its generation) that seals its fields."""

    pseudonym: str
    generation: int
    key: bytes


class KeyClient:
    """Fetches subjects' keys from the key service; one request per batch of subjects not cached."""

    def __init__(self, url: str, signer: EventSigner, *, timeout_s: float, cache_s: float) -> None:
        try:
            self._httpx = importlib.import_module("httpx")
        except ImportError as e:  # the core library stays free of an HTTP client unless sealing is used
            raise ImportError(
                "sealing personal fields needs the `keys` extra: pip install 'audit-trail-producer[keys]'"
            ) from e
        self._base = url.rstrip("/")
        self._signer = signer
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._cache: dict[tuple[str, str], tuple[SubjectKey, float]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[SubjectKey]] = {}
        self._queued: dict[str, list[str]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.requests = 0

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def keys(self, tenant: str, subjects: list[str]) -> dict[str, SubjectKey]:
        """Each subject's key: from the cache while fresh, else from the service (KeyServiceError when it fails).

        Misses of concurrent actions are gathered into one request per tenant (up to 256 subjects), so a cold cache
        under load costs a round trip per batch, not per person."""
        now = time.monotonic()
        out: dict[str, SubjectKey] = {}
        waiting: dict[str, asyncio.Future[SubjectKey]] = {}
        for subject in dict.fromkeys(subjects):
            cached = self._cache.get((tenant, subject))
            if cached is not None and cached[1] > now:
                out[subject] = cached[0]
                continue
            future = self._inflight.get((tenant, subject))
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._inflight[(tenant, subject)] = future
                self._queued.setdefault(tenant, []).append(subject)
            waiting[subject] = future
        if self._queued and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        for subject, future in waiting.items():
            out[subject] = await asyncio.shield(future)
        return out

    async def _flush(self) -> None:
        """Fetch every queued subject, one request per tenant and 256 subjects, once this tick's callers joined."""
        await asyncio.sleep(0)
        queued, self._queued, self._flusher = self._queued, {}, None
        for tenant, subjects in queued.items():
            for start in range(0, len(subjects), MAX_SUBJECTS):
                batch = subjects[start : start + MAX_SUBJECTS]
                try:
                    fetched = await self._fetch_batch(tenant, batch)
                except Exception as e:
                    error = e if isinstance(e, KeyServiceError) else KeyServiceError(f"key request failed: {e!r}")
                    for subject in batch:
                        future = self._inflight.pop((tenant, subject))
                        future.set_exception(error)
                        future.exception()  # retrieved: a waiter re-raises it; a cancelled caller leaves no warning
                    continue
                for subject in batch:
                    self._inflight.pop((tenant, subject)).set_result(fetched[subject])

    async def _post(self, path: str, domain: str, body: bytes) -> "httpx.Response":
        """`body` signed for `domain` with the service's key, posted to the key service."""
        headers = {name: value.decode() for name, value in self._signer.headers(domain, None, body)}
        headers["content-type"] = "application/json"
        if self._client is None:
            self._client = self._httpx.AsyncClient(timeout=self._timeout_s)
        try:
            answer: httpx.Response = await self._client.post(self._base + path, content=body, headers=headers)
        except self._httpx.HTTPError as e:
            raise KeyServiceError(f"the key service at {self._base} did not answer: {e!r}") from e
        return answer

    async def resolve_escrow(self, tenant: str, event_id: uuid.UUID, escrow: str) -> EscrowGrant:
        """The escrowed fields of one event, sealed by the key service under their subjects' keys."""
        body = EscrowRequest(tenant=tenant, event_id=event_id, escrow=escrow, issued_at=datetime.now(UTC))
        answer = await self._post("/v1/subject-keys/escrow", ESCROW_REQUEST_DOMAIN, body.model_dump_json().encode())
        if answer.status_code != 200:
            raise KeyServiceError(
                f"the key service refused the escrow of event {event_id}: {answer.status_code} {_detail(answer)}",
                retriable=answer.status_code >= 500,
            )
        try:
            return EscrowGrant.model_validate_json(answer.content)
        except ValidationError as e:
            raise KeyServiceError(f"the key service's answer is not an escrow grant: {e}") from e

    async def _fetch_batch(self, tenant: str, subjects: list[str]) -> dict[str, SubjectKey]:
        request = KeyRequest(
            tenant=tenant, subjects=tuple(subjects), issued_at=datetime.now(UTC), request_id=uuid.uuid4()
        )
        answer = await self._post("/v1/subject-keys", KEY_REQUEST_DOMAIN, request.model_dump_json().encode())
        if answer.status_code != 200:
            raise KeyServiceError(
                f"the key service refused the keys of {len(subjects)} subject(s) of tenant {tenant}: "
                f"{answer.status_code} {_detail(answer)}",
                retriable=answer.status_code >= 500,
            )
        try:
            grant = KeyGrant.model_validate_json(answer.content)
        except ValidationError as e:
            raise KeyServiceError(f"the key service's answer is not a key grant: {e}") from e
        by_subject = {g.subject: g for g in grant.keys if grant.tenant == tenant}
        if set(by_subject) != set(subjects):
            raise KeyServiceError("the key service's grant does not name exactly the subjects asked for")
        expires = time.monotonic() + min(self._cache_s, grant.ttl_s)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()  # bounded: a burst of distinct subjects costs one more request each
        out: dict[str, SubjectKey] = {}
        for subject, g in by_subject.items():
            key = SubjectKey(g.pseudonym, g.generation, base64.urlsafe_b64decode(g.key + "="))
            self._cache[(tenant, subject)] = (key, expires)
            out[subject] = key
        return out


def _detail(answer: "httpx.Response") -> str:
    try:
        return str(json.loads(answer.content).get("detail"))
    except (ValueError, AttributeError):
        return answer.text[:200]
