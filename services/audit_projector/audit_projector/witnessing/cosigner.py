"""The cosigning round: every newest checkpoint a witness lacks is sent to it with a consistency proof from the
size it holds; a 409 resynchronises once; cosignatures are stored and the cosigned note published; refusals that
mean the log's history changed are kept as evidence. Runs beside the pipelines, never in their path."""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from audit_projector import metrics
from audit_projector.witnessing.client import Answer, Result, WitnessClient
from audit_projector.witnessing.store import Pending, WitnessStore
from audit_schemas import merkle
from audit_schemas.checkpoint import NoteSigner, split_note
from audit_schemas.cosignature import Cosignature

log = structlog.get_logger(__name__)

Publish = Callable[[str, str], Awaitable[None]]
"""Publish a cosigned note under its origin (the checkpoint topic)."""


@dataclass(slots=True)
class _Backoff:
    """A witness that did not answer is asked again after a growing pause (at most a minute)."""

    until: float = 0.0
    pause_s: float = 1.0

    def failed(self, now: float) -> None:
        self.until = now + self.pause_s
        self.pause_s = min(self.pause_s * 2, 60.0)

    def answered(self) -> None:
        self.until, self.pause_s = 0.0, 1.0


@dataclass(slots=True)
class Cosigner:
    """Asks every configured witness to cosign this log's newest checkpoints."""

    signer: NoteSigner
    clients: list[WitnessClient]
    publish: Publish
    prefix: str
    """`<log name>/`: the origins of this log."""
    quorum: int
    _backoff: dict[str, _Backoff] = field(default_factory=dict)
    _said: set[tuple[str, str, str, int | None]] = field(default_factory=set)
    _cosigned: list[tuple[str, int, str, list[Cosignature]]] = field(default_factory=list)
    """This round's cosignatures (origin, size, witness, lines): stored in one transaction at its end, each
    checkpoint then published once."""
    _proofs: dict[tuple[str, int, int], list[bytes] | None] = field(default_factory=dict)
    """This round's consistency proofs by (origin, old, new): witnesses at the same size share one."""
    store: WitnessStore | None = None
    """The round's connection (set by `round`)."""

    async def round(self, store: WitnessStore) -> list[tuple[str, float]]:
        """One pass over every witness; then the origins whose newest checkpoint lacks the quorum, with its age
        in seconds."""
        self.store = store
        self._proofs.clear()
        now = time.monotonic()
        for client in self.clients:
            backoff = self._backoff.setdefault(client.name, _Backoff())
            if backoff.until > now:
                continue
            for pending in await self._db.pending(client.name, self.prefix):
                if not await self._submit(client, pending):
                    backoff.failed(time.monotonic())
                    break
            else:
                backoff.answered()
        await self._db.cosigned(self._cosigned)  # the round's answers in one transaction
        for origin, size in sorted({(o, n) for o, n, _, _ in self._cosigned}):  # once, with every cosignature
            await self.publish(origin, await self._db.cosigned_note(origin, size))
        self._cosigned.clear()
        late = [
            (u.origin, time.time() - u.signed_at.timestamp())
            for u in await self._db.unwitnessed(self.prefix, self.quorum)
        ]
        metrics.UNWITNESSED.set(max((age for _, age in late), default=0.0))
        return late

    @property
    def _db(self) -> WitnessStore:
        if self.store is None:
            raise RuntimeError("a cosigning round has not started")
        return self.store

    async def _submit(self, client: WitnessClient, pending: Pending) -> bool:
        """Cosign one checkpoint with one witness; False when the witness could not be reached."""
        note = self._with_origin_signature(pending.origin, pending.note)
        old = pending.witness_size or 0
        if old > pending.size:
            await self._evidence(
                client, pending, None, old, "the witness holds a larger tree than the log's newest checkpoint"
            )
            return True
        for _ in range(2):  # the size sent, then once more from the size a 409 named
            proof = await self._proof(pending.origin, old, pending.size)
            if proof is None:
                return True
            answer = await client.add_checkpoint(old, proof, note)
            metrics.WITNESS_REQUESTS.labels(client.name, answer.result.value).inc()
            if answer.result is Result.COSIGNED:
                self._cosigned.append((pending.origin, pending.size, client.name, answer.cosignatures))
                self._said = {k for k in self._said if k[0] != client.name or not k[2].startswith("witness_")}
                log.debug("checkpoint_cosigned", witness=client.name, origin=pending.origin, size=pending.size)
                return True
            if answer.result is Result.CONFLICT and answer.witness_size is not None:
                theirs = answer.witness_size
                await self._db.set_size(client.name, pending.origin, theirs)
                if theirs > pending.size:
                    await self._evidence(
                        client, pending, answer, theirs, "the witness cosigned a larger tree: this log was rolled back"
                    )
                    return True
                if theirs == old:
                    await self._evidence(
                        client, pending, answer, theirs, "the witness cosigned another root at this size: a split view"
                    )
                    return True
                log.info("witness_resynchronised", witness=client.name, origin=pending.origin, was=old, now=theirs)
                old = theirs
                continue
            if answer.result is Result.BAD_PROOF:
                await self._evidence(
                    client,
                    pending,
                    answer,
                    old,
                    "the consistency proof from the witness's size does not verify: history changed",
                )
                return True
            if answer.result is Result.UNAVAILABLE:
                self._say("witness_unavailable", client, pending, answer)
                return False
            self._say("witness_refused", client, pending, answer)
            return True
        return True

    def _with_origin_signature(self, origin: str, note: str) -> str:
        """Witnesses know a log's key by the checkpoint's origin: add a signature under that name when missing."""
        body, lines = split_note(note)
        if any(line.startswith(f"\u2014 {origin} ") for line in lines):
            return note
        return note + self.signer.renamed(origin).signature_line(body)

    async def _proof(self, origin: str, old: int, new: int) -> list[bytes] | None:
        """The RFC 6962 consistency proof from `old` to `new` from the stored tree (once a round); None when nodes
        are missing."""
        if old in (0, new):
            return []
        if (origin, old, new) not in self._proofs:
            self._proofs[(origin, old, new)] = await self._build_proof(origin, old, new)
        return self._proofs[(origin, old, new)]

    async def _build_proof(self, origin: str, old: int, new: int) -> list[bytes] | None:
        topic, _, partition = origin.removeprefix(self.prefix).rpartition("/")
        wanted: list[tuple[int, int]] = []

        def record(level: int, index: int) -> bytes:
            wanted.append((level, index))
            return bytes(32)

        merkle.consistency_proof(old, new, record)
        found = await self._db.nodes(topic, int(partition), wanted)
        if any(w not in found for w in wanted):
            log.warning(
                "witness_proof_unavailable", origin=origin, old=old, new=new, missing=len(set(wanted) - set(found))
            )
            return None
        return merkle.consistency_proof(old, new, lambda level, index: found[(level, index)])

    async def _evidence(
        self, client: WitnessClient, pending: Pending, answer: Answer | None, witness_size: int, what: str
    ) -> None:
        """A refusal that says the log's history changed: kept (once per distinct answer), counted, logged."""
        key = (client.name, pending.origin, what, witness_size)
        if key in self._said:
            return
        self._said.add(key)
        status = answer.status if answer else None
        detail = (
            f"{what} (log size {pending.size}, witness size {witness_size}){': ' + answer.detail if answer else ''}"
        )
        await self._db.refused(client.name, pending.origin, pending.size, status, witness_size, detail)
        metrics.WITNESS_REFUSALS.labels(client.name).inc()
        log.error("witness_refused_history", witness=client.name, origin=pending.origin, size=pending.size,
                  witness_size=witness_size, status=status, detail=what)  # fmt: skip

    def _say(self, event: str, client: WitnessClient, pending: Pending, answer: Answer) -> None:
        """A refusal that is a configuration or availability problem: logged once per distinct answer."""
        key = (client.name, pending.origin, f"{event}:{answer.result.value}", answer.status)
        if key in self._said:
            return
        self._said.add(key)
        log.warning(event, witness=client.name, origin=pending.origin, size=pending.size, result=answer.result.value,
                    detail=answer.detail)  # fmt: skip
