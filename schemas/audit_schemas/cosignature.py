"""Witness cosignatures of checkpoints (C2SP tlog-cosignature v1, Ed25519), and checkpoints that need them.

A cosignature is a note signature line `— <witness name> base64(key hash ‖ timestamp ‖ signature)`: a 4-byte key
hash computed with the cosignature key type 0x04 (not the log's 0x01), an 8-byte big-endian POSIX timestamp, and
an Ed25519 signature of `cosignature/v1\\ntime <timestamp>\\n` followed by the checkpoint body. It says: as of that
time, this is the largest tree the witness has seen for the origin, consistent with everything it saw before.
Witness keys are written `<name>+<hash>+<base64(0x04 ‖ public key)>` and are a key type of their own here: a log
key is never accepted as a witness key, nor the reverse.
"""

import base64
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit_schemas.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteVerifier,
    open_note,
    parse_verifier_key,
    signature_parts,
    split_note,
)

ALG_COSIGNATURE_V1: Final = 0x04
_DASH: Final = "\u2014 "
_HEADER: Final = "cosignature/v1\n"


def cosigned_message(body: str, timestamp: int) -> bytes:
    """What a witness signs: the header line, the time line, then the checkpoint body."""
    if not 0 <= timestamp < 2**63:
        raise CheckpointError("a cosignature timestamp is between 0 and 2^63 - 1")
    return f"{_HEADER}time {timestamp}\n{body}".encode()


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A witness a verifier trusts: its name, key hash and Ed25519 public key (key type 0x04)."""

    name: str
    key_hash: int
    public_key: Ed25519PublicKey

    @classmethod
    def parse(cls, verifier_key: str) -> "WitnessKey":
        """From `<name>+<8 hex digits>+<base64(0x04 ‖ 32-byte key)>`; the hash must match."""
        name, declared, key = parse_verifier_key(verifier_key, ALG_COSIGNATURE_V1, "a cosignature/v1 key")
        return cls(name, declared, Ed25519PublicKey.from_public_bytes(key))

    @property
    def verifier_key(self) -> str:
        raw = bytes([ALG_COSIGNATURE_V1]) + self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return f"{self.name}+{self.key_hash:08x}+{base64.b64encode(raw).decode()}"


@dataclass(frozen=True, slots=True)
class Cosignature:
    """One verified cosignature: who, when (POSIX seconds), and its note signature line."""

    witness: str
    key_hash: int
    timestamp: int
    line: str


def verify_cosignatures(body: str, lines: list[str], witnesses: list[WitnessKey]) -> list[Cosignature]:
    """The cosignatures among note signature `lines` by `witnesses`, each verified over `body`; lines of other
    keys (the log's own signatures, unknown witnesses) are ignored. A pinned witness's line that does not verify
    is an error, never skipped."""
    found: dict[str, Cosignature] = {}
    for line in lines:
        name, signer_hash, raw = signature_parts(line)
        for witness in witnesses:
            if witness.name != name or witness.key_hash != signer_hash:
                continue
            if len(raw) != 4 + 8 + 64:
                raise CheckpointError(f"the cosignature by {name} is not a timestamped Ed25519 signature")
            (timestamp,) = struct.unpack(">Q", raw[4:12])
            try:
                witness.public_key.verify(raw[12:], cosigned_message(body, timestamp))
            except InvalidSignature as e:
                raise CheckpointError(f"the cosignature by {name}+{signer_hash:08x} does not verify") from e
            found[name] = Cosignature(name, signer_hash, timestamp, line.rstrip("\n") + "\n")
    return list(found.values())


@dataclass(frozen=True, slots=True)
class WitnessedCheckpoint:
    """A checkpoint signed by the log and cosigned by at least the required number of pinned witnesses."""

    checkpoint: Checkpoint
    cosignatures: list[Cosignature]


def open_witnessed(
    note: str, log_keys: list[NoteVerifier], witnesses: list[WitnessKey], min_witnesses: int
) -> WitnessedCheckpoint:
    """Verify the log's signature and the pinned witnesses' cosignatures; refuse fewer than `min_witnesses`
    distinct witnesses (cosignatures by keys that are not pinned count for nothing)."""
    if min_witnesses > len(witnesses):
        raise CheckpointError(f"{min_witnesses} witnesses required but only {len(witnesses)} pinned")
    body, _ = open_note(note, log_keys)
    _, lines = split_note(note)
    cosignatures = verify_cosignatures(body, lines, witnesses)
    if len(cosignatures) < min_witnesses:
        named = ", ".join(c.witness for c in cosignatures) or "none"
        raise CheckpointError(
            f"checkpoint has {len(cosignatures)} valid cosignature(s) by pinned witnesses ({named}); "
            f"{min_witnesses} required"
        )
    return WitnessedCheckpoint(Checkpoint.parse(body), cosignatures)


__all__ = [
    "ALG_COSIGNATURE_V1",
    "Cosignature",
    "WitnessKey",
    "WitnessedCheckpoint",
    "cosigned_message",
    "open_witnessed",
    "verify_cosignatures",
]
