"""Proofs: an entry's inclusion in a signed checkpoint, consistency between two tree sizes, the signing keys."""

import base64
from collections.abc import Callable
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from audit_query.deps import ReaderDep, RepositoryDep, SettingsDep
from audit_query.errors import BadRequestError, NotFoundError
from audit_query.repository import ProofRepository
from audit_schemas import merkle

router = APIRouter(tags=["proofs"])


class KeyPublic(BaseModel):
    """A key that signs checkpoints, in the note verifier-key format."""

    name: Annotated[str, Field(description="The key's name, as its signature lines in a note carry it.")]
    key_hash: Annotated[
        str, Field(description="8 hex digits: the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key).")
    ]
    verifier_key: Annotated[
        str,
        Field(description="`<name>+<key hash>+<base64(0x01 ‖ Ed25519 public key)>`: what an auditor pins."),
    ]


class CheckpointPublic(BaseModel):
    """A signed tree head: origin, size, root (base64) and the signed note itself."""

    origin: Annotated[str, Field(description="`<log name>/<topic>/<partition>`: which tree.")]
    tree_size: Annotated[int, Field(description="Leaves the tree held when signed.")]
    root_hash: Annotated[str, Field(description="base64 of the 32-byte RFC 9162 root hash at that size.")]
    note: Annotated[
        str,
        Field(
            description="The C2SP signed note: the checkpoint body (origin, size, root), the log's signature lines, "
            "then the witnesses' cosignature lines (C2SP tlog-cosignature v1) gathered so far."
        ),
    ]
    cosigned_by: Annotated[
        list[str], Field(description="Names of the witnesses whose cosignatures the note carries (verify them).")
    ] = []


class InclusionProof(BaseModel):
    """Everything an auditor needs to check one entry offline: the record, where it sits, and the proof."""

    audit_id: Annotated[UUID, Field(description="The entry (its start event's audit id).")]
    topic: Annotated[str, Field(description="Kafka topic of the start event's record.")]
    partition: Annotated[int, Field(description="Its partition: each partition has a tree of its own.")]
    offset: Annotated[int, Field(description="Its Kafka offset.")]
    leaf_index: Annotated[int, Field(description="Its leaf's position in the partition's tree (0-based).")]
    leaf_data: Annotated[
        str,
        Field(
            description="base64 of the raw record's leaf encoding (schemas/README.md, 'Merkle leaves'); "
            "SHA-256(0x00 ‖ data) is the leaf hash."
        ),
    ]
    tree_size: Annotated[int, Field(description="Size of the tree the proof leads to: the checkpoint's size.")]
    inclusion_proof: Annotated[
        list[str],
        Field(description="base64 sibling hashes from the leaf up to the root (RFC 9162 §2.1.3.1), in order."),
    ]
    checkpoint: Annotated[str, Field(description="The signed checkpoint (C2SP note) whose root the proof leads to.")]


class ConsistencyProof(BaseModel):
    """A proof that the tree of `to` leaves extends the tree of `from` leaves (RFC 9162 §2.1.4)."""

    origin: Annotated[str, Field(description="`<log name>/<topic>/<partition>`: which tree.")]
    from_size: Annotated[int, Field(description="The older, smaller tree size.")]
    to_size: Annotated[int, Field(description="The newer tree size.")]
    proof: Annotated[
        list[str], Field(description="base64 node hashes of the consistency proof (RFC 9162 §2.1.4.1), in order.")
    ]


def _proofs(request: Request) -> ProofRepository:
    proofs: ProofRepository = request.app.state.proofs
    return proofs


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


async def _with_nodes(
    proofs: ProofRepository, topic: str, partition: int, build: Callable[[merkle.NodeReader], list[bytes]]
) -> list[bytes]:
    """Run a proof builder twice: once to learn which nodes it reads, once with them fetched in bulk."""
    wanted: list[tuple[int, int]] = []

    def record(level: int, index: int) -> bytes:
        wanted.append((level, index))
        return bytes(32)

    build(record)
    found = await proofs.nodes(topic, partition, wanted)
    missing = [w for w in wanted if w not in found]
    if missing:
        raise NotFoundError(f"the tree of {topic}/{partition} lacks nodes {missing[:3]}: run verify --integrity")
    return build(lambda level, index: found[(level, index)])


@router.get("/v1/keys", response_model=list[KeyPublic], summary="Checkpoint signing keys")
async def keys(principal: ReaderDep, request: Request) -> list[KeyPublic]:
    """Every key that ever signed a checkpoint (old keys stay listed, so old checkpoints still verify)."""
    rows = await _proofs(request).keys()
    return [KeyPublic(name=r["name"], key_hash=f"{r['key_hash']:08x}", verifier_key=r["verifier_key"]) for r in rows]


