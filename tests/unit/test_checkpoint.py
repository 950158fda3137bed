"""Signed notes and checkpoints: byte-for-byte the format golang.org/x/mod/sumdb/note signs and reads."""

import base64
import os

import pytest

from audit_schemas.checkpoint import Checkpoint, CheckpointError, NoteSigner, NoteVerifier, open_checkpoint, open_note
from audit_schemas.merkle import EMPTY_ROOT

# The worked example published with the Go note package: its key, text and signature.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_SIGNATURE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _go_signer() -> NoteSigner:
    seed = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[-1])[1:]
    return NoteSigner.from_seed("PeterNeumann", seed)


def test_signing_reproduces_the_go_example_exactly() -> None:
    signer = _go_signer()
    assert signer.verifier_key == GO_VERIFIER_KEY
    assert signer.sign(GO_TEXT) == GO_TEXT + "\n" + GO_SIGNATURE


def test_the_go_example_verifies_and_a_changed_text_does_not() -> None:
    verifier = NoteVerifier.parse(GO_VERIFIER_KEY)
    body, by = open_note(GO_TEXT + "\n" + GO_SIGNATURE, [verifier])
    assert body == GO_TEXT
    assert by == [verifier]
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(GO_TEXT.replace("answer", "question") + "\n" + GO_SIGNATURE, [verifier])


def test_a_checkpoint_round_trips_and_an_unknown_or_other_key_is_refused() -> None:
    signer = NoteSigner.from_seed("audit.example/events/3", os.urandom(32))
    checkpoint = Checkpoint("audit.example/events/3", 1234, EMPTY_ROOT)
    note = signer.sign(checkpoint.body())
    assert note.splitlines()[:3] == ["audit.example/events/3", "1234", base64.b64encode(EMPTY_ROOT).decode()]
    assert open_checkpoint(note, [NoteVerifier.parse(signer.verifier_key)]) == checkpoint
    impostor = NoteSigner.from_seed("audit.example/events/3", os.urandom(32))
    with pytest.raises(CheckpointError, match="no signature by a known key"):
        open_checkpoint(impostor.sign(checkpoint.body()), [NoteVerifier.parse(signer.verifier_key)])
    forged = note.replace("\n1234\n", "\n1235\n")
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(forged, [NoteVerifier.parse(signer.verifier_key)])


@pytest.mark.parametrize(
    "key",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # hash does not match
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in the name
        "PeterNeumann+c74f20a3+!!!",
        "PeterNeumann",
    ],
)
def test_malformed_verifier_keys_are_refused(key: str) -> None:
    with pytest.raises(CheckpointError):
        NoteVerifier.parse(key)


@pytest.mark.parametrize(
    "body",
    ["origin\n12\n", "origin\n012\n" + base64.b64encode(EMPTY_ROOT).decode() + "\n", "origin\n1\nnot-base64\n", ""],
)
def test_malformed_checkpoint_bodies_are_refused(body: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(body)
