"""What counts as a secret, and how it is masked."""

import hashlib
import hmac

import pytest

from audit_producer.redaction import MARKER, Redactor


@pytest.mark.parametrize(
    "key", ["password", "DB_Password", "api-key", "X-Auth-Token", "Cookie", "clientSecret", "private_key"]
)
def test_sensitive_keys_are_matched_case_insensitively_and_nested(key: str) -> None:
    r = Redactor()
    assert r.sensitive(key)
    assert r.tree({"outer": {key: "s3cr3t", "plain": "visible"}}) == {"outer": {key: MARKER, "plain": "visible"}}


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("GET /x with Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
        ("connect postgresql://app:hunter2@db:5432/x", "hunter2"),
        ("retry with password=hunter2 and user=bob", "hunter2"),
        ('config {"api_key": "k-123456"}', "k-123456"),
        ("basic dXNlcjpwYXNzd29yZA== sent", "dXNlcjpwYXNzd29yZA"),
    ],
)
def test_credentials_inside_text_are_masked(text: str, hidden: str) -> None:
    masked = Redactor().text(text)
    assert hidden not in masked
    assert MARKER in masked


def test_plain_text_and_values_are_left_alone() -> None:
    r = Redactor()
    assert (
        r.text("resized from 1 to 3 replicas; token bucket refilled")
        == "resized from 1 to 3 replicas; token bucket refilled"
    )
    assert r.tree({"replicas": 3, "tags": ["a", "b"]}) == {"replicas": 3, "tags": ["a", "b"]}


def test_an_hmac_marker_lets_an_investigator_match_a_known_value() -> None:
    r = Redactor(hmac_key=b"investigation-key")
    expected = hmac.new(b"investigation-key", b"hunter2", hashlib.sha256).hexdigest()
    assert r.tree({"password": "hunter2"}) == {"password": f"[REDACTED hmac-sha256:{expected}]"}
