"""Escrow: how a fail-open producer keeps an action's personal fields when the key service does not answer.

The fields are sealed with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode, from
`cryptography`) to the key service's escrow public key, bound to the tenant and the event; the event waits in the
producer's spool with the fields withheld and the escrow beside it, never in clear on disk. Once the key service
answers, it opens the escrow, seals each field under its subject's key (as the producer would have) and the
producer publishes the completed event.
"""

import base64
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints

from audit_schemas.sealing import Pseudonym, Sealed

ESCROW_HEADER: Final = "audit-escrow"
"""Spool-only record header holding the escrow (never sent to Kafka)."""
ESCROW_REQUEST_DOMAIN: Final = "audit-trail/escrow-request/v1"
WITHHELD: Final = "withheld"
"""What stands in a withheld clear field until the escrow is resolved."""
_SUITE: Final = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

Subject = Literal["actor", "entity"]
Blob = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=1_000_000)]


class EscrowError(ValueError):
    """An escrow that does not open (another key, tenant or event), or is not an escrow."""


class Escrowed(BaseModel):
    """What an escrow holds: the subjects' ids and each withheld value by path (paths as in `sealed`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subjects: dict[Subject, str]
    values: dict[str, Any]
    """path → value; a change-set or log path seals under the entity's key when it is a subject, else the actor's."""


class EscrowRequest(BaseModel):
    """A producer asks the key service to turn an escrow into sealed fields (signed like a key request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    event_id: UUID
    escrow: Blob
    issued_at: AwareDatetime


class EscrowGrant(BaseModel):
    """The subjects' pseudonyms and each value sealed under its subject's key, bound to the event and path."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pseudonyms: dict[Subject, Pseudonym]
    sealed: dict[str, Sealed]


def info(tenant: str, event_id: UUID) -> bytes:
    """The HPKE `info`: an escrow opens only for its tenant and event."""
    return b"audit-trail/escrow/v1\x00" + tenant.encode() + b"\x00" + event_id.bytes


def seal_escrow(public_key: bytes, content: Escrowed, tenant: str, event_id: UUID) -> str:
    """`content` sealed to the key service's escrow key (X25519, 32 bytes), base64url."""
    recipient = X25519PublicKey.from_public_bytes(public_key)
    blob = _SUITE.encrypt(content.model_dump_json().encode(), recipient, info(tenant, event_id))
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode()


def open_escrow(private_key: X25519PrivateKey, escrow: str, tenant: str, event_id: UUID) -> Escrowed:
    """What the escrow holds; EscrowError when it does not open for this tenant and event."""
    try:
        blob = base64.urlsafe_b64decode(escrow + "=" * (-len(escrow) % 4))
        plaintext = _SUITE.decrypt(blob, private_key, info(tenant, event_id))
        return Escrowed.model_validate_json(plaintext)
    except Exception as e:
        raise EscrowError(f"the escrow of event {event_id} does not open for tenant {tenant}") from e


def parse_public_key(text: str) -> bytes:
    """An escrow public key from its base64url text (32 bytes)."""
    raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    if len(raw) != 32:
        raise ValueError(f"an escrow public key has 32 bytes, not {len(raw)}")
    return raw
