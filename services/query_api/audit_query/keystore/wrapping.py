"""The key-encryption key (KEK): wraps every key the store holds, and is itself never stored there.

Loaded from a file or the environment; this is the seam where a KMS plugs in (wrap and unwrap are its two calls).
Each wrap is AES-256-GCM bound to what the key is for (tenant, pseudonym, generation), so a wrapped key copied to
another row does not unwrap.
"""

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from audit_query.errors import QueryError

_NONCE = 12


class KeyStoreError(QueryError):
    """The key store cannot do what was asked (no KEK, a key that does not unwrap, a refused erasure)."""

    status_code = 503


@dataclass(frozen=True)
class Kek:
    """One key-encryption key and its id (the first 8 bytes of its SHA-256, in hex)."""

    key: bytes

    @property
    def id(self) -> str:
        return hashlib.sha256(b"audit-trail/kek\x00" + self.key).hexdigest()[:16]

    @classmethod
    def parse(cls, text: str) -> "Kek":
        """A KEK from its base64 text (32 bytes)."""
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except binascii.Error as e:
            raise KeyStoreError("the key-encryption key must be base64") from e
        if len(key) != 32:
            raise KeyStoreError(f"the key-encryption key must be 32 bytes, not {len(key)}")
        return cls(key)

    @classmethod
    def configured(cls, key: SecretStr | None, key_file: Path | None) -> "Kek | None":
        """The KEK the settings name (the key itself, else its file), or None."""
        if key is not None:
            return cls.parse(key.get_secret_value())
        if key_file is not None:
            return cls.parse(key_file.read_text())
        return None

    @classmethod
    def generate(cls) -> "Kek":
        return cls(os.urandom(32))

    def text(self) -> str:
        return base64.b64encode(self.key).decode()

    def wrap(self, key: bytes, purpose: bytes) -> bytes:
        """`key` sealed under this KEK for `purpose`: nonce ‖ ciphertext ‖ tag."""
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.key).encrypt(nonce, key, purpose)

    def unwrap(self, wrapped: bytes, purpose: bytes) -> bytes:
        try:
            return AESGCM(self.key).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], purpose)
        except (InvalidTag, ValueError) as e:
            raise KeyStoreError("a wrapped key does not unwrap under this KEK (wrong KEK, or moved)") from e


class Keks:
    """The current KEK (wraps new keys) and earlier ones (still unwrap, until `keystore rewrap` moves them)."""

    def __init__(self, current: Kek, *previous: Kek) -> None:
        self.current = current
        self._by_id = {k.id: k for k in (current, *previous)}

    def get(self, kek_id: str) -> Kek:
        found = self._by_id.get(kek_id)
        if found is None:
            raise KeyStoreError(f"no configured key-encryption key has id {kek_id}")
        return found


def tenant_purpose(tenant: str) -> bytes:
    return b"audit-trail/tenant-secret\x00" + tenant.encode()


def subject_purpose(tenant: str, pseudonym: str, generation: int) -> bytes:
    return b"audit-trail/subject-key\x00" + tenant.encode() + b"\x00" + pseudonym.encode() + b"\x00%d" % generation


def escrow_purpose(key_id: str) -> bytes:
    return b"audit-trail/escrow-key\x00" + key_id.encode()
