"""Proofs anyone can check offline: an entry's inclusion and the log's consistency, verified by the CLI alone."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from audit_producer import Actor, AuditProducer, Entity
from audit_schemas.checkpoint import NoteSigner
from tests.conftest import Isolated, projector_running
from tests.polling import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


async def _go(checker: Path, check: str, document: dict[str, Any]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(checker), check, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(json.dumps(document).encode()), 60)
    return proc.returncode or 0, out.decode()


async def _verify(*args: str) -> tuple[int, str]:
    """`audit-schemas verify-…`: the auditor's tool, which needs no database and no service."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-schemas"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_an_entry_proof_and_a_consistency_proof_verify_offline(
    isolated: Isolated, audit: AuditProducer, api: httpx.AsyncClient, tmp_path: Path, go_checker: Path
) -> None:
    signer, signer_key = NoteSigner.generate("audit-trail")
    settings = isolated.projector.model_copy(
        update={"checkpoint_key": SecretStr(signer_key), "checkpoint_every_leaves": 1, "probe_interval_s": 0.2}
    )
    entity = Entity(id="proof-1", model="resource")
    async with projector_running(settings):
        ids = []
        for tenant in ("acme", "globex", "acme"):
            async with audit.action("update", entity=entity, actor=Actor.user("u"), tenant=tenant) as act:
                ids.append(act.audit_id)

        async def proof_of(audit_id: Any) -> dict[str, Any] | None:
            response = await api.get(f"/v1/audit/{audit_id}/proof")
            return response.json() if response.status_code == 200 else None

        first = await eventually(lambda: proof_of(ids[0]), within=30)
        for _ in range(5):
            async with audit.action("update", entity=entity, actor=Actor.user("u"), tenant="acme"):
                pass
        last = await eventually(lambda: proof_of(ids[2]), within=30)

        async def grown() -> dict[str, Any] | None:
            proof = await proof_of(ids[0])
            return proof if proof and proof["tree_size"] > first["tree_size"] else None

        later = await eventually(grown, within=30)
    keys = (await api.get("/v1/keys")).json()
    assert [k["verifier_key"] for k in keys] == [signer.verifier_key]

    proof_file = tmp_path / "proof.json"
    await asyncio.to_thread(proof_file.write_text, json.dumps(last))
    code, out = await _verify("verify-inclusion", str(proof_file), "--key", signer.verifier_key)
    assert code == 0, out
    assert "verified: leaf" in out

    forged = {**last, "leaf_data": last["leaf_data"][:-8] + "AAAAAAA="}
    await asyncio.to_thread(proof_file.write_text, json.dumps(forged))
    code, out = await _verify("verify-inclusion", str(proof_file), "--key", signer.verifier_key)
    assert code == 1
    assert "NOT VERIFIED" in out
    other, _ = NoteSigner.generate("audit-trail")
    await asyncio.to_thread(proof_file.write_text, json.dumps(last))
    code, out = await _verify("verify-inclusion", str(proof_file), "--key", other.verifier_key)
    assert code == 1, "a checkpoint signed by another key is rejected"

    old_note, new_note = tmp_path / "old.note", tmp_path / "new.note"
    await asyncio.to_thread(old_note.write_text, first["checkpoint"])
    await asyncio.to_thread(new_note.write_text, later["checkpoint"])
    consistency = (
        await api.get(
            "/v1/checkpoints/consistency",
            params={
                "topic": first["topic"],
                "partition": first["partition"],
                "from": first["tree_size"],
                "to": later["tree_size"],
            },
        )
    ).json()
    consistency_file = tmp_path / "consistency.json"
    await asyncio.to_thread(consistency_file.write_text, json.dumps(consistency))
    code, out = await _verify(
        "verify-consistency", str(old_note), str(new_note), str(consistency_file), "--key", signer.verifier_key
    )
    assert code == 0, out
    assert "extends" in out
    listed = (
        await api.get("/v1/checkpoints", params={"topic": first["topic"], "partition": first["partition"]})
    ).json()
    assert listed[0]["tree_size"] >= later["tree_size"]

    bundle = await api.get("/v1/proofs", params=[("audit_id", str(ids[0])), ("audit_id", str(ids[2]))])
    assert bundle.headers["content-type"].startswith("application/x-ndjson")
    bundle_file = tmp_path / "bundle.ndjson"
    await asyncio.to_thread(bundle_file.write_text, bundle.text)
    code, out = await _verify("verify-bundle", str(bundle_file), "--key", signer.verifier_key)
    assert code == 0, out
    assert "2 entries" in out
    await asyncio.to_thread(bundle_file.write_text, bundle.text.replace('"leaf_index":', '"leaf_index":1', 1))
    code, out = await _verify("verify-bundle", str(bundle_file), "--key", signer.verifier_key)
    assert code == 1, out

    acme_only = await isolated.token(("audit:read",), ("acme",))
    async with httpx.AsyncClient(base_url=str(api.base_url), headers={"authorization": f"Bearer {acme_only}"}) as c:
        assert (await c.get(f"/v1/audit/{ids[1]}/proof")).status_code == 404, "another tenant's entry has no proof"
        assert (await c.get(f"/v1/audit/{ids[0]}/proof")).status_code == 200
