"""All of the projector's SQL, a module per family of tables it owns: the read model's rows and their rollups
(`read_model`), the audit-id registry (`registry`), offsets and the pause fence (`offsets`), blocks and skips
(`blocks`), Merkle trees (`trees`), keys and checkpoints (`signatures`), month partitions (`partitions`) and the
rollup folding (`rollups`); `projection` writes a batch through them in one transaction."""

from audit_projector.repository.offsets import PAUSE_LOCK, pause_state
from audit_projector.repository.projection import ProjectionRepository
from audit_projector.repository.records import (
    Batch,
    Block,
    OffsetFence,
    ProducerKey,
    Skip,
    TreeAppend,
    TreeState,
    WriteResult,
)
from audit_projector.repository.rollups import compact_rollups
from audit_projector.repository.session import open_session, quoted

__all__ = [
    "PAUSE_LOCK",
    "Batch",
    "Block",
    "OffsetFence",
    "ProducerKey",
    "ProjectionRepository",
    "Skip",
    "TreeAppend",
    "TreeState",
    "WriteResult",
    "compact_rollups",
    "open_session",
    "pause_state",
    "quoted",
]
