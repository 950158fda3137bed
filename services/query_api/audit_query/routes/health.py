"""Liveness and readiness: Postgres and Kafka reachability, projector lag and stopped partitions."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from audit_query.deps import PoolsDep, ProbeDep, RepositoryDep, SettingsDep
from audit_query.errors import StoreUnavailableError
from audit_query.models import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    """The process serves requests; dependencies are readiness' business."""
    return Health(status="ok", checks={})


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness",
    responses={503: {"model": Health, "description": "PostgreSQL, which every read needs, does not answer"}},
)
async def readyz(repo: RepositoryDep, pools: PoolsDep, probe: ProbeDep, settings: SettingsDep) -> JSONResponse:
    """Ready while PostgreSQL answers: reads need nothing else.

    Kafka unreachable, projector lag over `max_ready_lag`, a blocked partition, or reads answered by a standby
    further behind the primary than `max_replay_lag_s` make the body say `degraded` (the read model may be stale)
    without taking the read API out of service.
    """
    checks: dict[str, object] = {}
    problems: list[str] = []
    stored: dict[tuple[str, int], int] | None = None
    try:
        await repo.ping()
        stored, blocked = await repo.projector_positions(settings.projector_group)
        replica = await pools.replica()
        checks["postgres"] = {"ok": True}
        checks["reads"] = {"standby": replica.standby, "replay_lag_s": round(replica.lag_s, 3)}
        if replica.lag_s > settings.max_replay_lag_s:
            problems.append(f"reads come from a standby {replica.lag_s:.0f} s behind the primary")
        checks["blocked_partitions"] = blocked
        if blocked:
            problems.append(f"{len(blocked)} partition(s) blocked")
    except StoreUnavailableError as e:
        checks["postgres"] = {"ok": False, "error": str(e)}
        body = Health(status="unavailable", checks=checks, problems=["postgres unreachable"])
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    try:
        ends = await probe.end_offsets(settings.topics)
        checks["kafka"] = {"ok": True}
    except StoreUnavailableError as e:
        checks["kafka"] = {"ok": False, "error": str(e)}
        problems.append("kafka unreachable")
        ends = None
    if ends is not None:
        per_partition = {f"{t}/{p}": max(0, end - stored.get((t, p), 0)) for (t, p), end in sorted(ends.items())}
        lag = sum(per_partition.values())
        checks["projector_lag"] = {"group": settings.projector_group, "total": lag, "partitions": per_partition}
        if settings.max_ready_lag is not None and lag > settings.max_ready_lag:
            problems.append(f"projector {lag} records behind")
    body = Health(status="degraded" if problems else "ok", checks=checks, problems=problems)
    return JSONResponse(body.model_dump(mode="json"), status_code=200)
