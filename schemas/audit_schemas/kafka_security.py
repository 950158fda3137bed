"""How a service authenticates to Kafka: plaintext (local default) or SASL_SSL with SCRAM and a trusted CA.

Every service embeds `KafkaSecurity` in its settings as `kafka` (env `AUDIT_<SERVICE>_KAFKA__<FIELD>`), and builds
each Kafka client with `client_options()`, so all clients of a process use one principal and one trust store.
"""

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator


class KafkaSecurityError(ValueError):
    """The Kafka security settings are incomplete or contradictory."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the broker would not let a client in; permanent refusals (trust, credentials) are not worth retrying."""

    reason: str
    permanent: bool


class KafkaSecurity(BaseModel):
    """Transport security and the SASL principal of one service's Kafka clients."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    security_protocol: Literal["PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    """The service's own principal (one per emitting service, projector, query API, replay, redrive)."""
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    """Read at start, so the password can live in a secret file rather than the environment."""
    ca_file: Path | None = None
    """PEM bundle of the CA(s) that signed the broker's certificate; the system trust store when unset."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.security_protocol == "PLAINTEXT":
            if self.sasl_username or self.sasl_password or self.sasl_password_file:
                raise KafkaSecurityError(
                    "SASL credentials are set but security_protocol is PLAINTEXT: they would never be used; "
                    "set security_protocol=SASL_SSL (or drop the credentials)"
                )
            return self
        if not self.sasl_username:
            raise KafkaSecurityError("security_protocol=SASL_SSL needs sasl_username")
        if (self.sasl_password is None) == (self.sasl_password_file is None):
            raise KafkaSecurityError("security_protocol=SASL_SSL needs one of sasl_password, sasl_password_file")
        self.password()  # fail at start, not at the first connection: an unreadable file or CA is a setup error
        self.ssl_context()
        return self

    @property
    def sasl(self) -> bool:
        """True when clients authenticate (and, with SASL, every event must be signed)."""
        return self.security_protocol == "SASL_SSL"

    def password(self) -> str:
        """The SASL password, from the setting or its file."""
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is not None:
            try:
                return self.sasl_password_file.read_text().strip()
            except OSError as e:
                raise KafkaSecurityError(f"cannot read the SASL password file {self.sasl_password_file}: {e}") from e
        raise KafkaSecurityError("no SASL password is configured")

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the broker's certificate chain and host name (TLS 1.2 at least)."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as e:
            raise KafkaSecurityError(f"cannot load the Kafka CA file {self.ca_file}: {e}") from e
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    async def explain_refusal(self, bootstrap_servers: str, timeout_s: float = 3.0) -> Refusal | None:
        """Why a SASL_SSL client could not bootstrap, found by repeating the TLS handshake with the first broker.

        Kafka clients only log the cause; this names it for the error a person reads: no broker (transient), an
        untrusted certificate or, TLS being fine, refused credentials (both permanent). None for PLAINTEXT.
        """
        if not self.sasl:
            return None
        host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
        try:
            async with asyncio.timeout(timeout_s):
                _, writer = await asyncio.open_connection(host, int(port), ssl=self.ssl_context())
        except ssl.SSLCertVerificationError as e:
            trust = self.ca_file or "the system trust store"
            return Refusal(f"the broker's certificate is not trusted by {trust}: {e.verify_message}", permanent=True)
        except (OSError, TimeoutError, ValueError) as e:
            return Refusal(f"no broker completes a TLS handshake at {host}:{port}: {e!r}", permanent=False)
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
        return Refusal(
            f"TLS to {host}:{port} is fine, so the broker refused the SASL credentials of {self.sasl_username!r}",
            permanent=True,
        )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        if not self.sasl:
            return {"security_protocol": "PLAINTEXT"}
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": self.ssl_context(),
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_username,
            "sasl_plain_password": self.password(),
        }


__all__ = ["KafkaSecurity", "KafkaSecurityError", "Refusal"]
