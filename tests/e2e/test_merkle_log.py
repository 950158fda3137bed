"""The projector keeps an RFC 9162 tree per partition over exactly the records Kafka holds, in offset order."""

import json
from typing import Any

import pytest

from audit_schemas import encode, merkle
from tests.conftest import Isolated, projector_running
from tests.factories import action_event, key_of, publish_events, read_topic, send_keyed
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _consumed_all(isolated: Isolated, topic: str, total: int) -> bool:
    async with isolated.owner() as conn:
        stored = await conn.fetchval("SELECT coalesce(sum(size), 0) FROM merkle_trees WHERE topic = $1", topic)
    return bool(stored == total)


async def test_each_partitions_tree_covers_every_record_and_its_proofs_verify(isolated: Isolated) -> None:
    topic = isolated.projector.audit_topic
    await publish_events(isolated.stack.bootstrap, topic, 300, entities=30)
    bad = json.loads(encode(action_event("bad")))
    bad["data"]["action"] = "teleport"
    dup = action_event("dup")
    await send_keyed(
        isolated.stack.bootstrap,
        topic,
        [(json.dumps(bad).encode(), b"acme/resource/bad"), (encode(dup), key_of(dup)), (encode(dup), key_of(dup))],
    )
    small = isolated.projector.model_copy(update={"batch_max_records": 37})
    async with projector_running(small):
        await eventually(lambda: _consumed_all(isolated, topic, 303), within=60)
    # A restart continues each tree where it stopped.
    await publish_events(isolated.stack.bootstrap, topic, 50, entities=30)
    async with projector_running(small):
        await eventually(lambda: _consumed_all(isolated, topic, 353), within=60)

    records = await read_topic(isolated.stack.bootstrap, topic)
    by_partition: dict[int, list[Any]] = {}
    for r in records:
        by_partition.setdefault(r.partition, []).append(r)
    async with isolated.owner() as conn:
        for partition, recs in by_partition.items():
            expected = [
                merkle.leaf_hash(merkle.leaf_data(topic, partition, r.offset, r.key, list(r.headers), r.value))
                for r in recs
            ]
            tree = await conn.fetchrow(
                "SELECT size, frontier FROM merkle_trees WHERE topic = $1 AND partition = $2", topic, partition
            )
            assert tree is not None
            assert tree["size"] == len(recs), "every record is a leaf: projected, dead-lettered or duplicate alike"
            assert merkle.frontier_root(tree["frontier"]) == merkle.root(expected)
            leaves = await conn.fetch(
                """SELECT leaf_index, kafka_offset, leaf_hash FROM merkle_leaves
                    WHERE topic = $1 AND partition = $2 ORDER BY leaf_index""",
                topic,
                partition,
            )
            assert [(r["leaf_index"], r["kafka_offset"]) for r in leaves] == [(i, r.offset) for i, r in enumerate(recs)]
            assert [r["leaf_hash"] for r in leaves] == expected
            nodes = {
                (r["level"], r["node_index"]): r["hash"]
                for r in await conn.fetch(
                    "SELECT level, node_index, hash FROM merkle_nodes WHERE topic = $1 AND partition = $2",
                    topic,
                    partition,
                )
            }

            def node(
                level: int, index: int, nodes: dict[tuple[int, int], bytes] = nodes, leaves: list[bytes] = expected
            ) -> bytes:
                return leaves[index] if level == 0 else nodes[(level, index)]

            size = len(recs)
            root = merkle.root(expected)
            for index in {0, size // 2, size - 1}:
                merkle.verify_inclusion(expected[index], index, size, merkle.inclusion_path(index, size, node), root)
            old = size // 3
            proof = merkle.consistency_proof(old, size, node)
            merkle.verify_consistency(old, size, merkle.root(expected[:old]), root, proof)
