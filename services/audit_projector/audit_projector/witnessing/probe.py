"""What `verify --integrity` asks the witnesses: the size each last cosigned for every origin, learnt as the spec
allows (a submission from size 0 answers 409 with it), held against the tree; and the refusals the log recorded."""

from dataclasses import dataclass

import asyncpg

from audit_projector.config import Settings
from audit_projector.repository import quoted
from audit_projector.witnessing.client import Result, WitnessClient


@dataclass(frozen=True, slots=True)
class WitnessFinding:
    origin: str
    text: str


async def probe_witnesses(
    conn: asyncpg.Connection, settings: Settings, clients: list[WitnessClient]
) -> tuple[list[WitnessFinding], list[str]]:
    """Findings (a tree smaller than a witnessed one; refusals on record) and notes (a witness not asked)."""
    control = quoted(settings.control_schema)
    prefix = f"{settings.log_name}/"
    findings: list[WitnessFinding] = []
    notes: list[str] = []
    newest = await conn.fetch(
        f"""SELECT DISTINCT ON (origin) origin, tree_size, note FROM {control}.checkpoints
             WHERE starts_with(origin, $1) ORDER BY origin, tree_size DESC""",
        prefix,
    )
    trees = {
        f"{prefix}{r['topic']}/{r['partition']}": r["size"]
        for r in await conn.fetch("SELECT topic, partition, size FROM merkle_trees")
    }
    for client in clients:
        for row in newest:
            origin = row["origin"]
            answer = await client.add_checkpoint(0, [], row["note"])
            if answer.result is Result.CONFLICT and answer.witness_size is not None:
                held = trees.get(origin, 0)
                if answer.witness_size > held:
                    text = (
                        f"witness {client.name} has cosigned {answer.witness_size} leaves of {origin}, "
                        f"but the tree holds {held} (rolled back)"
                    )
                    findings.append(WitnessFinding(origin, text))
            elif answer.result is not Result.COSIGNED:
                notes.append(f"witness {client.name} not asked about {origin}: {answer.result.value} ({answer.detail})")
    for r in await conn.fetch(
        f"""SELECT witness, origin, tree_size, status, witness_size, detail, refused_at
              FROM {control}.witness_refusals WHERE starts_with(origin, $1) ORDER BY refused_at""",
        prefix,
    ):
        when = f"{r['refused_at']:%Y-%m-%d %H:%M:%S}"
        text = f"witness {r['witness']} refused {r['origin']} at size {r['tree_size']} on {when}: {r['detail']}"
        findings.append(WitnessFinding(r["origin"], text))
    return findings, notes
