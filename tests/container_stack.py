"""Kafka and PostgreSQL for the test suite from the project's own images, started with testcontainers.

The engine here has no bridge network, so every container uses the host's network on fixed free loopback ports
(testcontainers' port-mapping helpers and ready-made modules assume a bridge and cannot be used), waits for the
line its server logs once it serves (the local stack waits for the same lines), and is removed by us: Ryuk,
testcontainers' reaper, cannot be pulled.
"""

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.core.container import DockerContainer  # reads the setting above at import
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from tests.conftest import free_port

TAG = os.environ.get("AUDIT_IMAGE_TAG", "dev")
STARTUP_S = 120


@dataclass(frozen=True)
class Addresses:
    """Where the containers listen, and the DSNs of the roles the bootstrap SQL created."""

    bootstrap: str
    owner_dsn: str
    projector_dsn: str
    query_dsn: str
    admin_dsn: str
    kafka_container: str
    """The Kafka container's id (a test may pause it)."""


def _host_network(image: str) -> DockerContainer:
    return DockerContainer(image).with_kwargs(network_mode="host")


@contextlib.contextmanager
def started(container: DockerContainer, ready_line: str) -> Iterator[DockerContainer]:
    """Start a container, wait for `ready_line` in its log, and always remove it (and its volumes) afterwards."""
    container.waiting_for(LogMessageWaitStrategy(ready_line).with_startup_timeout(STARTUP_S))
    try:
        container.start()
        yield container
    finally:
        container.stop(force=True, delete_volume=True)


@contextlib.contextmanager
def container_stack() -> Iterator[Addresses]:
    """PostgreSQL (audit-trail/postgres) and Kafka (audit-trail/kafka) for one test session."""
    pg_port, kafka_port, controller_port = free_port(), free_port(), free_port()
    password = secrets.token_urlsafe(24)
    postgres = (
        _host_network(f"audit-trail/postgres:{TAG}")
        .with_env("PGPORT", str(pg_port))
        .with_env("PG_LISTEN", "127.0.0.1")
        .with_env("POSTGRES_PASSWORD", password)
        .with_command("-c fsync=off")  # extra server options; a test database need not survive a power cut
    )
    kafka = (
        _host_network(f"audit-trail/kafka:{TAG}")
        .with_env("KAFKA_PORT", str(kafka_port))
        .with_env("KAFKA_CONTROLLER_PORT", str(controller_port))
        .with_env("KAFKA_HEAP", "768m")
    )
    db = f"127.0.0.1:{pg_port}/audit"
    with (
        started(postgres, "database system is ready to accept connections"),
        started(kafka, "Kafka Server started") as broker,
    ):
        yield Addresses(
            bootstrap=f"127.0.0.1:{kafka_port}",
            owner_dsn=f"postgresql://audit_owner:audit_owner@{db}",
            projector_dsn=f"postgresql://audit_projector:audit_projector@{db}",
            query_dsn=f"postgresql://audit_query:audit_query@{db}",
            admin_dsn=f"postgresql://postgres:{password}@{db}",
            kafka_container=broker.get_wrapped_container().id,
        )
