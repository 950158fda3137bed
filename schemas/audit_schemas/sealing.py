"""Personal data sealed under per-subject keys: the wire format producers write and readers open.

A sealed value is AES-256-GCM over the value's compact JSON, with a random 96-bit nonce, under the data key of one
(tenant, subject) pair; the associated data binds it to its tenant, its event and its field path, so a sealed
value moved to another event or field does not open. Erasure destroys the key: the ciphertext stays in Kafka, the
Merkle leaves and the read model, and every proof over them still verifies. See schemas/README.md, "Personal data".
"""

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

SEALED_MARK: Final = "$sealed"
"""Inside free-form JSON (change sets, log fields) a sealed value is the object `{"$sealed": {...}}`."""
ERASED: Final = {"$erased": True}
"""What a reader shows for a sealed value whose key was destroyed."""
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
PSEUDONYM_PATTERN: Final = r"^ps1_[0-9a-f]{32}$"
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)
_B64URL = r"^[A-Za-z0-9_-]+$"

Pseudonym = Annotated[str, StringConstraints(pattern=PSEUDONYM_PATTERN)]
"""A subject's keyed pseudonym: `ps1_` and 32 hex digits of HMAC-SHA-256 under the tenant's secret."""


class SealError(ValueError):
    """A sealed value that does not open: wrong key, moved to another event or field, or altered."""


class Sealed(BaseModel):
    """One sealed value: which subject's key (and which generation of it) and the AEAD output."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    alg: Literal["A256GCM"] = "A256GCM"
    sub: Pseudonym
    """The subject whose key seals the value."""
    gen: Annotated[int, Field(ge=1, le=2**31 - 1)] = 1
    """The generation of the subject's key: a subject erased and seen again gets a new key."""
    n: Annotated[str, StringConstraints(pattern=_B64URL, min_length=16, max_length=16)]
    """The 12-byte nonce, base64url without padding."""
    ct: Annotated[str, StringConstraints(pattern=_B64URL, min_length=22, max_length=1_000_000)]
    """Ciphertext and 16-byte tag, base64url without padding."""


def pseudonym(secret: bytes, tenant: str, subject: str) -> str:
    """The subject's pseudonym in `tenant`: stable while the tenant secret lives, meaningless without it."""
    message = b"audit-trail/pseudonym/v1\x00" + tenant.encode() + b"\x00" + subject.encode()
    return "ps1_" + hmac.new(secret, message, hashlib.sha256).digest()[:16].hex()


def is_pseudonym(value: object) -> bool:
    """True for a string in the pseudonym format."""
    return isinstance(value, str) and _PSEUDONYM.match(value) is not None


def associated_data(tenant: str, event_id: UUID, path: str) -> bytes:
    """What a sealed value is bound to: its tenant, its event (audit id, or log id for a log line), its field."""
    return b"audit-trail/sealed/v1\x00" + tenant.encode() + b"\x00" + event_id.bytes + path.encode()


def seal(key: bytes, sub: str, gen: int, value: Any, tenant: str, event_id: UUID, path: str) -> Sealed:
    """`value` (any JSON value) sealed under the subject's key for this tenant, event and field."""
    plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, associated_data(tenant, event_id, path))
    # Valid by construction (the pseudonym was checked where the key was granted): no second validation here.
    return Sealed.model_construct(sub=sub, gen=gen, n=_b64(nonce), ct=_b64(ciphertext))


def open_sealed(key: bytes, sealed: Sealed, tenant: str, event_id: UUID, path: str) -> Any:
    """The JSON value inside `sealed`; SealError when it does not open under this key at this place."""
    try:
        nonce, ciphertext = _unb64(sealed.n), _unb64(sealed.ct)
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, associated_data(tenant, event_id, path))
    except (InvalidTag, ValueError, binascii.Error) as e:
        raise SealError(f"the sealed value at {path} does not open under subject {sealed.sub}'s key") from e
    return json.loads(plaintext)


def inline(sealed: Sealed) -> dict[str, Any]:
    """The form a sealed value takes inside free-form JSON."""
    return {SEALED_MARK: sealed.model_dump()}


def inlined(value: Any) -> Sealed | None:
    """The sealed value `value` holds in its inline form, or None when it is something else."""
    if isinstance(value, dict) and len(value) == 1 and SEALED_MARK in value:
        try:
            return Sealed.model_validate(value[SEALED_MARK])
        except ValidationError:
            return None
    return None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


__all__ = [
    "ERASED",
    "KEY_BYTES",
    "SEALED_MARK",
    "Pseudonym",
    "SealError",
    "Sealed",
    "associated_data",
    "inline",
    "inlined",
    "is_pseudonym",
    "open_sealed",
    "pseudonym",
    "seal",
]
