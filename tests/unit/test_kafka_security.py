"""Kafka security settings fail closed: incomplete SASL, unusable files, or SASL without signatures."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from audit_producer.config import Settings as ProducerSettings
from audit_projector.config import Settings as ProjectorSettings
from audit_query.config import Settings as QuerySettings
from audit_schemas.checkpoint import NoteSigner
from audit_schemas.kafka_security import KafkaSecurity


def _sasl(tmp_path: Path, **changes: object) -> dict[str, object]:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    return {
        "security_protocol": "SASL_SSL",
        "sasl_username": "billing",
        "sasl_password_file": password,
        **changes,
    }


def test_plaintext_is_the_default_and_carries_no_credentials() -> None:
    assert KafkaSecurity().client_options() == {"security_protocol": "PLAINTEXT"}
    with pytest.raises(ValidationError, match="SASL credentials are set but security_protocol is PLAINTEXT"):
        KafkaSecurity(sasl_username="billing", sasl_password="x")


def test_sasl_needs_a_user_and_exactly_one_password(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs sasl_username"):
        KafkaSecurity.model_validate({"security_protocol": "SASL_SSL", "sasl_password": "x"})
    with pytest.raises(ValidationError, match="one of sasl_password, sasl_password_file"):
        KafkaSecurity.model_validate({"security_protocol": "SASL_SSL", "sasl_username": "billing"})
    with pytest.raises(ValidationError, match="one of sasl_password, sasl_password_file"):
        KafkaSecurity.model_validate(_sasl(tmp_path, sasl_password="also"))


def test_unreadable_password_or_ca_files_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read the SASL password file"):
        KafkaSecurity.model_validate(_sasl(tmp_path, sasl_password_file=tmp_path / "missing"))
    with pytest.raises(ValidationError, match="cannot load the Kafka CA file"):
        KafkaSecurity.model_validate(_sasl(tmp_path, ca_file=tmp_path / "missing.crt"))
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValidationError, match="cannot load the Kafka CA file"):
        KafkaSecurity.model_validate(_sasl(tmp_path, ca_file=garbage))


def test_sasl_client_options_verify_the_broker(tmp_path: Path) -> None:
    options = KafkaSecurity.model_validate(_sasl(tmp_path)).client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "billing"
    assert options["sasl_plain_password"] == "s3cret"  # the file's trailing newline is not part of it
    context = options["ssl_context"]
    assert context.check_hostname
    assert context.verify_mode.name == "CERT_REQUIRED"


def test_every_service_refuses_sasl_without_signatures(tmp_path: Path) -> None:
    kafka = KafkaSecurity.model_validate(_sasl(tmp_path))
    with pytest.raises(ValidationError, match="every event must be signed"):
        ProducerSettings(kafka=kafka)
    _, key = NoteSigner.generate("billing-service")
    assert ProducerSettings(kafka=kafka, signing_key=key).kafka.sasl

    with pytest.raises(ValidationError, match="REQUIRE_SIGNATURES=false is refused while Kafka SASL is on"):
        ProjectorSettings(kafka=kafka, require_signatures=False)
    assert ProjectorSettings(kafka=kafka).signatures_required
    assert not ProjectorSettings().signatures_required
    assert ProjectorSettings(require_signatures=True).signatures_required

    secret = "x" * 40
    with pytest.raises(ValidationError, match="the API's own audit records must be signed"):
        QuerySettings(kafka=kafka, cursor_secret=secret)
    assert QuerySettings(kafka=kafka, cursor_secret=secret, signing_key=key).event_signer() is not None


def test_settings_read_the_nested_kafka_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = tmp_path / "password"
    password.write_text("pw")
    monkeypatch.setenv("AUDIT_PROJECTOR_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("AUDIT_PROJECTOR_KAFKA__SASL_USERNAME", "audit-projector")
    monkeypatch.setenv("AUDIT_PROJECTOR_KAFKA__SASL_PASSWORD_FILE", str(password))
    settings = ProjectorSettings()
    assert settings.kafka.sasl_username == "audit-projector"
    assert settings.signatures_required
    monkeypatch.setenv("AUDIT_PROJECTOR_REQUIRE_SIGNATURES", "false")
    with pytest.raises(ValidationError, match="refused while Kafka SASL is on"):
        ProjectorSettings()
