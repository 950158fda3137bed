"""Offline verification for auditors: needs only the log's public key and what the API returned. No database."""

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from audit_schemas import merkle
from audit_schemas.checkpoint import Checkpoint, CheckpointError
from audit_schemas.trust import TrustPolicy

__all__ = [
    "TrustPolicy",
    "VerificationError",
    "Verified",
    "load_json",
    "policy",
    "verify_bundle",
    "verify_consistency_proof",
    "verify_inclusion_proof",
]


class VerificationError(ValueError):
    """The evidence does not prove what it claims."""


@dataclass(frozen=True, slots=True)
class Verified:
    """What a successful verification established."""

    checkpoint: Checkpoint
    detail: str


def policy(keys: list[str], witnesses: list[str] | None = None, min_witnesses: int = 0) -> TrustPolicy:
    """The keys an auditor pinned (log keys, witness keys) and the witness quorum, or a VerificationError."""
    try:
        return TrustPolicy.parse(keys, witnesses, min_witnesses)
    except CheckpointError as e:
        raise VerificationError(f"bad verifier key or policy: {e}") from e


def _trusted(keys: list[str] | TrustPolicy) -> TrustPolicy:
    return keys if isinstance(keys, TrustPolicy) else policy(keys)


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as e:
        raise VerificationError(f"{what} is not base64") from e


def verify_inclusion_proof(proof: dict[str, Any], keys: list[str] | TrustPolicy) -> Verified:
    """An entry's record is leaf `leaf_index` of the tree the signed (and, as the policy asks, witnessed)
    checkpoint commits to."""
    trusted = _trusted(keys)
    try:
        opened = trusted.open(str(proof["checkpoint"]))
        checkpoint = opened.checkpoint
        data = _b64(proof["leaf_data"], "leaf_data")
        index, size = int(proof["leaf_index"]), int(proof["tree_size"])
        path = [_b64(p, "a proof hash") for p in proof["inclusion_proof"]]
    except CheckpointError as e:
        raise VerificationError(f"checkpoint: {e}") from e
    except (KeyError, TypeError, ValueError) as e:
        raise VerificationError(f"malformed proof document: {e}") from e
    if size != checkpoint.size:
        raise VerificationError(f"the proof is for a tree of {size}, the checkpoint signs {checkpoint.size}")
    expected_origin_tail = f"/{proof.get('topic')}/{proof.get('partition')}"
    if not checkpoint.origin.endswith(expected_origin_tail):
        raise VerificationError(f"the checkpoint's origin {checkpoint.origin!r} is not this entry's partition")
    if data[:4] != len(str(proof.get("topic", "")).encode()).to_bytes(4, "big"):
        raise VerificationError("the leaf data does not start with this entry's topic")
    try:
        merkle.verify_inclusion(merkle.leaf_hash(data), index, size, path, checkpoint.root)
    except merkle.ProofError as e:
        raise VerificationError(f"inclusion: {e}") from e
    return Verified(checkpoint, f"leaf {index} of {checkpoint.origin} at tree size {size}{opened.witnessed()}")


def verify_consistency_proof(
    old_note: str, new_note: str, proof: dict[str, Any], keys: list[str] | TrustPolicy
) -> Verified:
    """The newer signed checkpoint's tree extends the older one's: nothing was removed or rewritten. Both
    checkpoints must meet the policy (signed by the log, cosigned by enough pinned witnesses)."""
    trusted = _trusted(keys)
    try:
        old = trusted.open(old_note).checkpoint
        opened = trusted.open(new_note)
        new = opened.checkpoint
        path = [_b64(p, "a proof hash") for p in proof["proof"]]
    except CheckpointError as e:
        raise VerificationError(f"checkpoint: {e}") from e
    except (KeyError, TypeError) as e:
        raise VerificationError(f"malformed proof document: {e}") from e
    if old.origin != new.origin:
        raise VerificationError(f"checkpoints of two logs: {old.origin!r} and {new.origin!r}")
    if (int(proof.get("from_size", -1)), int(proof.get("to_size", -1))) != (old.size, new.size):
        raise VerificationError("the proof is for other tree sizes than the two checkpoints")
    try:
        merkle.verify_consistency(old.size, new.size, old.root, new.root, path)
    except merkle.ProofError as e:
        raise VerificationError(f"consistency: {e}") from e
    return Verified(new, f"{new.origin}: the tree of {new.size} extends the tree of {old.size}{opened.witnessed()}")


def load_json(text: str) -> dict[str, Any]:
    """A proof document as the API returns it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise VerificationError(f"not JSON: {e}") from e
    if not isinstance(value, dict):
        raise VerificationError("a proof document is a JSON object")
    return value


def verify_bundle(text: str, keys: list[str] | TrustPolicy) -> Verified:
    """Every line of an NDJSON bundle of inclusion proofs verifies (a truncated or altered line fails)."""
    trusted = _trusted(keys)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise VerificationError("the bundle is empty")
    last: Verified | None = None
    for number, line in enumerate(lines, start=1):
        try:
            last = verify_inclusion_proof(load_json(line), trusted)
        except VerificationError as e:
            raise VerificationError(f"line {number}: {e}") from e
    assert last is not None
    return Verified(last.checkpoint, f"{len(lines)} entries, each included in its signed checkpoint")
