"""The realistic mix every guarantee is tested on: `make demo`'s own actions (all 13 types, execution logs from
structlog and from stdlib logging in a worker thread, a failed action) in two tenants, generated history from
several tenants and actors with failures, an aborted action, a dead-lettered record and an identical re-send.

Small on purpose (about 60 actions, 200 records): one call serves a test; the suite has many that need it.
"""

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import structlog

from audit_producer import AuditProducer
from audit_producer.demo import import_history, perform_all
from audit_producer.logship import add_trace_context
from audit_schemas import OutcomeStatus, encode
from tests.factories import action_event, key_of, log_event, outcome_event, send_keyed

TENANTS = ("demo", "acme", "globex")


@dataclass(frozen=True)
class History:
    """What was recorded, so a test knows what the read model must hold."""

    audit_ids: frozenset[str]
    """Every action that must have exactly one entry."""
    demo_ids: tuple[str, ...]
    """The demo's own actions (tenant `demo` first, then `acme`), in the order performed."""
    failed: frozenset[str]
    aborted: str
    resent: str
    """The action whose start and outcome were sent twice, byte for byte."""
    dead_letters: int
    """Records that must be dead-lettered (not projected)."""
    audit_records: int
    """Records sent to the audit topic (starts, outcomes, the re-sends and the refused one)."""
    min_log_lines: int
    """Execution-log lines shipped at least (the demo's; the shipper may batch)."""


@contextlib.contextmanager
def shipping(audit: AuditProducer) -> Iterator[None]:
    """structlog and stdlib logging wired to ship execution logs through `audit` (as the demo does); restored."""
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            add_trace_context,
            audit.logs,
            structlog.processors.KeyValueRenderer(),
        ],
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    worker = logging.getLogger("resource_service")
    handler = audit.logs.handler()
    worker.addHandler(handler)
    level = worker.level
    worker.setLevel(logging.INFO)
    try:
        yield
    finally:
        worker.removeHandler(handler)
        worker.setLevel(level)
        structlog.reset_defaults()


async def record_history(audit: AuditProducer, bootstrap: str, *, generated: int = 24) -> History:
    """Record the mix through the producer library (and, for what a library never sends, as raw records)."""
    topic = audit.settings.audit_topic
    with shipping(audit):
        demo_ids = await perform_all(audit, "demo")
        demo_ids += await perform_all(audit, "acme")
    generated_ids = await import_history(audit, list(TENANTS), days=3, actions=generated)
    # An action whose start went out but whose body never ran: recorded as aborted (the producer's abort path).
    start = action_event("gx-aborted", action="execute", tenant="globex")
    aborted = outcome_event(start, OutcomeStatus.ABORTED.value)
    await audit.import_event(start)
    await audit.import_event(aborted)
    # An identical re-send (a spool replay after a lost acknowledgement): start, outcome and a log line twice.
    again = action_event("acme-resent", action="sync", tenant="acme")
    again_done = outcome_event(again)
    again_log = log_event(again, "synced", items=3)
    refused = json.loads(encode(action_event("acme-refused", tenant="acme")))
    refused["data"]["action"] = "teleport"
    await send_keyed(
        bootstrap,
        topic,
        [
            (encode(again), key_of(again)),
            (encode(again_done), key_of(again_done)),
            (encode(again), key_of(again)),
            (encode(again_done), key_of(again_done)),
            (json.dumps(refused).encode(), b"acme/resource/acme-refused"),
        ],
    )
    await send_keyed(bootstrap, audit.settings.execution_log_topic, [(encode(again_log), key_of(again_log))] * 2)
    failed = {demo_ids[5], demo_ids[13 + 5]}  # each tenant's `reject` fails on purpose
    ids = {*demo_ids, str(start.data.audit_id), str(again.data.audit_id)}
    return History(
        audit_ids=frozenset(ids | set(generated_ids)),
        demo_ids=tuple(demo_ids),
        failed=frozenset(failed),
        aborted=str(start.data.audit_id),
        resent=str(again.data.audit_id),
        dead_letters=1,
        audit_records=2 * len(demo_ids) + 2 * generated + 2 + 5,
        min_log_lines=2 * 13 * 2,
    )


__all__ = ["TENANTS", "History", "record_history", "shipping"]
