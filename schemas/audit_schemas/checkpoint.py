"""Signed checkpoints in the C2SP signed-note format (as golang.org/x/mod/sumdb/note reads them), Ed25519 keys.

A checkpoint body is `<origin>\\n<tree size>\\n<base64 root hash>\\n`; the signed note appends a blank line and one
line per signature: `— <key name> <base64(4-byte key hash ‖ Ed25519 signature of the body)>`. A verifier key is
written `<name>+<key hash as 8 hex digits>+<base64(0x01 ‖ public key)>`.
"""

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519: Final = 1
_DASH: Final = "\u2014 "


class CheckpointError(ValueError):
    """A note or checkpoint that is malformed, unsigned by a known key, or whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: which log (origin), how many leaves, and the root hash."""

    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        """The text that is signed."""
        if not self.origin or "\n" in self.origin or self.size < 0 or len(self.root) != 32:
            raise CheckpointError("a checkpoint needs a one-line origin, a size >= 0 and a 32-byte root")
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, body: str) -> "Checkpoint":
        """A checkpoint from a note body (extension lines after the root are allowed and ignored)."""
        lines = body.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise CheckpointError("a checkpoint body has an origin, a size and a root, each ending in a newline")
        origin, size_text, root_text = lines[0], lines[1], lines[2]
        if not origin or not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
            raise CheckpointError("malformed checkpoint origin or size")
        try:
            root = base64.b64decode(root_text, validate=True)
        except binascii.Error as e:
            raise CheckpointError("malformed checkpoint root hash") from e
        if len(root) != 32:
            raise CheckpointError("a checkpoint root hash has 32 bytes")
        return cls(origin, int(size_text), root)


def key_hash(name: str, public_key: bytes, algorithm: int = ALG_ED25519) -> int:
    """The note key hash: the first 4 bytes (big-endian) of SHA-256(name ‖ '\\n' ‖ key type ‖ public key); the
    type is 0x01 for a log's Ed25519 key, 0x04 for a witness's cosignature/v1 key."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([algorithm]) + public_key).digest()
    value: int = struct.unpack(">I", digest[:4])[0]
    return value


def _check_name(name: str) -> None:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise CheckpointError(f"a key name has no spaces or '+': {name!r}")


class NoteSigner:
    """Signs notes with one Ed25519 key under a name; the private key never leaves this object."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_hash = key_hash(name, self.public_key)

    @classmethod
    def parse(cls, signer_key: str) -> "NoteSigner":
        """From `PRIVATE+KEY+<name>+<hash>+<base64(0x01 ‖ seed)>`; the hash must match the derived public key."""
        parts = signer_key.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise CheckpointError("a signer key reads PRIVATE+KEY+<name>+<hash>+<key>")
        _, _, name, hash_text, key_text = parts
        try:
            raw = base64.b64decode(key_text, validate=True)
            declared = int(hash_text, 16)
        except (binascii.Error, ValueError) as e:
            raise CheckpointError("malformed signer key") from e
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise CheckpointError("a signer key holds 0x01 and a 32-byte Ed25519 seed")
        signer = cls.from_seed(name, raw[1:])
        if signer.key_hash != declared:
            raise CheckpointError("the signer key's hash does not match its key")
        return signer

    @classmethod
    def generate(cls, name: str) -> tuple["NoteSigner", str]:
        """A new key, and its signer key text (keep it secret: anyone holding it can sign)."""
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        signer = cls.from_seed(name, seed)
        encoded = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return signer, f"PRIVATE+KEY+{name}+{signer.key_hash:08x}+{encoded}"

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> "NoteSigner":
        """From the 32-byte Ed25519 seed (what a key file holds)."""
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def verifier_key(self) -> str:
        """`<name>+<hash>+<base64(0x01 ‖ key)>`: what verifiers are given."""
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_hash:08x}+{encoded}"

    def renamed(self, name: str) -> "NoteSigner":
        """The same key under another name (another key hash): a log signs each partition's checkpoint also under
        the checkpoint's origin, the name witnesses know a log's key by."""
        return NoteSigner(name, self._key)

    def sign_bytes(self, data: bytes) -> bytes:
        """A raw Ed25519 signature of `data` (for signed events; notes use `sign`)."""
        return self._key.sign(data)

    def signature_line(self, body: str) -> str:
        """`— <name> <base64(key hash ‖ signature)>` for `body`."""
        signature = self._key.sign(body.encode())
        return f"{_DASH}{self.name} {base64.b64encode(struct.pack('>I', self.key_hash) + signature).decode()}\n"

    def sign(self, body: str, *also_as: str) -> str:
        """The signed note: body, blank line, the signature line, then one more under each name in `also_as`
        (the same key under another name: a checkpoint is also signed under its origin, for witnesses)."""
        lines = [self.signature_line(body), *(self.renamed(name).signature_line(body) for name in also_as)]
        return f"{body}\n{''.join(lines)}"


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """One known public key, by name and key hash."""

    name: str
    key_hash: int
    public_key: Ed25519PublicKey

    @classmethod
    def parse(cls, verifier_key: str) -> "NoteVerifier":
        """From `<name>+<hash>+<base64 key>`; the hash must match the key."""
        name, declared, key = parse_verifier_key(verifier_key, ALG_ED25519, "a verifier key")
        return cls(name, declared, Ed25519PublicKey.from_public_bytes(key))


