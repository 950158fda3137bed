"""What an auditor pins to trust a checkpoint: the log's verifier keys, the witnesses' keys, and how many of those
witnesses must have cosigned it (k of n). Every offline verifier opens checkpoints through one of these."""

from dataclasses import dataclass, field

from audit_schemas.checkpoint import Checkpoint, CheckpointError, NoteVerifier, open_checkpoint
from audit_schemas.cosignature import Cosignature, WitnessKey, open_witnessed


@dataclass(frozen=True, slots=True)
class Opened:
    """A checkpoint that met the policy, and the pinned witnesses' cosignatures it carried."""

    checkpoint: Checkpoint
    cosignatures: list[Cosignature] = field(default_factory=list)

    def witnessed(self) -> str:
        """`, cosigned by 2 witnesses (a, b)`, or nothing."""
        if not self.cosignatures:
            return ""
        names = ", ".join(sorted(c.witness for c in self.cosignatures))
        return f", cosigned by {len(self.cosignatures)} witness{'es' if len(self.cosignatures) > 1 else ''} ({names})"


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Log keys, witness keys, and the number of pinned witnesses that must cosign."""

    log_keys: list[NoteVerifier]
    witnesses: list[WitnessKey] = field(default_factory=list)
    min_witnesses: int = 0

    @classmethod
    def parse(cls, keys: list[str], witnesses: list[str] | None = None, min_witnesses: int = 0) -> "TrustPolicy":
        """From the keys' text; CheckpointError names a bad one or an impossible quorum."""
        pinned = [WitnessKey.parse(w) for w in witnesses or []]
        if min_witnesses < 0 or min_witnesses > len(pinned):
            raise CheckpointError(f"--min-witnesses {min_witnesses} needs at least that many --witness keys pinned")
        return cls([NoteVerifier.parse(k) for k in keys], pinned, min_witnesses)

    def open(self, note: str) -> Opened:
        """The checkpoint, if the log signed it and at least `min_witnesses` pinned witnesses cosigned it."""
        if not self.witnesses:
            return Opened(open_checkpoint(note, self.log_keys))
        witnessed = open_witnessed(note, self.log_keys, self.witnesses, self.min_witnesses)
        return Opened(witnessed.checkpoint, witnessed.cosignatures)


__all__ = ["Opened", "TrustPolicy"]
