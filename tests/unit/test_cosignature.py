"""Witness cosignatures (C2SP tlog-cosignature v1): a real litewitness answer verifies, and everything else a
verifier could be handed is refused or ignored as the spec says."""

import base64

import pytest

from audit_schemas.checkpoint import Checkpoint, CheckpointError, NoteSigner, NoteVerifier, open_checkpoint
from audit_schemas.cosignature import WitnessKey, open_witnessed, verify_cosignatures
from tests.witness import TestCosigner, with_cosignatures

# Recorded from litewitness (filippo.io/torchwood v0.6.1, cmd/litewitness) cosigning a checkpoint of ours.
LOG_SIGNER = "PRIVATE+KEY+audit.test/log+5328ab5c+Aa1ftyVEPplj07rIl2PS716cUldet8qU1Q2gnkYTyQtD"
BODY = "audit.test/log/t/0\n1\niipcm3aIJ95alVLDigRMZpWcaPbS8htSYK9U0vh9uCc=\n"
WITNESS = "witness.test/w1+07ea3519+BFqfwY6/ZdoufDuwVVcxPODbJ+Ru00sml5yp6/dnzTri"
COSIGNATURE = (
    "\u2014 witness.test/w1 B+o1GQAAAABrFlhwkUYjIvQ5S5R0ubvgZf/aeh4/I0hAYDku7NqWnJMawI1ZRn1dsgaqNgyQNBs4LjvWIq/Dif"
    "Mn0TCT5ICVuckMAw==\n"
)


def _note() -> tuple[str, NoteSigner]:
    signer = NoteSigner.parse(LOG_SIGNER)
    origin = signer.renamed("audit.test/log/t/0")
    return BODY + "\n" + signer.signature_line(BODY) + origin.signature_line(BODY), signer


def test_a_litewitness_cosignature_verifies_and_carries_its_time() -> None:
    note, signer = _note()
    cosigned = with_cosignatures(note, [COSIGNATURE])
    witnessed = open_witnessed(cosigned, [NoteVerifier.parse(signer.verifier_key)], [WitnessKey.parse(WITNESS)], 1)
    assert witnessed.checkpoint == Checkpoint.parse(BODY)
    [cosignature] = witnessed.cosignatures
    assert (cosignature.witness, cosignature.timestamp) == ("witness.test/w1", 1796626544)
    assert WitnessKey.parse(WITNESS).verifier_key == WITNESS


def test_verifiers_that_know_no_witness_ignore_cosignature_lines() -> None:
    note, signer = _note()
    cosigned = with_cosignatures(note, [COSIGNATURE])
    assert open_checkpoint(cosigned, [NoteVerifier.parse(signer.verifier_key)]) == Checkpoint.parse(BODY)
    assert with_cosignatures(cosigned, [COSIGNATURE]) == cosigned  # each line once


def test_too_few_pinned_witnesses_unpinned_keys_and_altered_bodies_are_refused() -> None:
    note, signer = _note()
    log = [NoteVerifier.parse(signer.verifier_key)]
    other = TestCosigner("witness.test/w2")
    cosigned = with_cosignatures(note, [COSIGNATURE, other.cosign(BODY, 1_700_000_000)])
    both = [WitnessKey.parse(WITNESS), WitnessKey.parse(other.verifier_key)]
    assert len(open_witnessed(cosigned, log, both, 2).cosignatures) == 2
    with pytest.raises(CheckpointError, match="1 valid cosignature"):
        open_witnessed(cosigned, log, [WitnessKey.parse(WITNESS), WitnessKey.parse(TestCosigner("w3").verifier_key)], 2)
    with pytest.raises(CheckpointError, match="only 1 pinned"):
        open_witnessed(cosigned, log, [WitnessKey.parse(WITNESS)], 2)
    impostor = TestCosigner("witness.test/w1")  # the pinned witness's name, another key
    with pytest.raises(CheckpointError, match="0 valid"):
        open_witnessed(with_cosignatures(note, [impostor.cosign(BODY, 1)]), log, [WitnessKey.parse(WITNESS)], 1)
    other_body = BODY.replace("\n1\n", "\n2\n")
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_cosignatures(other_body, [COSIGNATURE], [WitnessKey.parse(WITNESS)])


def test_log_keys_and_witness_keys_are_different_key_types() -> None:
    _, signer = _note()
    with pytest.raises(CheckpointError, match="not a cosignature/v1 key"):
        WitnessKey.parse(signer.verifier_key)
    with pytest.raises(CheckpointError):
        NoteVerifier.parse(WITNESS)
    name, key_hash, key = WITNESS.split("+", 2)
    with pytest.raises(CheckpointError, match="does not match"):
        WitnessKey.parse(f"witness.test/other+{key_hash}+{key}")
    assert base64.b64decode(key)[0] == 4
    assert name == "witness.test/w1"