@router.get("/v1/checkpoints", response_model=list[CheckpointPublic], summary="Signed checkpoints of a partition")
async def checkpoints(
    principal: ReaderDep,
    request: Request,
    settings: SettingsDep,
    topic: Annotated[str, Query(max_length=249)],
    partition: Annotated[int, Query(ge=0, le=100_000)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CheckpointPublic]:
    """Newest first. A checkpoint is a size and a root hash: it reveals no tenant's content."""
    rows = await _proofs(request).checkpoints(f"{settings.log_name}/{topic}/{partition}", limit)
    return [
        CheckpointPublic(
            origin=r["origin"],
            tree_size=r["tree_size"],
            root_hash=_b64(r["root_hash"]),
            note=r["note"],
            cosigned_by=list(r["cosigned_by"]),
        )
        for r in rows
    ]


@router.get(
    "/v1/checkpoints/consistency", response_model=ConsistencyProof, summary="Consistency proof between two sizes"
)
async def consistency(
    principal: ReaderDep,
    request: Request,
    settings: SettingsDep,
    topic: Annotated[str, Query(max_length=249)],
    partition: Annotated[int, Query(ge=0, le=100_000)],
    from_size: Annotated[int, Query(alias="from", ge=0)],
    to_size: Annotated[int, Query(alias="to", ge=0)],
) -> ConsistencyProof:
    """Proves the newer tree keeps every leaf of the older one: the log is append-only between them."""
    proofs = _proofs(request)
    size = await proofs.tree_size(topic, partition)
    if not from_size <= to_size <= size:
        raise BadRequestError(f"need from <= to <= {size} (the tree's size)")
    path = await _with_nodes(proofs, topic, partition, lambda node: merkle.consistency_proof(from_size, to_size, node))
    origin = f"{settings.log_name}/{topic}/{partition}"
    return ConsistencyProof(origin=origin, from_size=from_size, to_size=to_size, proof=[_b64(p) for p in path])


@router.get("/v1/audit/{audit_id}/proof", response_model=InclusionProof, summary="An entry's inclusion proof")
async def inclusion(
    audit_id: UUID, principal: ReaderDep, request: Request, repo: RepositoryDep, settings: SettingsDep
) -> InclusionProof:
    """The entry's record, its leaf index and a proof against the newest signed checkpoint that covers it."""
    return await _inclusion(_proofs(request), principal.tenant_setting, audit_id, settings.log_name)


@router.get(
    "/v1/proofs",
    summary="A bundle of inclusion proofs (NDJSON), for offline verification",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "One inclusion proof per line."}},
)
async def bundle(
    principal: ReaderDep,
    request: Request,
    settings: SettingsDep,
    audit_id: Annotated[list[UUID], Query(min_length=1, max_length=500, description="Repeat for each entry.")],
) -> PlainTextResponse:
    """One line per entry, as `/v1/audit/{id}/proof` answers; `audit-schemas verify-bundle` checks them all."""
    proofs = _proofs(request)
    lines = [
        (await _inclusion(proofs, principal.tenant_setting, i, settings.log_name)).model_dump_json()
        for i in dict.fromkeys(audit_id)
    ]
    return PlainTextResponse("\n".join(lines) + "\n", media_type="application/x-ndjson")


async def _inclusion(proofs: ProofRepository, tenants: str, audit_id: UUID, log_name: str) -> InclusionProof:
    leaf = await proofs.leaf_of(tenants, audit_id)
    if leaf is None:
        raise NotFoundError(f"no audit entry {audit_id}")
    origin = f"{log_name}/{leaf['topic']}/{leaf['partition']}"
    checkpoint = await proofs.latest_checkpoint(origin, leaf["leaf_index"])
    if checkpoint is None:
        raise NotFoundError(f"entry {audit_id} is not covered by a signed checkpoint yet; retry shortly")
    size, index = checkpoint["tree_size"], leaf["leaf_index"]
    path = await _with_nodes(
        proofs, leaf["topic"], leaf["partition"], lambda node: merkle.inclusion_path(index, size, node)
    )
    return InclusionProof(
        audit_id=audit_id,
        topic=leaf["topic"],
        partition=leaf["partition"],
        offset=leaf["kafka_offset"],
        leaf_index=index,
        leaf_data=_b64(leaf["leaf_data"]),
        tree_size=size,
        inclusion_proof=[_b64(p) for p in path],
        checkpoint=checkpoint["note"],
    )