def parse_verifier_key(verifier_key: str, algorithm: int, what: str) -> tuple[str, int, bytes]:
    """`<name>+<8 hex digits>+<base64(algorithm ‖ 32-byte Ed25519 key)>` checked — the key type, and the hash
    recomputed with that type byte: the name, the key hash and the raw public key."""
    name, _, rest = verifier_key.strip().partition("+")
    hash_text, _, key_text = rest.partition("+")
    try:
        raw = base64.b64decode(key_text, validate=True)
        declared = int(hash_text, 16)
    except (binascii.Error, ValueError) as e:
        raise CheckpointError(f"malformed {what.removeprefix('a ')}: {verifier_key.strip()[:80]!r}") from e
    _check_name(name)
    if len(hash_text) != 8 or len(raw) != 33:
        raise CheckpointError(f"{what} is name+8 hex digits+base64(0x{algorithm:02x} ‖ 32-byte Ed25519 key)")
    if raw[0] != algorithm:
        raise CheckpointError(f"{name}: key type 0x{raw[0]:02x} is not {what}'s (0x{algorithm:02x})")
    if declared != key_hash(name, raw[1:], algorithm):
        raise CheckpointError(f"the key hash of {name} does not match its key")
    return name, declared, raw[1:]


def verifier_key_as(verifier_key: str, name: str) -> str:
    """The same public key under another name, its key hash recomputed: what a witness is given for an origin
    (witnesses know a log's key by the checkpoint's origin)."""
    NoteVerifier.parse(verifier_key)
    _check_name(name)
    encoded = verifier_key.strip().split("+", 2)[2]
    raw = base64.b64decode(encoded)
    return f"{name}+{key_hash(name, raw[1:]):08x}+{encoded}"


def split_note(note: str) -> tuple[str, list[str]]:
    """A note's body (ending in its newline) and its signature lines (each ending in a newline)."""
    if "\x00" in note or any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("a note has no control characters but newlines")
    body, sep, signatures = note.rpartition("\n\n")
    if not sep or not signatures.endswith("\n"):
        raise CheckpointError("a note is a body, a blank line and signature lines")
    return body + "\n", [line + "\n" for line in signatures[:-1].split("\n")]


def signature_parts(line: str) -> tuple[str, int, bytes]:
    """A note signature line `— <name> <base64>`: the key name, the key hash (its first 4 bytes) and the bytes."""
    text = line.rstrip("\n")
    if not text.startswith(_DASH):
        raise CheckpointError("a signature line starts with an em dash and a space")
    name, _, encoded = text[len(_DASH) :].partition(" ")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except binascii.Error as e:
        raise CheckpointError("malformed signature") from e
    if len(raw) < 4:
        raise CheckpointError("a signature has a key hash")
    key: int = struct.unpack(">I", raw[:4])[0]
    return name, key, raw


def open_note(note: str, verifiers: list[NoteVerifier]) -> tuple[str, list[NoteVerifier]]:
    """The note's body and the known keys whose signatures on it verify.

    Raises CheckpointError when a known key's signature is wrong, or when no known key signed the note.
    """
    body, lines = split_note(note)
    verified = []
    for line in lines:
        name, signer_hash, raw = signature_parts(line)
        if len(raw) < 5:
            raise CheckpointError("a signature has a key hash and a signature")
        for verifier in verifiers:
            if verifier.name == name and verifier.key_hash == signer_hash:
                try:
                    verifier.public_key.verify(raw[4:], body.encode())
                except InvalidSignature as e:
                    raise CheckpointError(f"the signature by {name}+{signer_hash:08x} does not verify") from e
                verified.append(verifier)
    if not verified:
        raise CheckpointError("no signature by a known key")
    return body, verified


def open_checkpoint(note: str, verifiers: list[NoteVerifier]) -> Checkpoint:
    """A verified checkpoint from a signed note (see `open_note`)."""
    body, _ = open_note(note, verifiers)
    return Checkpoint.parse(body)
