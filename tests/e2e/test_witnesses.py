"""Witnessed checkpoints against litewitness (filippo.io/torchwood v0.6.1), an independent C2SP tlog-witness, on
the realistic mix: two witnesses cosign every origin's newest checkpoint; one down leaves projection alone and k=1
met; a witness whose state the log lost answers 409 and the log resynchronises; and after the rollback attack
(leaves dropped, tree rolled back, checkpoints, cosignatures and witness state deleted) the witness refuses the
forked history, which the log records."""

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from pydantic import AnyHttpUrl

from audit_producer import Actor, AuditProducer, Entity
from audit_projector.config import Settings as ProjectorSettings
from audit_projector.config import WitnessConfig
from audit_projector.published import from_topic
from audit_schemas.checkpoint import CheckpointError, NoteSigner, NoteVerifier, split_note, verifier_key_as
from audit_schemas.cosignature import WitnessKey, open_witnessed
from tests.conftest import Isolated, free_port, projector_cli, projector_running
from tests.e2e.test_integrity import _settled, _signing, roll_back
from tests.e2e.test_proofs import _go, _verify
from tests.history import History, record_history
from tests.polling import eventually
from tests.witness import Litewitness, TestCosigner

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _origins(settings: ProjectorSettings) -> list[str]:
    return [f"{settings.log_name}/{t}/{p}" for t in settings.topics for p in range(settings.partitions)]


def _witnessed(
    isolated: Isolated, witnesses: list[Litewitness], quorum: int, **extra: Any
) -> tuple[ProjectorSettings, NoteSigner]:
    signing, signer = _signing(isolated)
    settings = signing.model_copy(
        update={
            "witnesses": [WitnessConfig(key=w.vkey, url=AnyHttpUrl(w.url)) for w in witnesses],
            "witness_quorum": quorum,
            "witness_interval_s": 0.3,
            **extra,
        }
    )
    for w in witnesses:
        for origin in _origins(settings):
            w.add_log(origin, verifier_key_as(signer.verifier_key, origin))
    return settings, signer


async def _newest(isolated: Isolated) -> dict[str, tuple[int, int]]:
    """Each origin's newest checkpoint size and its number of cosignatures."""
    control = isolated.query.control_schema
    async with isolated.owner() as conn:
        rows = await conn.fetch(
            f"""SELECT c.origin, c.tree_size, (SELECT count(*) FROM {control}.cosignatures k
                                                 WHERE k.origin = c.origin AND k.tree_size = c.tree_size) AS n
                  FROM (SELECT DISTINCT ON (origin) origin, tree_size FROM {control}.checkpoints
                         ORDER BY origin, tree_size DESC) c"""
        )
    return {r["origin"]: (r["tree_size"], r["n"]) for r in rows}


async def _fully_signed(isolated: Isolated) -> bool:
    """Every tree has a checkpoint at its size."""
    newest = await _newest(isolated)
    async with isolated.owner() as conn:
        trees = await conn.fetch("SELECT topic, partition, size FROM merkle_trees WHERE size > 0")
    return bool(trees) and all(newest.get(f"audit-trail/{t}/{p}", (0, 0))[0] == s for t, p, s in trees)


async def _cosigned_by(isolated: Isolated, n: int) -> bool:
    newest = await _newest(isolated)
    return await _fully_signed(isolated) and all(count >= n for _, count in newest.values())


async def witnessed_history(
    isolated: Isolated, audit: AuditProducer, witnesses: list[Litewitness], quorum: int
) -> tuple[ProjectorSettings, NoteSigner, History]:
    """The realistic mix projected with checkpoints cosigned by `witnesses`, until every newest checkpoint has a
    cosignature from each."""
    settings, signer = _witnessed(isolated, witnesses, quorum=quorum)
    async with projector_running(settings):
        history = await record_history(audit, isolated.stack.bootstrap)
        await eventually(lambda: _settled(isolated, isolated.name, history), within=60)
        await eventually(lambda: _cosigned_by(isolated, len(witnesses)), within=60)
    return settings, signer, history


def _requests(witness: str, result: str) -> float:
    value = REGISTRY.get_sample_value("audit_projector_witness_requests_total", {"witness": witness, "result": result})
    return value or 0.0


