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
        self._url = url.rstrip("/") + "/v1/subject-keys"
        self._signer = signer
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._cache: dict[tuple[str, str], tuple[SubjectKey, float]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[SubjectKey]] = {}
        self._client: httpx.AsyncClient | None = None
        self.requests = 0

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def keys(self, tenant: str, subjects: list[str]) -> dict[str, SubjectKey]:
        """Each subject's key: from the cache while fresh, else from the service (KeyServiceError when it fails)."""
        now = time.monotonic()
        out: dict[str, SubjectKey] = {}
        waiting: dict[str, asyncio.Future[SubjectKey]] = {}
        wanted: list[str] = []
        for subject in dict.fromkeys(subjects):
            cached = self._cache.get((tenant, subject))
            if cached is not None and cached[1] > now:
                out[subject] = cached[0]
            elif (tenant, subject) in self._inflight:
                waiting[subject] = self._inflight[(tenant, subject)]
            else:
                wanted.append(subject)
        if wanted:
            loop = asyncio.get_running_loop()
            mine = {s: loop.create_future() for s in wanted}
            self._inflight.update({(tenant, s): f for s, f in mine.items()})
            try:
                fetched = await self._fetch(tenant, wanted)
            except BaseException as e:
                for future in mine.values():
                    future.set_exception(e if isinstance(e, KeyServiceError) else KeyServiceError(str(e)))
                    future.exception()  # retrieved: waiters re-raise it, nobody else needs to
                raise
            finally:
                for s in wanted:
                    self._inflight.pop((tenant, s), None)
            for s, future in mine.items():
                future.set_result(fetched[s])
            out.update(fetched)
        for subject, future in waiting.items():
            out[subject] = await asyncio.shield(future)
        return out

    async def _fetch(self, tenant: str, subjects: list[str]) -> dict[str, SubjectKey]:
        out: dict[str, SubjectKey] = {}
        for start in range(0, len(subjects), MAX_SUBJECTS):
            out.update(await self._fetch_batch(tenant, subjects[start : start + MAX_SUBJECTS]))
        return out

    async def _fetch_batch(self, tenant: str, subjects: list[str]) -> dict[str, SubjectKey]:
        request = KeyRequest(
            tenant=tenant, subjects=tuple(subjects), issued_at=datetime.now(UTC), request_id=uuid.uuid4()
        )
        body = request.model_dump_json().encode()
        headers = {name: value.decode() for name, value in self._signer.headers(KEY_REQUEST_DOMAIN, None, body)}
        headers["content-type"] = "application/json"
        if self._client is None:
            self._client = self._httpx.AsyncClient(timeout=self._timeout_s)
        self.requests += 1
        try:
            answer = await self._client.post(self._url, content=body, headers=headers)
        except self._httpx.HTTPError as e:
            raise KeyServiceError(f"the key service at {self._url} did not answer: {e!r}") from e
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
