"""Data subjects (admin): lawful erasure, legal holds, and the right of access."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from audit_query.auth import Principal
from audit_query.deps import AdminDep, RepositoryDep, SettingsDep
from audit_query.erasure import ErasureReport, erase_subject
from audit_query.errors import ForbiddenError
from audit_query.models import AuditEntryPublic
from audit_query.routes.keys import KeyStoreDep
from audit_schemas import Actor
from audit_schemas.keyservice import SubjectId

router = APIRouter(prefix="/v1/subjects", tags=["subjects"])
TenantQuery = Annotated[str, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="The subject's tenant.")]
SubjectQuery = Annotated[str, Query(min_length=1, max_length=256, description="The subject's id (e.g. a user id).")]


class SubjectRef(BaseModel):
    """A data subject: its tenant and id (as the producer named it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    subject: SubjectId


class HoldRequest(SubjectRef):
    reason: Annotated[str, Field(min_length=1, max_length=1024)]


class ErasurePublic(BaseModel):
    tenant: str
    pseudonym: str
    key_generations_destroyed: list[int]
    entries: int
    audit_id: str


class HoldPublic(BaseModel):
    tenant: str
    pseudonym: str
    held: bool


class SubjectData(BaseModel):
    """A subject's own entries, opened (right of access)."""

    tenant: str
    pseudonym: str
    entries: list[AuditEntryPublic]


def _covers(principal: Principal, tenant: str) -> None:
    if principal.tenants is not None and tenant not in principal.tenants:
        raise ForbiddenError(f"this credential does not cover tenant {tenant}")


@router.post(
    "/erase",
    response_model=ErasurePublic,
    summary="Erase a subject's personal data (destroy its keys)",
    responses={409: {"description": "The subject is under a legal hold (the detail gives its reason)."}},
)
async def erase(
    body: SubjectRef,
    request: Request,
    principal: AdminDep,
    settings: SettingsDep,
    store: KeyStoreDep,
    subjects: RepositoryDep,
) -> ErasurePublic:
    """Refused (409) under a legal hold. Entries stay, their proofs verify; the subject's sealed fields read
    `{"$erased": true}` from now on. The erasure is itself recorded (`delete` of `data_subject` <pseudonym>)."""
    _covers(principal, body.tenant)
    report: ErasureReport = await erase_subject(
        settings, store, subjects, body.tenant, body.subject, Actor.user(principal.name), request.app.state.unsealer
    )
    return ErasurePublic(
        tenant=report.tenant,
        pseudonym=report.pseudonym,
        key_generations_destroyed=list(report.generations),
        entries=report.entries,
        audit_id=report.audit_id,
    )


@router.put("/hold", response_model=HoldPublic, summary="Place a legal hold: erasure is refused until released")
async def hold(body: HoldRequest, principal: AdminDep, store: KeyStoreDep) -> HoldPublic:
    _covers(principal, body.tenant)
    pseudonym = await store.pseudonym(body.tenant, body.subject)
    await store.hold(body.tenant, pseudonym, body.reason, principal.name)
    return HoldPublic(tenant=body.tenant, pseudonym=pseudonym, held=True)


@router.delete("/hold", response_model=HoldPublic, summary="Release a legal hold")
async def release(tenant: TenantQuery, subject: SubjectQuery, principal: AdminDep, store: KeyStoreDep) -> HoldPublic:
    _covers(principal, tenant)
    pseudonym = await store.pseudonym(tenant, subject)
    await store.release(tenant, pseudonym)
    return HoldPublic(tenant=tenant, pseudonym=pseudonym, held=False)


@router.get("/export", response_model=SubjectData, summary="A subject's own entries, opened (right of access)")
async def export(
    tenant: TenantQuery,
    subject: SubjectQuery,
    principal: AdminDep,
    store: KeyStoreDep,
    subjects: RepositoryDep,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> SubjectData:
    _covers(principal, tenant)
    pseudonym = await store.pseudonym(tenant, subject)
    return SubjectData(
        tenant=tenant, pseudonym=pseudonym, entries=await subjects.subject_data(tenant, pseudonym, limit)
    )
