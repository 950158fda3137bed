"""Signed events: which bytes a publisher signs, and where the signature travels (Kafka headers).

Signed bytes: topic ‖ record key ‖ record value, each a big-endian u32 length (0xFFFFFFFF for null) then its
bytes. Headers: `audit-key-id` = `<key name>+<key hash, 8 hex digits>` (the note key id of the Ed25519 public key)
and `audit-signature` = base64 of the 64-byte Ed25519 signature. Any Ed25519 tool can sign (see schemas/README.md).
"""

import base64
import binascii
import struct
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import SecretStr

from audit_schemas.checkpoint import NoteSigner, key_hash

SIGNATURE_HEADER: Final = "audit-signature"
KEY_ID_HEADER: Final = "audit-key-id"


def signed_bytes(topic: str, key: bytes | None, value: bytes | None) -> bytes:
    """The exact bytes an event's signature covers."""
    return b"".join(_field(part) for part in (topic.encode(), key, value))


def _field(value: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if value is None else struct.pack(">I", len(value)) + value


def key_id(name: str, public_key: bytes) -> str:
    """`<name>+<8 hex digits>`: names the key in the registry and in the `audit-key-id` header."""
    return f"{name}+{key_hash(name, public_key):08x}"


class EventSigner:
    """Signs records with a service's own Ed25519 key (the note signer-key format)."""

    def __init__(self, signer: NoteSigner) -> None:
        self._signer = signer
        self.key_id = key_id(signer.name, signer.public_key)

    @classmethod
    def parse(cls, signer_key: str) -> "EventSigner":
        return cls(NoteSigner.parse(signer_key))

    @classmethod
    def configured(cls, key: SecretStr | None, key_file: Path | None) -> "EventSigner | None":
        """The signer a service's settings name (the key itself, else its file), or None when it does not sign."""
        if key is not None:
            return cls.parse(key.get_secret_value())
        if key_file is not None:
            return cls.parse(key_file.read_text())
        return None

    def headers(self, topic: str, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        """The two signature headers for this record."""
        signature = self._signer.sign_bytes(signed_bytes(topic, key, value))
        return [(KEY_ID_HEADER, self.key_id.encode()), (SIGNATURE_HEADER, base64.b64encode(signature))]

    def sign_into(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> list[tuple[str, bytes]]:
        """`headers` with any earlier signature replaced by this one."""
        kept = [(k, v) for k, v in headers if k not in (KEY_ID_HEADER, SIGNATURE_HEADER)]
        return [*kept, *self.headers(topic, key, value)]


def signature_of(headers: list[tuple[str, bytes]]) -> tuple[str, bytes] | None:
    """(key id, signature) from a record's headers; None when unsigned; ValueError when malformed."""
    found = dict(headers)
    if KEY_ID_HEADER not in found and SIGNATURE_HEADER not in found:
        return None
    try:
        kid = found[KEY_ID_HEADER].decode()
        signature = base64.b64decode(found[SIGNATURE_HEADER], validate=True)
    except (KeyError, UnicodeDecodeError, binascii.Error) as e:
        raise ValueError("malformed signature headers") from e
    if len(signature) != 64:
        raise ValueError("an Ed25519 signature has 64 bytes")
    return kid, signature


def verify(public_key: bytes, signature: bytes, topic: str, key: bytes | None, value: bytes | None) -> bool:
    """True when `signature` by `public_key` covers this record."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, signed_bytes(topic, key, value))
    except (InvalidSignature, ValueError):
        return False
    return True