async def test_two_witnesses_cosign_every_newest_checkpoint_and_verifiers_require_them(
    isolated: Isolated,
    audit: AuditProducer,
    witnesses: list[Litewitness],
    api: httpx.AsyncClient,
    tmp_path: Path,
    go_checker: Path,
) -> None:
    settings, signer, history = await witnessed_history(isolated, audit, witnesses, quorum=2)
    newest = await _newest(isolated)
    for w in witnesses:  # the witnesses' own records agree with the log's newest checkpoints
        held = w.sizes()
        assert {o: held[o] for o in newest} == {o: size for o, (size, _) in newest.items()}

    # Offline, an auditor pins the log key, both witness keys and k=2: every newest note on the topic verifies.
    notes: dict[str, str] = {}
    for p in await from_topic(settings.bootstrap_servers, settings.checkpoint_topic):
        body, _ = split_note(p.note)
        origin, size = body.split("\n")[0], int(body.split("\n")[1])
        if newest.get(origin, (None,))[0] == size and p.note.count("\u2014 witness.test/") == 2:
            notes[origin] = p.note
    assert set(notes) == set(newest), "every origin's newest checkpoint was published with both cosignatures"
    log_key = [NoteVerifier.parse(signer.verifier_key)]
    pinned = [WitnessKey.parse(w.vkey) for w in witnesses]
    for origin, note in notes.items():
        witnessed = open_witnessed(note, log_key, pinned, 2)
        assert witnessed.checkpoint.size == newest[origin][0]
        assert sorted(c.witness for c in witnessed.cosignatures) == ["witness.test/w1", "witness.test/w2"]
    note = next(iter(notes.values()))
    # The Go reference verifiers (sumdb/note with torchwood's cosignature verifier) agree.
    vkeys = [w.vkey for w in witnesses]
    both = {"key": signer.verifier_key, "witnesses": vkeys, "min": 2, "checkpoint": note}
    code, out = await _go(go_checker, "cosigned", both)
    assert (code, out.strip()) == (0, "ok"), out
    stranger = TestCosigner("witness.test/w2").verifier_key
    code, out = await _go(go_checker, "cosigned", {**both, "witnesses": [vkeys[0], stranger]})
    assert code == 1, out
    with pytest.raises(CheckpointError, match="only 1 pinned"):
        open_witnessed(note, log_key, pinned[:1], 2)
    with pytest.raises(CheckpointError, match="1 valid cosignature"):  # a witness key nobody pinned counts for nothing
        open_witnessed(note, log_key, [pinned[0], WitnessKey.parse(TestCosigner("witness.test/w2").verifier_key)], 2)
    assert _requests("witness.test/w1", "cosigned") >= len(newest)

    # The API serves the cosigned notes, and an entry's proof carries them; the auditor's CLI requires k of n.
    some = sorted(history.demo_ids)[0]
    proof = (await api.get(f"/v1/audit/{some}/proof")).json()
    listed = (
        await api.get("/v1/checkpoints", params={"topic": proof["topic"], "partition": proof["partition"]})
    ).json()
    assert listed[0]["cosigned_by"] == ["witness.test/w1", "witness.test/w2"]
    assert listed[0]["note"].count("\u2014 witness.test/") == 2
    document = tmp_path / "proof.json"
    document.write_text(json.dumps(proof))
    w1, w2 = (w.vkey for w in witnesses)
    code, out = await _verify("verify-inclusion", str(document), "--key", signer.verifier_key,
                              "--witness", w1, "--witness", w2, "--min-witnesses", "2")  # fmt: skip
    assert code == 0, out
    assert "cosigned by 2 witnesses (witness.test/w1, witness.test/w2)" in out
    code, out = await _verify("verify-inclusion", str(document), "--key", signer.verifier_key)
    assert code == 0, out  # a verifier that knows no witness ignores their lines
    code, out = await _verify("verify-inclusion", str(document), "--key", signer.verifier_key,
                              "--witness", w1, "--min-witnesses", "2")  # fmt: skip
    assert code == 2, out
    assert "needs at least that many --witness keys" in out
    stranger = TestCosigner("witness.test/w2").verifier_key  # the name of a pinned witness, a key it never held
    code, out = await _verify("verify-inclusion", str(document), "--key", signer.verifier_key,
                              "--witness", w1, "--witness", stranger, "--min-witnesses", "2")  # fmt: skip
    assert code == 1, out
    assert "NOT VERIFIED" in out
    assert "1 valid cosignature" in out
    code, out = await _verify("verify-inclusion", str(document), "--key", signer.verifier_key,
                              "--witness", signer.verifier_key, "--min-witnesses", "1")  # fmt: skip
    assert code == 2, out  # a log key is not a witness key


