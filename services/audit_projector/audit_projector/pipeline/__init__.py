"""The projector's hot path as stages a reader can follow by their names: `fetching` (poll, probe) → `decoding`
(decode and verify provenance) → `planning` (rows, dead letters, blocks, the offset to store) → `writing` (commit,
isolating refused records) → `trees` (Merkle leaves and nodes); `positions` keeps each partition's stored offset,
tree, skips and block in step with the consumer, and `loop` wires them into one topic's `Pipeline`."""

from audit_projector.pipeline.decoding import Decoded
from audit_projector.pipeline.loop import Pipeline, months_ahead

__all__ = ["Decoded", "Pipeline", "months_ahead"]
