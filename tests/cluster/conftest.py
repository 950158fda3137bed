"""The three-broker cluster (`stack.sh up cluster`) for the fault tests: started for the session if it is not
running, a node killed with SIGKILL and started again on request, each test on its own schema and replicated
topics."""

import asyncio
import dataclasses
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import STACK, Isolated, Stack, _local_stack_env, isolated_on


@dataclass(frozen=True)
class Cluster:
    """Where the cluster listens, and the fault switches."""

    bootstrap: str

    def kill(self, node: int) -> None:
        """SIGKILL the node: no flush, no goodbye to the quorum."""
        subprocess.run(["bash", str(STACK), "node-kill", str(node)], check=True, capture_output=True, timeout=30)

    def freeze(self, node: int) -> None:
        """SIGSTOP the node: it holds its sockets open and answers nothing, as a hung host does."""
        subprocess.run(["bash", str(STACK), "node-freeze", str(node)], check=True, capture_output=True, timeout=30)

    def thaw(self, node: int) -> None:
        subprocess.run(["bash", str(STACK), "node-thaw", str(node)], check=True, capture_output=True, timeout=30)

    async def start(self, node: int) -> None:
        """Start the node again and wait until it serves."""
        await asyncio.to_thread(
            subprocess.run, ["bash", str(STACK), "node-start", str(node)], check=True, capture_output=True, timeout=120
        )

    async def quorum_leader(self) -> int:
        """The active controller's node id."""
        done = await asyncio.to_thread(
            subprocess.run,
            ["bash", str(STACK), "quorum-leader"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return int(done.stdout.strip())

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition → the node leading it now."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        return {p["partition"]: p["leader"] for d in described for p in d["partitions"]}


@pytest.fixture(scope="session")
def cluster(stack: Stack) -> Iterator[Cluster]:
    status = subprocess.run(["bash", str(STACK), "status"], capture_output=True, text=True).stdout
    already = all(f"kafka-c{n}: running" in status for n in (1, 2, 3))
    if not already:
        subprocess.run(["bash", str(STACK), "up", "cluster"], check=True, timeout=300)
    env = _local_stack_env("cluster")
    yield Cluster(env["AUDIT_KAFKA_BOOTSTRAP"])
    if not already and os.environ.get("AUDIT_KEEP_STACK") != "1":
        subprocess.run(["bash", str(STACK), "down", "cluster"], check=False, timeout=120)


@pytest.fixture
async def replicated(stack: Stack, cluster: Cluster) -> AsyncIterator[Isolated]:
    """A fresh schema and fresh topics on the cluster (three replicas, two in sync), settings for production."""
    on_cluster = dataclasses.replace(stack, bootstrap=cluster.bootstrap, kafka_pid_file=None, kafka_container=None)
    async with isolated_on(on_cluster, environment="production") as made:
        yield made
    for node in (1, 2, 3):  # a test that failed halfway leaves no node frozen or down for the next
        cluster.thaw(node)
        await cluster.start(node)


@dataclass(frozen=True)
class HighlyAvailable:
    """PostgreSQL with a synchronous standby under pg_auto_failover (`stack.sh up ha`): multi-host DSNs and the
    fault switches."""

    owner_dsn: str
    projector_dsn: str
    query_dsn: str

    def kill(self, node: int) -> None:
        """SIGKILL the data node's keeper and postgres: its host died."""
        subprocess.run(["bash", str(STACK), "ha-kill", str(node)], check=True, capture_output=True, timeout=30)

    def start(self, node: int) -> None:
        subprocess.run(["bash", str(STACK), "ha-start", str(node)], check=True, capture_output=True, timeout=30)

    def freeze(self, node: int) -> None:
        """SIGSTOP the data node whole (keeper, postgres, backends): a host that hangs rather than dies."""
        subprocess.run(["bash", str(STACK), "ha-freeze", str(node)], check=True, capture_output=True, timeout=30)

    def thaw(self, node: int) -> None:
        subprocess.run(["bash", str(STACK), "ha-thaw", str(node)], check=True, capture_output=True, timeout=30)

    async def settled(self) -> None:
        """Until a primary and a standby serve again."""
        await asyncio.to_thread(
            subprocess.run, ["bash", str(STACK), "ha-wait"], check=True, capture_output=True, timeout=180
        )

    async def primary(self) -> int | None:
        done = await asyncio.to_thread(
            subprocess.run, ["bash", str(STACK), "ha-primary"], capture_output=True, text=True, timeout=30
        )
        return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip().isdigit() else None


@pytest.fixture(scope="session")
def highly_available(stack: Stack) -> Iterator[HighlyAvailable]:
    subprocess.run(["bash", str(STACK), "up", "ha"], check=True, timeout=300)
    env = _local_stack_env("ha")
    yield HighlyAvailable(env["AUDIT_OWNER_DSN"], env["AUDIT_PROJECTOR_DATABASE_URL"], env["AUDIT_QUERY_DATABASE_URL"])
    if os.environ.get("AUDIT_KEEP_STACK") != "1":
        subprocess.run(["bash", str(STACK), "down", "ha"], check=False, timeout=120)
