"""Fixtures: the real Kafka + Postgres stack, and an isolated schema and set of topics per test."""

import asyncio
import contextlib
import glob
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from uuid import uuid4

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from audit_producer import AuditProducer
from audit_producer.config import Settings as ProducerSettings
from audit_projector.config import Settings as ProjectorSettings
from audit_projector.migrations import migrate
from audit_projector.service import serve
from audit_projector.topics import ensure_topics
from audit_query.auth import new_secret, secret_hash
from audit_query.config import Settings as QuerySettings
from audit_query.main import create_app, server_config
from audit_query.repository import TokenAdmin
from audit_schemas.checkpoint import NoteSigner
from audit_schemas.kafka_security import KafkaSecurity
from audit_schemas.topics import AUDIT_TOPIC, CHECKPOINT_TOPIC, DEAD_LETTER_TOPIC, EXECUTION_LOG_TOPIC
from tests.ports import free_port as free_port
from tests.witness import Litewitness
from tests.witness import tools as witness_tools

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "deploy" / "local" / "stack.sh"
LOG_DIR = Path(tempfile.gettempdir()) / "audit-trail-test-logs"
"""Logs of projector subprocesses, one file each, kept for post-mortems."""


@dataclass(frozen=True)
class Stack:
    """Addresses of the running Kafka broker and Postgres server."""

    bootstrap: str
    owner_dsn: str
    projector_dsn: str
    query_dsn: str
    admin_dsn: str | None = None
    """A superuser DSN, when the stack is ours to disturb (the local one; AUDIT_TEST_ADMIN_DSN otherwise)."""
    ca_file: str | None = None
    """The CA that signed Postgres's certificate, when it offers TLS (AUDIT_TEST_CA_FILE for a given stack)."""
    kafka_pid_file: Path | None = None
    """The local stack's Kafka process, which a test may freeze with SIGSTOP."""
    kafka_container: str | None = None
    """The Kafka container's id, which a test may freeze with `docker pause`."""


def _env_stack() -> Stack | None:
    """A stack given in the environment (AUDIT_TEST_*), e.g. one started by docker compose."""
    names = ("AUDIT_TEST_KAFKA_BOOTSTRAP", "AUDIT_TEST_OWNER_DSN", "AUDIT_TEST_PROJECTOR_DSN", "AUDIT_TEST_QUERY_DSN")
    values = [os.environ.get(n) for n in names]
    if not all(values):
        return None
    bootstrap, owner, projector, query = (str(v) for v in values)
    admin, ca = os.environ.get("AUDIT_TEST_ADMIN_DSN"), os.environ.get("AUDIT_TEST_CA_FILE")
    return Stack(bootstrap, owner, projector, query, admin, ca)


def _local_state_dir() -> Path:
    return Path(os.environ.get("AUDIT_STACK_DIR") or Path(tempfile.gettempdir()) / "audit-trail-stack")


