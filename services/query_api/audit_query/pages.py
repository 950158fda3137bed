"""One page of audit entries: cursor in, rows from the repository, signed cursor out."""

import json
from dataclasses import dataclass

from fastapi.responses import Response

from audit_query.auth import Principal
from audit_query.config import Settings
from audit_query.cursor import Cursor, CursorCodec, scope_of
from audit_query.models import AuditFilter, SortField, SortOrder
from audit_query.repository import AuditRepository, check_sort_values


@dataclass(frozen=True, slots=True)
class PageJson:
    """A page of entries as the response body (AuditPage's JSON), and how many entries it holds."""

    body: bytes
    count: int

    def response(self) -> Response:
        return Response(self.body, media_type="application/json")


async def read_page(
    principal: Principal,
    repo: AuditRepository,
    codec: CursorCodec,
    settings: Settings,
    *,
    view: str,
    filters: AuditFilter,
    sort: SortField | str,
    order: SortOrder,
    limit: int | None,
    cursor: str | None,
) -> PageJson:
    """Keyset page; the cursor is bound to `view`, sort, order and filters, so no other query takes it. The rows
    come as JSON from the repository and are joined here, with the cursors, into AuditPage's JSON."""
    # The caller's tenant scope is part of the cursor's scope: a cursor does not carry across principals' views.
    scope = scope_of(
        view=view,
        sort=str(sort),
        order=order.value,
        filters=filters.model_dump(mode="json"),
        tenants=principal.tenant_setting,
    )
    decoded = codec.decode(cursor, scope) if cursor else None
    if decoded is not None:
        check_sort_values(str(sort), decoded.key)
    size = min(limit or settings.default_limit, settings.max_limit)
    backward = decoded is not None and decoded.backward
    rows = await repo.list_entries(
        principal.tenant_setting, filters, str(sort), order, size, decoded.key if decoded else None, backward=backward
    )
    if backward:  # fetched nearest-first: the extra row, if any, is beyond the page's start
        more_before, page = len(rows) > size, rows[:size][::-1]
        more_after = True
    else:
        more_before, page = decoded is not None, rows[:size]
        more_after = len(rows) > size
    next_cursor = codec.encode(Cursor(scope, page[-1].sort_values)) if page and more_after else None
    prev_cursor = codec.encode(Cursor(scope, page[0].sort_values, backward=True)) if page and more_before else None
    body = (
        f'{{"data":[{",".join(r.entry_json for r in page)}],"count":{len(page)},'
        f'"next_cursor":{json.dumps(next_cursor)},"prev_cursor":{json.dumps(prev_cursor)}}}'
    )
    return PageJson(body.encode(), len(page))
