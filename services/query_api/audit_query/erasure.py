"""Lawful erasure: destroy a subject's keys (unless held), then record the erasure as an audit action that names
the subject by its pseudonym only. Shared by `audit-query subjects erase` and `POST /v1/subjects/erase`."""

from dataclasses import dataclass

from audit_query import selfaudit
from audit_query.config import AdminSettings
from audit_query.keystore.store import KeyStore
from audit_query.repository.subjects import SubjectQueries
from audit_query.selfaudit import SelfAuditError
from audit_query.unsealing import Unsealer
from audit_schemas import Action, Actor

SUBJECT_MODEL = "data_subject"


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What an erasure did."""

    tenant: str
    pseudonym: str
    generations: tuple[int, ...]
    """The key generations destroyed (none: the subject had no key left, e.g. erased before)."""
    entries: int
    """Entries naming the subject, whose personal fields now read as erased."""
    audit_id: str
    """The audit action recording this erasure."""


async def erase_subject(
    settings: AdminSettings,
    store: KeyStore,
    subjects: SubjectQueries,
    tenant: str,
    subject: str,
    by: Actor,
    unsealer: Unsealer | None = None,
) -> ErasureReport:
    """Destroy the subject's keys (HeldError under a legal hold) and record the erasure; SelfAuditError when the
    record could not be published (the keys are gone: run the erasure again to record it)."""
    pseudonym = await store.pseudonym(tenant, subject)
    entries = await subjects.subject_entries(tenant, pseudonym)
    erasure = await store.erase(tenant, pseudonym, str(by.id or by.type.value), None)
    if unsealer is not None:
        unsealer.forget(tenant, pseudonym)
    start, outcome = selfaudit.events(
        Action.DELETE,
        SUBJECT_MODEL,
        pseudonym,
        by,
        tenant,
        {"key_generations_destroyed": list(erasure.generations), "entries": entries},
    )
    try:
        await selfaudit.record(settings, start, outcome)
    except SelfAuditError as e:
        raise SelfAuditError(
            f"the keys of {pseudonym} are destroyed but the erasure was not recorded ({e}); run the erasure again "
            "to record it"
        ) from e
    return ErasureReport(tenant, pseudonym, erasure.generations, entries, start.data.audit_id.hex)