async def test_a_witness_down_never_stops_projection_and_a_lost_state_resynchronises_on_409(
    isolated: Isolated, audit: AuditProducer, witnesses: list[Litewitness]
) -> None:
    w1, w2 = witnesses
    w2.stop()
    port = free_port()
    settings, _ = _witnessed(
        isolated, witnesses, quorum=2, witness_grace_s=0.5, health_port=port, health_host="127.0.0.1"
    )
    async with projector_running(settings), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as health:
        history = await record_history(audit, isolated.stack.bootstrap)
        await eventually(lambda: _settled(isolated, isolated.name, history), within=60)  # projection unaffected
        await eventually(lambda: _cosigned_by(isolated, 1), within=60)  # k=1 met by the witness that is up
        assert _requests("witness.test/w2", "unavailable") > 0

        async def not_ready() -> dict[str, Any] | None:
            answer = await health.get("/readyz")
            body: dict[str, Any] = answer.json()
            problems = [p for p in body["problems"] if "lacks its witness cosignatures" in p]
            return body if answer.status_code == 503 and problems else None

        await eventually(not_ready, within=30)  # k=2 not met past the grace period: readiness says so
        metric = (await health.get("/metrics")).text
        assert "audit_projector_unwitnessed_checkpoint_age_seconds" in metric

        w2.start()  # back: cosigns from size 0, the quorum is met again
        await eventually(lambda: _cosigned_by(isolated, 2), within=60)

        # The log loses what it knew of w1 (a restored backup): w1 answers 409 with its size; the log resends.
        async with isolated.owner() as conn:
            await conn.execute(f"DELETE FROM {isolated.query.control_schema}.witness_state WHERE witness = $1", w1.name)
        before = _requests(w1.name, "conflict")
        for i in range(6):
            async with audit.action("update", entity=Entity(id=f"more-{i}", model="resource"),
                                    actor=Actor.user("u-bob", "Bob"), tenant="acme"):  # fmt: skip
                pass
        await eventually(lambda: _cosigned_by(isolated, 2), within=60)
        assert _requests(w1.name, "conflict") > before
    newest = await _newest(isolated)
    held = w1.sizes()
    assert all(held[o] == size for o, (size, _) in newest.items())


async def test_the_rollback_attack_is_refused_by_the_witness_and_recorded(
    isolated: Isolated, audit: AuditProducer, witnesses: list[Litewitness]
) -> None:
    if isolated.stack.admin_dsn is None:
        pytest.skip("needs a superuser DSN to tamper with")
    settings, signer, _ = await witnessed_history(isolated, audit, witnesses, quorum=1)
    control = isolated.query.control_schema
    async with isolated.owner() as conn:
        tree = await conn.fetchrow(
            "SELECT topic, partition, size FROM merkle_trees WHERE topic = $1 ORDER BY size DESC LIMIT 1",
            settings.audit_topic,
        )
        assert tree is not None
        topic, partition, size = tree["topic"], tree["partition"], tree["size"]
        keep = size // 2
    origin = f"audit-trail/{topic}/{partition}"
    witnessed_size = witnesses[0].sizes()[origin]
    assert witnessed_size == size
    # The insider's full cover-up: rows, leaves and nodes past `keep`, the tree, and every trace in the control
    # schema of what was signed and witnessed beyond it.
    await roll_back(
        isolated, topic, partition, keep,
        f"DELETE FROM {control}.cosignatures WHERE origin = '{origin}' AND tree_size > {keep}",
        f"DELETE FROM {control}.witness_state WHERE origin = '{origin}'",
        f"DELETE FROM {control}.witness_refusals",
    )  # fmt: skip
    # The log goes on from the rolled-back tree: new records, a new checkpoint of the forked history.
    async with projector_running(settings):
        for i in range(6):  # a few records: the regrown tree stays below what the witnesses cosigned
            async with audit.action("update", entity=Entity(id=f"after-{i}", model="resource"),
                                    actor=Actor.user("u-bob", "Bob"), tenant="acme"):  # fmt: skip
                pass

        async def refused() -> list[Any] | None:
            async with isolated.owner() as conn:
                rows = await conn.fetch(
                    f"SELECT witness, status, witness_size, detail FROM {control}.witness_refusals WHERE origin = $1",
                    origin,
                )
            return rows if {r["witness"] for r in rows} == {"witness.test/w1", "witness.test/w2"} else None

        rows = await eventually(refused, within=60)
    for w in witnesses:  # neither witness ever cosigned the forked history
        assert w.sizes()[origin] == witnessed_size
    assert all(r["status"] in (409, 422) for r in rows), rows
    assert any("rolled back" in r["detail"] or "history changed" in r["detail"] for r in rows), rows
    code, out = await projector_cli(
        isolated, "verify", "--integrity", "--key", signer.verifier_key, "--no-topic",
        env={"AUDIT_PROJECTOR_WITNESSES": json.dumps([{"key": w.vkey, "url": w.url} for w in witnesses])},
    )  # fmt: skip
    assert code == 1, out
    assert f"witness.test/w1 has cosigned {witnessed_size} leaves of {origin}" in out, out
    await asyncio.sleep(0)
