"""The projector keeps an RFC 9162 tree per partition over exactly the records Kafka holds, in offset order."""

import json
from typing import Any

import pytest
from pydantic import SecretStr

from audit_schemas import encode, merkle
from audit_schemas.checkpoint import CheckpointError, NoteSigner, NoteVerifier, open_checkpoint
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


async def _checkpoints(isolated: Isolated, at_least: int) -> list[Any] | None:
    async with isolated.owner() as conn:
        rows = await conn.fetch(
            "SELECT origin, tree_size, root_hash, key_name, key_hash, note"
            f" FROM {isolated.query.control_schema}.checkpoints"
        )
    return rows if len(rows) >= at_least else None


async def test_checkpoints_are_signed_published_and_survive_a_key_rotation(isolated: Isolated) -> None:
    topic = isolated.projector.audit_topic
    first, first_key = NoteSigner.generate("audit-test")
    settings = isolated.projector.model_copy(
        update={
            "checkpoint_key": SecretStr(first_key),
            "checkpoint_every_leaves": 40,
            "checkpoint_every_s": 0.5,
            "probe_interval_s": 0.2,
            "log_name": "audit-test",
        }
    )
    await publish_events(isolated.stack.bootstrap, topic, 200, entities=20)
    async with projector_running(settings):
        await eventually(lambda: _consumed_all(isolated, topic, 200), within=60)
        before = await eventually(lambda: _checkpoints(isolated, 6), within=30)
    second, second_key = NoteSigner.generate("audit-test")
    await publish_events(isolated.stack.bootstrap, topic, 60, entities=20)
    rotated = settings.model_copy(update={"checkpoint_key": SecretStr(second_key)})
    async with projector_running(rotated):
        await eventually(lambda: _consumed_all(isolated, topic, 260), within=60)
        after = await eventually(lambda: _checkpoints(isolated, len(before) + 1), within=30)

    verifiers = [NoteVerifier.parse(first.verifier_key), NoteVerifier.parse(second.verifier_key)]
    records = await read_topic(isolated.stack.bootstrap, topic)
    async with isolated.owner() as conn:
        keys = await conn.fetch(f"SELECT verifier_key FROM {isolated.query.control_schema}.signing_keys")
    assert {k["verifier_key"] for k in keys} == {first.verifier_key, second.verifier_key}, "old keys stay listed"
    latest: dict[str, Any] = {}
    for row in after:
        checkpoint = open_checkpoint(row["note"], verifiers)
        assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (
            row["origin"],
            row["tree_size"],
            row["root_hash"],
        )
        partition = int(row["origin"].rsplit("/", 1)[1])
        assert row["origin"] == f"audit-test/{topic}/{partition}"
        recs = [r for r in records if r.partition == partition][: checkpoint.size]
        leaves = [
            merkle.leaf_hash(merkle.leaf_data(topic, partition, r.offset, r.key, list(r.headers), r.value))
            for r in recs
        ]
        assert merkle.root(leaves) == checkpoint.root
        if row["key_hash"] == second.key_hash:
            latest[row["origin"]] = checkpoint
    assert latest, "the rotated key signs the new checkpoints"
    with pytest.raises(CheckpointError):
        open_checkpoint(after[0]["note"], [NoteVerifier.parse(NoteSigner.generate("audit-test")[0].verifier_key)])
    published = await read_topic(isolated.stack.bootstrap, isolated.projector.checkpoint_topic)
    assert {r.value.decode() for r in published} >= {row["note"] for row in after}, (
        "every stored checkpoint is in Kafka"
    )
