"""Liveness and readiness: Postgres and Kafka reachability, projector lag and stopped partitions."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from audit_query.deps import ProbeDep, RepositoryDep, SettingsDep
from audit_query.errors import StoreUnavailableError
from audit_query.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process serves requests; dependencies are readiness' business."""
    return Health(status="ok", checks={})


@router.get("/readyz", response_model=Health, summary="Readiness", responses={503: {"model": Health}})
async def readyz(repo: RepositoryDep, probe: ProbeDep, settings: SettingsDep) -> JSONResponse:
    """Ready when Postgres and Kafka answer and the projector has no stopped partition (nor too much lag)."""
    checks: dict[str, object] = {}
    ready = True
    stored: dict[tuple[str, int], int] | None = None
    try:
        await repo.ping()
        stored, blocked = await repo.projector_positions(settings.projector_group)
        checks["postgres"] = {"ok": True}
        checks["blocked_partitions"] = blocked
        ready &= not blocked
    except StoreUnavailableError as e:
        checks["postgres"] = {"ok": False, "error": str(e)}
        ready = False
    try:
        ends = await probe.end_offsets(settings.topics)
        checks["kafka"] = {"ok": True}
    except StoreUnavailableError as e:
        checks["kafka"] = {"ok": False, "error": str(e)}
        ends = None
        ready = False
    if stored is not None and ends is not None:
        per_partition = {f"{t}/{p}": max(0, end - stored.get((t, p), 0)) for (t, p), end in sorted(ends.items())}
        lag = sum(per_partition.values())
        checks["projector_lag"] = {"group": settings.projector_group, "total": lag, "partitions": per_partition}
        if settings.max_ready_lag is not None and lag > settings.max_ready_lag:
            ready = False
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)
