"""The sealed-field and escrow formats: what opens, and what a moved, altered or foreign value does instead."""

import os
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from audit_producer.keys import SubjectKey
from audit_producer.sealing import ActionKeys, PersonalData, Withheld, seal_changes, seal_start, withhold_start
from audit_schemas import ActionStarted, Actor, Entity, FieldChange, RequestContext
from audit_schemas.escrow import Escrowed, EscrowError, open_escrow, seal_escrow
from audit_schemas.sealing import SealError, inline, inlined, is_pseudonym, open_sealed, pseudonym, seal

KEY = os.urandom(32)
SUB = "ps1_" + "ab" * 16


def test_a_sealed_value_opens_only_at_its_place() -> None:
    event = uuid4()
    sealed = seal(KEY, SUB, 1, {"email": "a@example.org"}, "acme", event, "changes.contact.after")
    assert open_sealed(KEY, sealed, "acme", event, "changes.contact.after") == {"email": "a@example.org"}
    for tenant, event_id, path in (
        ("globex", event, "changes.contact.after"),  # another tenant
        ("acme", uuid4(), "changes.contact.after"),  # another event
        ("acme", event, "changes.contact.before"),  # another field
    ):
        with pytest.raises(SealError):
            open_sealed(KEY, sealed, tenant, event_id, path)
    with pytest.raises(SealError):
        open_sealed(os.urandom(32), sealed, "acme", event, "changes.contact.after")  # another key (erased, rekeyed)
    tampered = sealed.model_copy(update={"ct": ("A" if sealed.ct[0] != "A" else "B") + sealed.ct[1:]})
    with pytest.raises(SealError):
        open_sealed(KEY, tampered, "acme", event, "changes.contact.after")


def test_two_seals_of_one_value_differ_and_inline_form_round_trips() -> None:
    event = uuid4()
    first, second = (seal(KEY, SUB, 1, "x", "acme", event, "fields.email") for _ in range(2))
    assert first.ct != second.ct  # a random nonce each time: equal values are not linkable
    assert inlined(inline(first)) == first
    assert inlined({"$sealed": {"v": 1}}) is None
    assert inlined({"$sealed": first.model_dump(), "other": 1}) is None


def test_pseudonyms_are_per_tenant_and_stable() -> None:
    secret = os.urandom(32)
    assert pseudonym(secret, "acme", "u-1") == pseudonym(secret, "acme", "u-1")
    assert pseudonym(secret, "acme", "u-1") != pseudonym(secret, "globex", "u-1")
    assert pseudonym(secret, "acme", "u-1") != pseudonym(os.urandom(32), "acme", "u-1")
    assert is_pseudonym(pseudonym(secret, "acme", "u-1"))
    assert not is_pseudonym("u-1")


def _start(user_agent: str = "Agent/1") -> ActionStarted:
    return ActionStarted(
        audit_id=uuid4(),
        tenant_id="acme",
        action="update",
        entity=Entity(id="u-7", model="user"),
        actor=Actor.user("u-8", "Name Eight"),
        request=RequestContext(client_ip="203.0.113.1", user_agent=user_agent),
        started_at="2026-12-07T10:00:00Z",
    )


def test_a_start_is_sealed_field_by_field_and_nothing_stays_in_clear() -> None:
    data = _start("A" * 1024)  # the limit holds for the clear value; the sealed one is longer, and fine
    actor, entity = SubjectKey(SUB, 1, KEY), SubjectKey("ps1_" + "cd" * 16, 2, os.urandom(32))
    sealed = seal_start(data, ActionKeys("acme", actor, entity))
    assert sealed.schema_version == 3
    assert sealed.actor.id == actor.pseudonym
    assert sealed.actor.display_name is None
    assert sealed.entity.id == entity.pseudonym
    assert sealed.request is not None
    assert (sealed.request.client_ip, sealed.request.user_agent) == (None, None)
    assert sealed.sealed is not None
    assert set(sealed.sealed) == {
        "actor.id",
        "actor.display_name",
        "request.client_ip",
        "request.user_agent",
        "entity.id",
    }
    assert sealed.sealed["entity.id"].gen == 2
    text = sealed.model_dump_json()
    for clear in ("u-7", "u-8", "Name Eight", "203.0.113.1", "A" * 64):
        assert clear not in text
    assert open_sealed(entity.key, sealed.sealed["entity.id"], "acme", data.audit_id, "entity.id") == "u-7"
    ActionStarted.model_validate_json(text)  # still a valid start


def test_only_personal_change_keys_are_sealed_under_the_entity_when_it_is_a_person() -> None:
    person = SubjectKey(SUB, 1, KEY)
    changes = {"E-Mail": FieldChange(before=None, after="a@b.example"), "theme": FieldChange(before="l", after="d")}
    audit_id = uuid4()
    out = seal_changes(
        changes, PersonalData.of(("e_mail",), ("user",)), ActionKeys("acme", None, person), "acme", audit_id
    )
    assert out["theme"] == changes["theme"]
    assert out["E-Mail"].before is None  # nothing personal in "no value"
    after = inlined(out["E-Mail"].after)
    assert after is not None
    assert open_sealed(KEY, after, "acme", audit_id, "changes.E-Mail.after") == "a@b.example"


def test_an_escrow_opens_only_with_the_service_key_for_its_tenant_and_event() -> None:
    service = X25519PrivateKey.generate()
    data = _start()
    withheld = Withheld("acme", service.public_key().public_bytes_raw(), "u-8", "u-7")
    held, escrow = withhold_start(data, withheld)
    assert escrow is not None
    assert held.actor.id == "withheld"
    assert held.entity.id == "withheld"
    assert "Name Eight" not in held.model_dump_json() + escrow
    content = open_escrow(service, escrow, "acme", data.audit_id)
    assert content == Escrowed(
        subjects={"actor": "u-8", "entity": "u-7"},
        values={
            "actor.id": "u-8",
            "actor.display_name": "Name Eight",
            "request.client_ip": "203.0.113.1",
            "request.user_agent": "Agent/1",
            "entity.id": "u-7",
        },
    )
    for key, tenant, event in (
        (X25519PrivateKey.generate(), "acme", data.audit_id),
        (service, "globex", data.audit_id),
        (service, "acme", uuid4()),
    ):
        with pytest.raises(EscrowError):
            open_escrow(key, escrow, tenant, event)
    assert seal_escrow(withheld.escrow_key, content, "acme", data.audit_id) != escrow  # fresh each time