def _local_stack_env(profile: str = "plain") -> dict[str, str]:
    out = subprocess.run(["bash", str(STACK), "env", profile], check=True, capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


CONTAINERS = os.environ.get("AUDIT_TEST_STACK") == "containers"
"""AUDIT_TEST_STACK=containers: Kafka and Postgres from our images, by testcontainers (make test-containers)."""
CLUSTER = os.environ.get("AUDIT_TEST_CLUSTER") == "1"
"""AUDIT_TEST_CLUSTER=1: the fault tests on the three-broker cluster (make test-cluster; bounded, a few minutes)."""
collect_ignore = [] if CONTAINERS else ["containers"]  # the container-only tests (compose smoke) need an engine
if not CLUSTER:
    collect_ignore.append("cluster")


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """Use the stack named in the environment, or containers (AUDIT_TEST_STACK=containers), else start the local
    one (and stop it if we started it)."""
    given = _env_stack()
    if given is not None:
        yield given
        return
    if CONTAINERS:
        from tests.container_stack import container_stack

        with container_stack() as a:
            yield Stack(
                a.bootstrap, a.owner_dsn, a.projector_dsn, a.query_dsn, a.admin_dsn, kafka_container=a.kafka_container
            )
        return
    status = subprocess.run(["bash", str(STACK), "status"], capture_output=True, text=True).stdout
    already = "kafka: running" in status and "postgres: running" in status
    if not already:
        subprocess.run(["bash", str(STACK), "up"], check=True)
    env = _local_stack_env()
    yield Stack(
        env["AUDIT_KAFKA_BOOTSTRAP"],
        env["AUDIT_OWNER_DSN"],
        env["AUDIT_PROJECTOR_DATABASE_URL"],
        env["AUDIT_QUERY_DATABASE_URL"],
        env["AUDIT_POSTGRES_ADMIN_DSN"],
        env["AUDIT_STACK_CA_FILE"],
        kafka_pid_file=_local_state_dir() / "kafka.pid",
    )
    if not already and os.environ.get("AUDIT_KEEP_STACK") != "1":
        subprocess.run(["bash", str(STACK), "down"], check=False)


@dataclass(frozen=True)
class SecureStack:
    """The secure profile: a SASL_SSL broker (SCRAM-SHA-512, the stack's CA) with ACLs, beside the same Postgres."""

    db: Stack
    bootstrap: str
    plaintext: str
    """The PLAINTEXT listener of the same broker: User:ANONYMOUS, granted nothing."""
    ca_file: Path
    credentials: Path
    emitters: tuple[str, ...]

    def security(self, principal: str, *, password: str | None = None, ca_file: Path | None = None) -> KafkaSecurity:
        """Client settings for `principal` (its own password unless `password` is given)."""
        secret = (
            {"sasl_password": password}
            if password is not None
            else {"sasl_password_file": self.credentials / principal}
        )
        return KafkaSecurity.model_validate(
            {"security_protocol": "SASL_SSL", "sasl_username": principal, "ca_file": ca_file or self.ca_file, **secret}
        )


@pytest.fixture(scope="session")
def secure_stack(stack: Stack) -> Iterator[SecureStack]:
    """The local stack's secure broker, started for the session if it is not running (never for a given stack)."""
    if _env_stack() is not None or CONTAINERS:
        pytest.skip("the secure profile is part of the local stack (stack.sh up secure)")
    status = subprocess.run(["bash", str(STACK), "status"], capture_output=True, text=True).stdout
    already = "kafka-secure: running" in status
    if not already:
        subprocess.run(["bash", str(STACK), "up", "secure"], check=True)
    env = _local_stack_env("secure")
    yield SecureStack(
        stack,
        env["AUDIT_KAFKA_BOOTSTRAP"],
        env["AUDIT_SECURE_PLAINTEXT_BOOTSTRAP"],
        Path(env["AUDIT_STACK_CA_FILE"]),
        Path(env["AUDIT_SECURE_CREDENTIALS_DIR"]),
        tuple(env["AUDIT_SECURE_EMITTERS"].split()),
    )
    if not already and os.environ.get("AUDIT_KEEP_STACK") != "1":
        subprocess.run(["bash", str(STACK), "down", "secure"], check=False)


@dataclass(frozen=True)
class Isolated:
    """One test's own schema, topics and consumer group, and settings for each service that use them."""

    stack: Stack
    name: str
    producer: ProducerSettings
    projector: ProjectorSettings
    query: QuerySettings

    @contextlib.asynccontextmanager
    async def owner(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection as the schema owner, with this test's schema on the search path."""
        conn = await asyncpg.connect(self.stack.owner_dsn, server_settings={"search_path": self.name})
        try:
            yield conn
        finally:
            await conn.close()

    async def count(self, table: str) -> int:
        """Rows in one of this test's tables."""
        async with self.owner() as conn:
            value: int = await conn.fetchval(f"SELECT count(*) FROM {table}")
            return value

    async def token(self, scopes: tuple[str, ...] = ("audit:read",), tenants: tuple[str, ...] | None = None) -> str:
        """A new API token in this test's control schema (tenants None: every tenant)."""
        secret = new_secret()
        conn = await asyncpg.connect(self.stack.owner_dsn)
        try:
            await TokenAdmin(conn, self.query.control_schema).create(
                uuid4(), f"test-{len(scopes)}", secret_hash(secret), scopes, tenants, "tests", None
            )
        finally:
            await conn.close()
        return secret

    def query_env(self) -> dict[str, str]:
        """Environment for an `audit-query serve` subprocess pointed at this test's resources (no other
        AUDIT_QUERY_* or PROMETHEUS_* setting of the calling environment leaks in)."""
        q = self.query
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_QUERY_", "PROMETHEUS_"))}
        return {
            **inherited,
            "AUDIT_QUERY_ENVIRONMENT": "test",
            "AUDIT_QUERY_CURSOR_SECRET": q.cursor_secret.get_secret_value(),
            "AUDIT_QUERY_DATABASE_URL": str(q.database_url),
            "AUDIT_QUERY_DB_SCHEMA": q.db_schema,
            "AUDIT_QUERY_CONTROL_SCHEMA": q.control_schema,
            "AUDIT_QUERY_BOOTSTRAP_SERVERS": q.bootstrap_servers,
            "AUDIT_QUERY_PROJECTOR_GROUP": q.projector_group,
            "AUDIT_QUERY_TOPICS": json.dumps(list(q.topics)),  # the API records its own actions on these
        }

    def projector_env(self) -> dict[str, str]:
        """Environment for an `audit-projector run` subprocess pointed at this test's resources."""
        p = self.projector
        return {
            **os.environ,
            "AUDIT_PROJECTOR_ENVIRONMENT": p.environment,
            "AUDIT_PROJECTOR_BOOTSTRAP_SERVERS": p.bootstrap_servers,
            "AUDIT_PROJECTOR_DATABASE_URL": str(p.database_url),
            "AUDIT_PROJECTOR_DB_SCHEMA": p.db_schema,
            "AUDIT_PROJECTOR_GROUP_ID": p.group_id,
            "AUDIT_PROJECTOR_AUDIT_TOPIC": p.audit_topic,
            "AUDIT_PROJECTOR_EXECUTION_LOG_TOPIC": p.execution_log_topic,
            "AUDIT_PROJECTOR_DEAD_LETTER_TOPIC": p.dead_letter_topic,
            "AUDIT_PROJECTOR_CHECKPOINT_TOPIC": p.checkpoint_topic,
            "AUDIT_PROJECTOR_CONTROL_SCHEMA": p.control_schema,
            "AUDIT_PROJECTOR_SESSION_TIMEOUT_MS": str(p.session_timeout_ms),
            "AUDIT_PROJECTOR_HEARTBEAT_INTERVAL_MS": str(p.heartbeat_interval_ms),
            "AUDIT_PROJECTOR_BATCH_MAX_RECORDS": str(p.batch_max_records),
        }


@pytest.fixture
async def isolated(stack: Stack) -> AsyncIterator[Isolated]:
    """A fresh schema (migrated as the owner) and fresh topics for this test only."""
    async with isolated_on(stack) as made:
        yield made


@contextlib.asynccontextmanager
async def isolated_on(
    stack: Stack, environment: Literal["development", "production"] = "development"
) -> AsyncIterator[Isolated]:
    """A fresh schema and fresh topics on `stack`; `environment` production for a replicated cluster."""
    name = f"t{uuid4().hex[:12]}"
    audit_topic, log_topic = f"{name}.audit", f"{name}.logs"
    projector = ProjectorSettings(
        environment=environment,  # development: one broker, unreplicated topics are allowed
        bootstrap_servers=stack.bootstrap,
        database_url=stack.projector_dsn,
        db_schema=name,
        control_schema=f"{name}_control",
        group_id=f"{name}-projector",
        dead_letter_topic=f"{name}.dlq",
        checkpoint_topic=f"{name}.checkpoints",
        session_timeout_ms=3000,
        heartbeat_interval_ms=300,
        poll_timeout_ms=100,
        audit_topic=audit_topic,
        execution_log_topic=log_topic,
    )
    query = QuerySettings(
        environment="test",
        cursor_secret=f"test-cursor-secret-{uuid4().hex}",
        database_url=stack.query_dsn,
        db_schema=name,
        control_schema=f"{name}_control",
        bootstrap_servers=stack.bootstrap,
        projector_group=projector.group_id,
        topics=(audit_topic, log_topic),
        unknown_after_s=3600,
        live_grace_s=1.0,
    )
    producer = ProducerSettings(
        bootstrap_servers=stack.bootstrap, publish_timeout_s=10, audit_topic=audit_topic, execution_log_topic=log_topic
    )
    topics = [*projector.topics, projector.dead_letter_topic, projector.checkpoint_topic]
    await migrate(stack.owner_dsn, name, control_schema=f"{name}_control")
    await ensure_topics(stack.bootstrap, topics, projector.partitions)
    yield Isolated(stack, name, producer, projector, query)
    await _delete_topics(stack.bootstrap, topics)


@dataclass(frozen=True)
class SecureIsolated:
    """One test's schema and topics on the secure broker: names are the default ones suffixed with the test's
    name, so the profile's prefix ACLs apply; each service's settings use its own principal."""

    secure: SecureStack
    name: str
    projector: ProjectorSettings
    query: QuerySettings

    def producer(self, principal: str, signing_key: str, spool_dir: Path) -> ProducerSettings:
        """Settings of an emitting service that authenticates as `principal` and signs with `signing_key`."""
        return ProducerSettings(
            bootstrap_servers=self.secure.bootstrap,
            kafka=self.secure.security(principal),
            signing_key=signing_key,
            publish_timeout_s=10,
            audit_topic=self.projector.audit_topic,
            execution_log_topic=self.projector.execution_log_topic,
            spool_dir=spool_dir,
        )

    def projector_as(self, principal: str, **changes: object) -> ProjectorSettings:
        """The projector's settings under another principal (replay, redrive), with `changes`."""
        return self.projector.model_copy(update={"kafka": self.secure.security(principal), **changes})

    def projector_env(self, principal: str = "audit-projector") -> dict[str, str]:
        """Environment for an `audit-projector` subprocess on this test's resources, as `principal`."""
        p = self.projector
        return {
            **os.environ,
            "AUDIT_PROJECTOR_ENVIRONMENT": p.environment,
            "AUDIT_PROJECTOR_BOOTSTRAP_SERVERS": p.bootstrap_servers,
            "AUDIT_PROJECTOR_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "AUDIT_PROJECTOR_KAFKA__SASL_USERNAME": principal,
            "AUDIT_PROJECTOR_KAFKA__SASL_PASSWORD_FILE": str(self.secure.credentials / principal),
            "AUDIT_PROJECTOR_KAFKA__CA_FILE": str(self.secure.ca_file),
            "AUDIT_PROJECTOR_DATABASE_URL": str(p.database_url),
            "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": self.secure.db.owner_dsn,
            "AUDIT_PROJECTOR_DB_SCHEMA": p.db_schema,
            "AUDIT_PROJECTOR_CONTROL_SCHEMA": p.control_schema,
            "AUDIT_PROJECTOR_GROUP_ID": p.group_id,
            "AUDIT_PROJECTOR_AUDIT_TOPIC": p.audit_topic,
            "AUDIT_PROJECTOR_EXECUTION_LOG_TOPIC": p.execution_log_topic,
            "AUDIT_PROJECTOR_DEAD_LETTER_TOPIC": p.dead_letter_topic,
            "AUDIT_PROJECTOR_CHECKPOINT_TOPIC": p.checkpoint_topic,
        }

    @contextlib.asynccontextmanager
    async def owner(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection as the schema owner, with this test's schema on the search path."""
        conn = await asyncpg.connect(self.secure.db.owner_dsn, server_settings={"search_path": self.name})
        try:
            yield conn
        finally:
            await conn.close()


@pytest.fixture
async def secure_isolated(secure_stack: SecureStack) -> AsyncIterator[SecureIsolated]:
    """A fresh schema and fresh topics on the secure broker, created by the admin principal."""
    name = f"t{uuid4().hex[:12]}"
    projector = ProjectorSettings(
        environment="development",  # one broker: unreplicated topics are allowed
        bootstrap_servers=secure_stack.bootstrap,
        kafka=secure_stack.security("audit-projector"),
        database_url=secure_stack.db.projector_dsn,
        db_schema=name,
        control_schema=f"{name}_control",
        group_id=f"audit-projector.{name}",
        audit_topic=f"{AUDIT_TOPIC}.{name}",
        execution_log_topic=f"{EXECUTION_LOG_TOPIC}.{name}",
        dead_letter_topic=f"{DEAD_LETTER_TOPIC}.{name}",
        checkpoint_topic=f"{CHECKPOINT_TOPIC}.{name}",
        session_timeout_ms=3000,
        heartbeat_interval_ms=300,
        poll_timeout_ms=100,
        probe_interval_s=0.3,
    )
    query = QuerySettings(
        environment="test",
        cursor_secret=f"test-cursor-secret-{uuid4().hex}",
        database_url=secure_stack.db.query_dsn,
        db_schema=name,
        control_schema=f"{name}_control",
        bootstrap_servers=secure_stack.bootstrap,
        kafka=secure_stack.security("audit-query"),
        signing_key=NoteSigner.generate("audit-query")[1],
        projector_group=projector.group_id,
        topics=projector.topics,
    )
    topics = [*projector.topics, projector.dead_letter_topic, projector.checkpoint_topic]
    admin = secure_stack.security("admin")
    await migrate(secure_stack.db.owner_dsn, name, control_schema=f"{name}_control")
    await ensure_topics(secure_stack.bootstrap, topics, projector.partitions, admin)
    yield SecureIsolated(secure_stack, name, projector, query)
    await _delete_topics(secure_stack.bootstrap, topics, admin)


async def _delete_topics(bootstrap: str, topics: list[str], security: KafkaSecurity | None = None) -> None:
    """Drop a test's topics, so a long session does not pile thousands of partitions onto one broker."""
    options = (security or KafkaSecurity()).client_options()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **options)
    try:
        async with asyncio.timeout(20):
            await admin.start()
            await admin.delete_topics(topics)
    except (KafkaError, TimeoutError, AttributeError):
        pass  # best effort: the broker may be the thing a test just disturbed (its controller not known yet)
    finally:
        await admin.close()


@pytest.fixture
async def audit(isolated: Isolated) -> AsyncIterator[AuditProducer]:
    """A started producer publishing to this test's topics."""
    async with AuditProducer("test-service", isolated.producer) as producer:
        yield producer


@contextlib.asynccontextmanager
async def projector_running(settings: ProjectorSettings) -> AsyncIterator[asyncio.Task[None]]:
    """Run a projector in this process until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def projector(isolated: Isolated) -> AsyncIterator[asyncio.Task[None]]:
    """One projector instance projecting this test's topics into its schema."""
    async with projector_running(isolated.projector) as task:
        yield task


@contextlib.asynccontextmanager
async def query_client(settings: QuerySettings, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The query API in this process (its lifespan run), and a client calling it with `token`, if any."""
    app = create_app(settings)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://query", headers=headers) as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def query_server(settings: QuerySettings) -> AsyncIterator[str]:
    """The query API served by uvicorn on a free loopback port (real streaming, unlike the ASGI transport); its
    base URL."""
    config = server_config(create_app(settings), settings, port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                await task
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def api(isolated: Isolated) -> AsyncIterator[httpx.AsyncClient]:
    """The query API served by uvicorn on a free loopback port, and an HTTP client for it."""
    async with query_server(isolated.query) as base:
        admin = await isolated.token(("audit:read", "audit:export", "audit:admin"))
        headers = {"authorization": f"Bearer {admin}"}
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as client:
            yield client


async def projector_cli(
    isolated: Isolated, *args: str, within_s: float = 240, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """`audit-projector ARGS` on this test's resources, as the owner where the command needs it: exit code and
    output (stdout and stderr together); `env` adds settings."""
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-projector"),
        *args,
        env={
            **isolated.projector_env(),
            "AUDIT_PROJECTOR_MIGRATIONS_DATABASE_URL": isolated.stack.owner_dsn,
            "COLUMNS": "400",
            **(env or {}),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), within_s)
    return proc.returncode or 0, out.decode()


def projector_process(
    isolated: Isolated, health_port: int = 0, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `audit-projector run` as a separate OS process (so a test can SIGKILL it)."""
    env = {**isolated.projector_env(), "AUDIT_PROJECTOR_HEALTH_PORT": str(health_port), **(extra_env or {})}
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{isolated.name}-projector-{uuid4().hex[:6]}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "audit_projector", "run", "--log-level", "INFO"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    proc.health_port = health_port  # type: ignore[attr-defined]
    return proc


@contextlib.contextmanager
def broker_frozen(stack: Stack) -> Iterator[None]:
    """A broker that stops answering for the block: the local Kafka JVM SIGSTOPped (SIGCONT after), or the Kafka
    container paused (`docker pause`, the cgroup freezer) and unpaused after."""
    if stack.kafka_container is not None:
        subprocess.run(["docker", "pause", stack.kafka_container], check=True, capture_output=True, timeout=30)
        try:
            yield
        finally:
            subprocess.run(["docker", "unpause", stack.kafka_container], check=True, capture_output=True, timeout=30)
        return
    if stack.kafka_pid_file is None or not stack.kafka_pid_file.is_file():
        pytest.skip("needs the local stack's Kafka process or a Kafka container")
    pid = int(stack.kafka_pid_file.read_text())
    os.kill(pid, signal.SIGSTOP)
    _stopped(pid)  # kill() returns before the JVM's threads stop: a send made at once could still be answered
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _stopped(pid: int, within_s: float = 5.0) -> None:
    """Until every thread of `pid` is in the stopped state (T), bounded."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        states = [(Path(t) / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in glob.glob(f"/proc/{pid}/task/*")]
        if states and all(s in ("T", "t") for s in states):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop within {within_s} s")


@pytest.fixture(scope="session")
def chromedriver() -> str:
    """Debian's Chromium and its driver, installed on first use when the suite runs as root (as CI does)."""
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True, capture_output=True
        )
    found = shutil.which("chromedriver")
    assert found, "chromium-driver is required for the browser tests"
    return found


CHECKER = Path(__file__).resolve().parent / "interop" / "checker"


@pytest.fixture(scope="session")
def go_checker() -> Path:
    """The reference checker (sumdb/note + transparency-dev/merkle), built from the Go module proxy once and
    cached by the hash of its sources."""
    sources = b"".join((CHECKER / name).read_bytes() for name in ("go.mod", "go.sum", "main.go"))
    target = Path(tempfile.gettempdir()) / f"audit-trail-checker-{hashlib.sha256(sources).hexdigest()[:16]}"
    if not target.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        subprocess.run([go, "build", "-o", str(target), "."], cwd=CHECKER, check=True, timeout=600)
    return target


@pytest.fixture
def witnesses(tmp_path: Path) -> Iterator[list[Litewitness]]:
    """Two litewitness processes on loopback, each with its own key, ssh-agent and state."""
    bin_dir = witness_tools()
    started = [Litewitness(bin_dir, tmp_path / f"w{i}", f"witness.test/w{i}") for i in (1, 2)]
    try:
        yield started
    finally:
        for w in started:
            w.close()


@pytest.fixture(scope="session")
def axe_script() -> str:
    """axe-core's engine (pinned, from npm, installed by the project's tools script)."""
    path = subprocess.run(
        ["bash", str(Path(__file__).resolve().parents[1] / "deploy/local/tools.sh"), "axe"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return Path(path).read_text()
