"""One witness's `add-checkpoint` endpoint, and what each answer the spec defines means for the log."""

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import httpx

from audit_projector.config import Settings
from audit_schemas.checkpoint import CheckpointError, split_note
from audit_schemas.cosignature import Cosignature, WitnessKey, verify_cosignatures

MAX_PROOF_LINES = 63
"""The spec's bound on consistency proof lines."""


class Result(StrEnum):
    """How a request to a witness ended (the `result` label of the request counter)."""

    COSIGNED = "cosigned"
    CONFLICT = "conflict"
    """409: the witness's size is not the old size sent (or, at the same size, it saw another root)."""
    UNKNOWN_LOG = "unknown_log"
    """404: the witness is not configured for this origin."""
    FORBIDDEN = "forbidden"
    """403: no signature on the checkpoint verifies against a key the witness trusts for the origin."""
    BAD_PROOF = "bad_proof"
    """422: the consistency proof from the witness's size does not verify: history changed under it."""
    BAD_REQUEST = "bad_request"
    UNAVAILABLE = "unavailable"
    """No answer, a timeout or a 5xx: tried again later."""
    INVALID_COSIGNATURE = "invalid_cosignature"
    """A 200 whose lines hold no valid cosignature by the pinned key."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A witness's answer: its cosignatures (200), its size (409) or why it refused."""

    result: Result
    status: int | None
    cosignatures: list[Cosignature]
    witness_size: int | None
    detail: str


def request_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """`old <size>`, the proof's hashes in base64 one per line, a blank line, then the signed checkpoint."""
    if len(proof) > MAX_PROOF_LINES:
        raise CheckpointError(f"a consistency proof of {len(proof)} hashes exceeds the spec's {MAX_PROOF_LINES}")
    lines = [f"old {old_size}\n", *(base64.b64encode(h).decode() + "\n" for h in proof), "\n"]
    return "".join(lines).encode() + note.encode()


def witness_clients(settings: Settings, http: httpx.AsyncClient) -> list["WitnessClient"]:
    """A client for each configured witness, sharing one HTTP connection pool."""
    return [WitnessClient(w.verifier, w.endpoint, http) for w in settings.witnesses]


class WitnessClient:
    """Submits checkpoints to one witness over a kept-alive HTTP connection."""

    def __init__(self, key: WitnessKey, endpoint: str, http: httpx.AsyncClient) -> None:
        self.key = key
        self.name = key.name
        self._endpoint = endpoint
        self._http = http

    async def add_checkpoint(self, old_size: int, proof: Sequence[bytes], note: str) -> Answer:
        """POST the checkpoint; a 200's cosignatures are verified against the pinned key before they count."""
        try:
            response = await self._http.post(
                self._endpoint, content=request_body(old_size, proof, note), headers={"content-type": "text/plain"}
            )
        except httpx.HTTPError as e:
            return Answer(Result.UNAVAILABLE, None, [], None, f"{type(e).__name__}: {e}"[:300])
        text = response.text[:4096]
        status = response.status_code
        if status == 200:
            return self._cosigned(note, text)
        if status == 409:
            size = text.strip()
            known = int(size) if size.isdigit() else None
            return Answer(Result.CONFLICT, status, [], known, f"the witness has cosigned size {size or '?'}")
        results = {404: Result.UNKNOWN_LOG, 403: Result.FORBIDDEN, 422: Result.BAD_PROOF, 400: Result.BAD_REQUEST}
        result = results.get(status, Result.UNAVAILABLE if status >= 500 or status == 429 else Result.BAD_REQUEST)
        return Answer(result, status, [], None, f"HTTP {status}: {text.strip()[:300]}")

    def _cosigned(self, note: str, text: str) -> Answer:
        body, _ = split_note(note)
        lines = [line + "\n" for line in text.split("\n") if line.strip()]
        try:
            found = verify_cosignatures(body, lines, [self.key])
        except CheckpointError as e:
            return Answer(Result.INVALID_COSIGNATURE, 200, [], None, str(e))
        if not found:
            return Answer(Result.INVALID_COSIGNATURE, 200, [], None, "no cosignature by the pinned witness key")
        return Answer(Result.COSIGNED, 200, found, None, "")
