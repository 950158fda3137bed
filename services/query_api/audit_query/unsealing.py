"""Opening sealed personal fields for the caller: what the caller may see is decrypted, an erased subject's
fields read as `{"$erased": true}`.

Entries carry their sealed fields by path (`sealed`, dropped from the answer once opened); change sets and log
fields carry them inline (`{"$sealed": ...}`). Keys come from the key store in one query per page and are kept
for a few seconds (an erasure made through this process clears them at once).
"""

import json
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final
from uuid import UUID

from audit_query.keystore.store import KeyRef, KeyStore
from audit_query.models import AuditFilter
from audit_schemas.sealing import ERASED, SEALED_MARK, Sealed, SealError, inlined, open_sealed

KEY_CACHE_S: Final = 5.0
"""How long a key (or its absence) is kept here: erasure through another replica shows within this."""
_PLACES: Final = {
    "actor.id": ("user", "id"),
    "actor.display_name": ("user", "display_name"),
    "request.client_ip": ("request", "client_ip"),
    "request.user_agent": ("request", "user_agent"),
    "entity.id": ("entity", "id"),
}
"""Where each sealed path of an action goes in the API's entry."""


def has_sealed(text: str) -> bool:
    """Cheap test of an entry's or line's JSON text: anything to open?"""
    return SEALED_MARK in text or '"sealed"' in text


class Unsealer:
    """Opens sealed values with the key store's keys; without a key store, sealed values read as erased."""

    def __init__(self, store: KeyStore | None) -> None:
        self._store = store
        self._cache: dict[KeyRef, tuple[bytes | None, float]] = {}

    def forget(self, tenant: str, pseudonym: str) -> None:
        """Drop a subject's keys from the cache (after an erasure)."""
        for ref in [r for r in self._cache if r[:2] == (tenant, pseudonym)]:
            del self._cache[ref]

    async def aliased(self, filters: AuditFilter, tenants: str) -> AuditFilter:
        """`filters` with the pseudonyms of the user and entity ids they name (in the tenants they can reach), so
        `user:u-alice` and the user filter find a person whose id travels sealed."""
        if self._store is None:
            return filters
        named = {v for v in (filters.user_id, filters.entity_id) if v is not None}
        for term in filters.terms:
            if term.field in ("user", "entity"):
                named.update(v for v in term.values if not v.endswith("*"))
        if not named:
            return filters
        scope = [filters.tenant] if filters.tenant else (None if tenants == "*" else tenants.split(","))
        return filters.model_copy(update={"aliases": await self._store.aliases(named, scope)})

    async def entry_texts(self, texts: list[str]) -> list[str]:
        """Entries' JSON texts with their sealed fields opened (texts without any come back unchanged)."""
        marked = [i for i, t in enumerate(texts) if has_sealed(t)]
        if not marked:
            return texts
        docs = [json.loads(texts[i]) for i in marked]
        await self.entries(docs)
        out = list(texts)
        for i, doc in zip(marked, docs, strict=True):
            out[i] = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        return out

    async def entries(self, docs: list[dict[str, Any]]) -> None:
        """Open entries (the API's entry objects, with `sealed` by path) in place."""
        keys = await self._keys(ref for doc in docs for ref in _entry_refs(doc))
        for doc in docs:
            _open_entry(doc, keys)

    async def logs(self, docs: list[dict[str, Any]], tenant: str) -> None:
        """Open log lines (the API's line objects, one tenant) in place."""
        keys = await self._keys(
            (tenant, s.sub, s.gen) for doc in docs for _, s in _inline_values(doc.get("fields"), "fields")
        )
        for doc in docs:
            _open_inline(doc, "fields", tenant, UUID(str(doc["log_id"])), keys)

    async def _keys(self, refs: Iterable[KeyRef]) -> dict[KeyRef, bytes]:
        now = time.monotonic()
        wanted = set(refs)
        missing = [r for r in wanted if r not in self._cache or now - self._cache[r][1] > KEY_CACHE_S]
        if missing and self._store is not None:
            found = await self._store.keys(missing)
            for ref in missing:
                self._cache[ref] = (found.get(ref), now)
            if len(self._cache) > 100_000:  # bounded: oldest half goes
                for ref in sorted(self._cache, key=lambda r: self._cache[r][1])[:50_000]:
                    del self._cache[ref]
        out: dict[KeyRef, bytes] = {}
        for ref in wanted:
            key = self._cache.get(ref, (None, 0.0))[0]
            if key is not None:
                out[ref] = key
        return out


def _entry_refs(doc: dict[str, Any]) -> Iterator[KeyRef]:
    tenant = doc["tenant_id"]
    for raw in (doc.get("sealed") or {}).values():
        s = Sealed.model_validate(raw)
        yield tenant, s.sub, s.gen
    outcome = doc.get("outcome") or {}
    for _, s in _inline_values(outcome.get("changes"), "changes"):
        yield tenant, s.sub, s.gen


def _open_entry(doc: dict[str, Any], keys: dict[KeyRef, bytes]) -> None:
    tenant, audit_id = doc["tenant_id"], UUID(str(doc["audit_id"]))
    for path, raw in (doc.pop("sealed", None) or {}).items():
        place = _PLACES.get(path)
        if place is None:
            continue
        parent = doc.get(place[0])
        if parent is None:
            parent = doc[place[0]] = {"request_id": None, "client_ip": None, "user_agent": None}
        parent[place[1]] = _open(Sealed.model_validate(raw), tenant, audit_id, path, keys)
    outcome = doc.get("outcome")
    if isinstance(outcome, dict):
        _open_inline(outcome, "changes", tenant, audit_id, keys)


def _open(sealed: Sealed, tenant: str, event_id: UUID, path: str, keys: dict[KeyRef, bytes]) -> Any:
    key = keys.get((tenant, sealed.sub, sealed.gen))
    if key is None:
        return dict(ERASED)
    try:
        return open_sealed(key, sealed, tenant, event_id, path)
    except SealError:
        return {"$unreadable": True}


def _inline_values(value: Any, path: str) -> Iterator[tuple[str, Sealed]]:
    sealed = inlined(value)
    if sealed is not None:
        yield path, sealed
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _inline_values(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _inline_values(v, f"{path}.{i}")


def _open_inline(parent: dict[str, Any], field: str, tenant: str, event_id: UUID, keys: dict[KeyRef, bytes]) -> None:
    """Replace every inline sealed value under `parent[field]` with what it holds (or the erased marker)."""

    def walk(value: Any, path: str) -> Any:
        sealed = inlined(value)
        if sealed is not None:
            return _open(sealed, tenant, event_id, path, keys)
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        return value

    if parent.get(field) is not None:
        parent[field] = walk(parent[field], field)
