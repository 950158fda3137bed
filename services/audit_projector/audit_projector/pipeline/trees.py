"""Tree: the leaves a batch adds to each partition's Merkle tree — every consumed record, whatever becomes of it —
and the nodes they complete."""

from aiokafka import ConsumerRecord

from audit_projector.repository import TreeAppend, TreeState
from audit_projector.state import Key
from audit_schemas import merkle


def tree_append(key: Key, before: TreeState, consumed: list[ConsumerRecord]) -> TreeAppend:
    """What `consumed` (in offset order) adds to the partition's tree, from its state `before`."""
    data = [merkle.leaf_data(key[0], key[1], int(r.offset), r.key, list(r.headers or ()), r.value) for r in consumed]
    hashes = [merkle.leaf_hash(d) for d in data]
    frontier, size, nodes = merkle.append_leaves(before.frontier, before.size, hashes)
    leaves = tuple(
        (before.size + i, int(r.offset), h, d) for i, (r, h, d) in enumerate(zip(consumed, hashes, data, strict=True))
    )
    return TreeAppend(key[0], key[1], before, TreeState(size, tuple(frontier)), leaves, tuple(nodes))
