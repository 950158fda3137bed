"""Read latency on a large read model: every query shape the console and API serve, through the API (8 concurrent
clients, as the query role with row-level security on) beside the same SQL run directly through asyncpg.

Generates, once, a schema `bench_api` in the local stack's database (`deploy/local/stack.sh up`): ENTRIES entries
(default 10 M) over 180 days, 50 tenants of very different sizes, 2,000 users, 13 actions, 5 models, a million
entities, ~95% with outcomes, two execution-log lines each and one trace of 3,000 lines; then the rollups, ANALYZE.
Each shape's plan is checked (no sequential scan of the entry or log tables) and its latencies printed:

    python -m bench.query_latency [--entries N] [--requests R] [--regenerate]

Exit status 1 when a plan scans a big table or a shape's API p99 is over the target (50 ms). Shapes marked
`bounded` (outcome filters, which docs/search.md lists as not index-driven) and `beyond` (a whole 3,000-line trace
at once, where the view shows a page) are measured and printed but not held to the target; any non-200 answer
(a statement cancelled by its timeout) still fails the run.
"""

import argparse
import asyncio
import gc
import json
import os
import re
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import uuid4

import asyncpg
import httpx

from audit_projector.migrations import migrate
from audit_projector.repository import compact_rollups
from audit_query.auth import new_secret, secret_hash
from audit_query.config import Settings
from audit_query.main import create_app
from audit_query.repository import AuditRepository, TokenAdmin

OWNER = os.environ.get("AUDIT_OWNER_DSN", "postgresql://audit_owner:audit_owner@127.0.0.1:15432/audit")
QUERY = os.environ.get(
    "AUDIT_QUERY_DATABASE_URL", "postgresql://audit_query:audit_query@127.0.0.1:15432/audit?sslmode=disable"
)
"""Loopback without TLS, as docs/operations.md allows on loopback (the driver's default, `prefer`, would encrypt
here: about 0.5 ms more CPU per request, shared by the API and PostgreSQL; give a URL with `sslmode=require` to
measure that)."""
SCHEMA = "bench_api"
CONTROL = "bench_api_control"
CURSOR_SECRET = "bench-cursor-secret-" + "x" * 32
TARGET_P99_MS = 50.0
WARM_UP = 20
_BLOCKING = frozenset({"Sort", "Incremental Sort", "Aggregate", "Hash", "Materialize", "WindowAgg", "SetOp"})
"""Requests of each shape, through the API and directly, before measuring."""
BIG_TABLES = ("audit_entries", "execution_logs", "audit_outcomes")
BIG_ROWS = 50_000
"""A sequential scan of a partition larger than this fails the shape."""

GENERATE = """
INSERT INTO audit_entries (occurred_at, audit_id, tenant_id, action, entity_model, entity_id, actor_type, actor_id,
                           actor_display_name, user_sort, source, event_id, schema_version, kafka_topic,
                           kafka_partition, kafka_offset)
SELECT t, gen_random_uuid(), tenant, action, model, 'e-' || entity, actor_type, actor,
       CASE WHEN actor IS NULL THEN NULL ELSE 'User ' || actor END,
       CASE WHEN actor IS NULL THEN '1scheduler' ELSE '0user ' || actor END,
       'bench', gen_random_uuid(), 1, 'bench.audit', g % 6, g
  FROM (SELECT g,
               now() - interval '180 days' * (1 - g::float8 / $1) AS t,
               't' || lpad(least(49, floor(50 * power(random(), 3)))::int::text, 2, '0') AS tenant,
               (ARRAY['create','update','delete','execute','approve','reject','destroy','recreate','retry','sync',
                      'enable','disable','dryrun'])[1 + floor(random() * 13)::int] AS action,
               (ARRAY['resource','template','integration','secret','user'])[1 + floor(random() * 5)::int] AS model,
               floor(random() * 1000000)::int AS entity,
               CASE WHEN random() < 0.1 THEN 'system' ELSE 'user' END AS actor_type,
               CASE WHEN random() < 0.1 THEN NULL ELSE 'u-' || floor(random() * 2000)::int END AS actor
          FROM generate_series($2::bigint, $3::bigint) AS g) AS s
"""
# System actions have no user; rows generated as 'system' keep the id NULL only where the draw said so.

OUTCOMES = """
INSERT INTO audit_outcomes (audit_id, tenant_id, entity_model, entity_id, status, error_type, error_message,
                            finished_at, duration_ms, source, event_id, schema_version, kafka_topic, kafka_partition,
                            kafka_offset)
SELECT audit_id, tenant_id, entity_model, entity_id, CASE WHEN r < 0.05 THEN 'failed' ELSE 'succeeded' END,
       CASE WHEN r < 0.05 THEN 'Timeout' END, CASE WHEN r < 0.05 THEN 'upstream timed out' END,
       occurred_at + interval '1 second', 1000, 'bench', gen_random_uuid(), 2, 'bench.audit', kafka_partition,
       kafka_offset + 1
  FROM (SELECT *, random() AS r FROM audit_entries WHERE kafka_offset BETWEEN $1 AND $2) AS e
 WHERE r < 0.95
"""

LOGS = """
INSERT INTO execution_logs (logged_at, log_id, trace_id, tenant_id, level, logger, message, fields, source,
                            schema_version, kafka_topic, kafka_partition, kafka_offset)
SELECT occurred_at + n * interval '1 millisecond', gen_random_uuid(), audit_id, tenant_id,
       CASE WHEN n = 2 AND random() < 0.1 THEN 'error' ELSE 'info' END, 'service', 'step ' || n,
       jsonb_build_object('step', n, 'entity', entity_id), 'bench', 1, 'bench.logs', kafka_partition,
       kafka_offset * 2 + n
  FROM audit_entries CROSS JOIN generate_series(1, 2) AS n
 WHERE kafka_offset BETWEEN $1 AND $2
"""

ROLLUPS = """
INSERT INTO audit_rollups (bucket, tenant_id, action, entity_model, actor_type, status, kafka_partition, entries)
SELECT date_trunc('hour', e.occurred_at, 'UTC'), e.tenant_id, e.action, e.entity_model, e.actor_type,
       coalesce(o.status, 'none'), e.kafka_partition, count(*)
  FROM audit_entries e LEFT JOIN audit_outcomes o ON o.audit_id = e.audit_id
 GROUP BY 1, 2, 3, 4, 5, 6, 7
 ORDER BY 1
"""
# In hour order, as the projector writes them (a grouped insert in hash order scatters an hour over the table).


Statements = list[tuple[str, tuple[Any, ...], str | None]]
"""SQL, arguments and the tenants setting of each statement a request ran."""


@dataclass
class Shape:
    """A request the console or an API client makes, and who makes it."""

    name: str
    path: str
    params: dict[str, Any]
    who: str = "admin"
    warm_params: dict[str, Any] | None = None
    """Parameters of the warm-up requests when not `params`: the same statement prepared with other values, so
    a plan chosen for them (PostgreSQL keeps a generic plan after five executions) serves this one."""
    kind: str = "target"
    """`target`: held to the 50 ms p99; `bounded`: a shape docs/search.md lists as not index-driven (its cost is
    bounded by the statement timeout, its figures are reported); `beyond`: more than a view shows at once."""


async def generate(entries: int, regenerate: bool) -> None:
    """The read model, once (kept between runs unless `regenerate`)."""
    conn = await asyncpg.connect(OWNER)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.audit_entries")
        if exists and not regenerate:
            have = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.audit_entries")
            if have == entries:
                print(f"reusing {SCHEMA}: {have:,} entries")
                await migrate(OWNER, SCHEMA, control_schema=CONTROL)  # indexes added since it was generated
                await conn.execute(f"SET search_path = {SCHEMA}")
                await _compact(conn)
                await conn.execute(f"ANALYZE {SCHEMA}.audit_entries")
                return
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; DROP SCHEMA IF EXISTS {CONTROL} CASCADE")
    finally:
        await conn.close()
    await migrate(OWNER, SCHEMA, control_schema=CONTROL)
    conn = await asyncpg.connect(OWNER, server_settings={"search_path": SCHEMA})
    try:
        started = time.perf_counter()
        for months_back in range(8):
            await conn.execute(
                f"SELECT {CONTROL}.ensure_month_partition($1, $2, "
                "(date_trunc('month', now()) - $3 * interval '1 month')::date)",
                SCHEMA,
                "audit_entries",
                months_back,
            )
            await conn.execute(
                f"SELECT {CONTROL}.ensure_month_partition($1, $2, "
                "(date_trunc('month', now()) - $3 * interval '1 month')::date)",
                SCHEMA,
                "execution_logs",
                months_back,
            )
        chunk = 1_000_000
        for first in range(1, entries + 1, chunk):
            last = min(entries, first + chunk - 1)
            await conn.execute(GENERATE, entries, first, last)
            await conn.execute(OUTCOMES, first, last)
            await conn.execute(LOGS, first, last)
            print(f"  generated {last:,} entries ({time.perf_counter() - started:.0f} s)", flush=True)
        # One long trace, as an action with a chatty worker writes.
        trace = await conn.fetchrow("SELECT audit_id, occurred_at, tenant_id FROM audit_entries WHERE kafka_offset = 7")
        assert trace is not None
        await conn.execute(
            """INSERT INTO execution_logs (logged_at, log_id, trace_id, tenant_id, level, logger, message, fields,
                                           source, schema_version, kafka_topic, kafka_partition, kafka_offset)
               SELECT $1::timestamptz + n * interval '1 millisecond', gen_random_uuid(), $2, $3, 'info', 'worker',
                      'line ' || n, jsonb_build_object('n', n), 'bench', 1, 'bench.logs', 0, 100000000 + n
                 FROM generate_series(1, 3000) AS n""",
            trace["occurred_at"],
            trace["audit_id"],
            trace["tenant_id"],
        )
        await conn.execute(ROLLUPS)
        await conn.execute(
            "INSERT INTO audit_rollup_changes SELECT DISTINCT date_trunc('day', bucket, 'UTC'), tenant_id, "
            "kafka_partition, 1 FROM audit_rollups"
        )
        await conn.execute(
            "INSERT INTO audit_rollup_hour_changes SELECT DISTINCT bucket, tenant_id, kafka_partition, 1 "
            "FROM audit_rollups"
        )
        await _compact(conn)
        await conn.execute("ANALYZE")
        print(f"generated {entries:,} entries in {time.perf_counter() - started:.0f} s")
    finally:
        await conn.close()


async def _compact(conn: asyncpg.Connection) -> None:
    """Fold the closed days into the daily tier, as the projector's periodic compaction does."""
    started = time.perf_counter()
    days = await compact_rollups(conn, datetime.now(UTC))
    if days:
        await conn.execute("ANALYZE")
        print(f"  compacted {days} day(s) of rollups in {time.perf_counter() - started:.0f} s", flush=True)


async def token(tenants: tuple[str, ...] | None) -> str:
    secret = new_secret()
    conn = await asyncpg.connect(OWNER)
    try:
        await TokenAdmin(conn, CONTROL).create(
            uuid4(), "bench", secret_hash(secret), ("audit:read", "audit:export"), tenants, "bench", None
        )
    finally:
        await conn.close()
    return secret


def shapes(trace_hex: str, entity: str, small: str, large: str) -> list[Shape]:
    """Every list shape (filters x sorts) the console offers, the stats, the entity and trace views."""
    out = [Shape(f"list sort={s} {o}", "/v1/audit", {"sort": s, "order": o}) for s in ("time", "user", "event")
           for o in ("desc", "asc")]  # fmt: skip
    out += [
        Shape("event", "/v1/audit", {"event": "approve"}),
        Shape("event sort=user", "/v1/audit", {"event": "approve", "sort": "user", "order": "asc"}),
        Shape("user", "/v1/audit", {"user_id": "u-42"}),
        Shape("user sort=event", "/v1/audit", {"user_id": "u-42", "sort": "event"}),
        Shape("model", "/v1/audit", {"model": "secret"}),
        Shape("entity id alone", "/v1/audit", {"entity_id": entity}),
        Shape("model + entity", "/v1/audit", {"model": "resource", "entity_id": entity}),
        Shape("tenant", "/v1/audit", {"tenant": small}),
        Shape("small tenant + event", "/v1/audit", {"tenant": small, "event": "delete"}),
        Shape("small tenant + event, planned for the largest", "/v1/audit", {"tenant": small, "event": "delete"},
              warm_params={"tenant": large, "event": "delete"}),
        Shape("small tenant + model, planned for the largest", "/v1/audit", {"tenant": small, "model": "secret"},
              warm_params={"tenant": large, "model": "secret"}),
        Shape("outcome failed", "/v1/audit", {"q": "outcome:failed"}, kind="bounded"),
        Shape("outcome failed sort=user", "/v1/audit", {"q": "outcome:failed", "sort": "user", "order": "asc"},
              kind="bounded"),
        Shape("last day", "/v1/audit", {"q": "after:" + _days_ago(1)}),
        Shape("count", "/v1/audit/count", {}),
        Shape("stats 30 days by day+event", "/v1/audit/stats",
              {"group_by": ["bucket", "event"], "bucket": "day", "q": "after:" + _days_ago(30)}),
        Shape("stats 30 days by outcome", "/v1/audit/stats",
              {"group_by": "outcome", "q": "after:" + _days_ago(30)}),
        Shape("stats 30 days by day+model", "/v1/audit/stats",
              {"group_by": ["bucket", "model"], "bucket": "day", "q": "after:" + _days_ago(30)}),
        Shape("stats 2 days by hour", "/v1/audit/stats",
              {"group_by": "bucket", "bucket": "hour", "q": "after:" + _days_ago(2)}),
        Shape("entity view", f"/v1/entities/resource/{entity}/audit", {}),
        Shape("trace: a page (200 of 3,000 lines)", f"/v1/traces/{trace_hex}", {}),
        Shape("trace: all 3,000 lines at once", f"/v1/traces/{trace_hex}", {"logs_limit": 5000}, kind="beyond"),
        Shape("small tenant: list", "/v1/audit", {}, who="small"),
        Shape("small tenant: event", "/v1/audit", {"event": "delete"}, who="small"),
        Shape("small tenant: stats", "/v1/audit/stats", {"group_by": "event"}, who="small"),
    ]  # fmt: skip
    return out


def _days_ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).date().isoformat()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def concurrently(call: Callable[[], Awaitable[None]], requests: int, clients: int = 8) -> list[float]:
    samples: list[float] = []

    async def client(n: int) -> None:
        for _ in range(n):
            started = time.perf_counter()
            await call()
            samples.append((time.perf_counter() - started) * 1000)

    per = max(1, requests // clients)
    await asyncio.gather(*(client(per) for _ in range(clients)))
    return samples


async def run(entries: int, requests: int, regenerate: bool, only: str = "") -> int:
    await generate(entries, regenerate)
    owner = await asyncpg.connect(OWNER, server_settings={"search_path": SCHEMA})
    try:
        trace = await owner.fetchval("SELECT trace_id FROM execution_logs GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
        entity = await owner.fetchval(
            "SELECT entity_id FROM audit_entries WHERE entity_model = 'resource' ORDER BY kafka_offset LIMIT 1"
        )
        small = await owner.fetchval("SELECT tenant_id FROM audit_rollups GROUP BY 1 ORDER BY sum(entries) LIMIT 1")
        large = await owner.fetchval(
            "SELECT tenant_id FROM audit_rollups GROUP BY 1 ORDER BY sum(entries) DESC LIMIT 1"
        )
    finally:
        await owner.close()
    tokens = {"admin": await token(None), "small": await token((small,))}
    settings = Settings(
        environment="test",
        cursor_secret=CURSOR_SECRET,
        database_url=QUERY,
        db_schema=SCHEMA,
        control_schema=CONTROL,
        public_metrics=True,
    )
    port = _free_port()
    # The API in its own process (as deployed): its CPU is not shared with the clients' event loop.
    server = await serve_api(port)
    capture_app = create_app(settings)  # in this process, only to see which SQL a request runs
    failures = []
    print(f"\n{'shape':34} {'API p50':>8} {'API p99':>8} {'SQL p50':>8} {'SQL p99':>8}  plan")
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http,
            capture_app.router.lifespan_context(capture_app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=capture_app), base_url="http://capture") as local,
        ):
            await _until_up(http)
            load = LoadClient(port)
            gc.collect()
            gc.freeze()  # the harness's own long-lived objects: its collections then stay short
            pool = await asyncpg.create_pool(QUERY, min_size=8, max_size=8, server_settings={"search_path": SCHEMA})
            try:
                for shape in [s for s in shapes(trace.hex, entity, small, large) if only in s.name]:
                    headers = {"authorization": f"Bearer {tokens[shape.who]}"}

                    async def call(
                        shape: Shape = shape, headers: dict[str, str] = headers, params: dict[str, Any] | None = None
                    ) -> None:
                        status, body = await load.get(shape.path, shape.params if params is None else params, headers)
                        if status != 200:  # a 503 is a timed-out statement: report, do not hide
                            raise RuntimeError(f"{shape.name}: {status} {body[:300]!r}")

                    # Steady state: plans cached, pages in memory, and (concurrently) the API's pool holding a
                    # connection per client (a first burst would otherwise pay for TLS and authentication).
                    async def warm_up(call: Callable[..., Awaitable[None]] = call, shape: Shape = shape) -> None:
                        await call(params=shape.warm_params)

                    await concurrently(warm_up, WARM_UP * (4 if shape.warm_params else 1))
                    api_ms = await concurrently(call, requests)
                    statements = await capture(capture_app, local, shape, headers)

                    async def direct(statements: Statements = statements) -> None:
                        async with pool.acquire() as conn:
                            await run_sql(conn, statements)

                    await concurrently(direct, WARM_UP)
                    sql_ms = await concurrently(direct, requests)
                    async with pool.acquire() as conn:
                        plan, scans = await explain(conn, statements)
                    a50, a99 = percentiles(api_ms)
                    s50, s99 = percentiles(sql_ms)
                    flag = ""
                    if scans:
                        flag = f"  SEQ SCAN {','.join(scans)}"
                        failures.append(shape.name)
                    elif shape.kind != "target":
                        flag = f"  ({shape.kind})"
                    elif a99 > TARGET_P99_MS:
                        flag = "  over target"
                        failures.append(shape.name)
                    print(f"{shape.name:34} {a50:8.1f} {a99:8.1f} {s50:8.1f} {s99:8.1f}  {plan}{flag}", flush=True)
            finally:
                await pool.close()
                await load.close()
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    if failures:
        print(f"\n{len(failures)} shape(s) over {TARGET_P99_MS:.0f} ms p99 or scanning: {failures}")
    else:
        print("\nall shapes within target")
    return 1 if failures else 0


async def capture(app: Any, client: httpx.AsyncClient, shape: Shape, headers: dict[str, str]) -> Statements:
    """The SQL one request of this shape runs, seen by a query logger on a pool swapped in for the request."""
    seen: list[tuple[str, tuple[Any, ...]]] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: seen.append((record.query, tuple(record.args or ()))))

    pool = await asyncpg.create_pool(
        QUERY, min_size=1, max_size=2, server_settings={"search_path": SCHEMA}, init=log_queries
    )
    live: AuditRepository = app.state.repository
    app.state.repository = AuditRepository(pool, timedelta(minutes=15))
    try:
        response = await client.get(shape.path, params=shape.params, headers=headers)
        response.raise_for_status()
    finally:
        app.state.repository = live
        await pool.close()
    statements: Statements = []
    tenants: str | None = None
    for query, args in seen:
        head = query.lstrip().upper()
        control = head.startswith(("BEGIN", "COMMIT", "ROLLBACK", "SET ", "DECLARE", "FETCH", "CLOSE"))
        driver = "PG_ADVISORY_UNLOCK_ALL" in head or "TYPEINFO" in head  # the driver's own (reset, type lookup)
        if "SET_CONFIG('AUDIT.TENANTS'" in head:
            literal = re.search(r"set_config\('audit\.tenants', '((?:[^']|'')*)'", query)
            tenants = str(args[0]) if args else (literal.group(1).replace("''", "'") if literal else "*")
        elif not (control or driver):
            statements.append((query, args, tenants))
    return statements


class LoadClient:
    """The load generator's HTTP/1.1 client: one keep-alive connection per simulated client, a request written as
    bytes and the answer read by its length. It shares the 2 cores with the API and PostgreSQL, so it must cost
    little: httpx spends about 1.2 ms of CPU on each request here, a fifth of what the request itself costs."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str, params: dict[str, Any], headers: dict[str, str]) -> tuple[int, bytes]:
        """GET `path` with `params`; the status and the whole body (read by Content-Length or chunked)."""
        target = path + ("?" + urlencode(params, doseq=True) if params else "")
        head = f"GET {target} HTTP/1.1\r\nhost: 127.0.0.1:{self._port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        while True:  # the server closes a connection idle for its keep-alive time: then try the next, or a new one
            reused = bool(self._idle)
            reader, writer = self._idle.pop() if reused else await asyncio.open_connection("127.0.0.1", self._port)
            writer.write(head.encode())
            try:
                answer = await reader.readuntil(b"\r\n\r\n")
                break
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                writer.close()
                if not reused or (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                    raise
        status_line, _, raw = answer.partition(b"\r\n")
        status = int(status_line.split()[1])
        fields = {}
        for line in raw.split(b"\r\n"):
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"content-length" in fields:
            body = await reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readuntil(b"\r\n")
            body = b"".join(parts)
        else:
            raise RuntimeError(f"{path}: an answer with neither a length nor chunks")
        if fields.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        return status, body

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def serve_api(port: int, **settings: str) -> asyncio.subprocess.Process:
    """`audit-query serve` in its own process on `port`, reading the bench schemas (plus `settings`, as
    AUDIT_QUERY_* variables without the prefix); its output discarded."""
    env = {
        **os.environ,
        "AUDIT_QUERY_ENVIRONMENT": "test",
        "AUDIT_QUERY_CURSOR_SECRET": CURSOR_SECRET,
        "AUDIT_QUERY_DATABASE_URL": QUERY,
        "AUDIT_QUERY_DB_SCHEMA": SCHEMA,
        "AUDIT_QUERY_CONTROL_SCHEMA": CONTROL,
        "AUDIT_QUERY_PORT": str(port),
        **{f"AUDIT_QUERY_{name.upper()}": value for name, value in settings.items()},
    }
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "audit-query"),
        "serve",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _until_up(http: httpx.AsyncClient) -> None:
    for _ in range(150):
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the query API did not start")


async def run_sql(conn: Any, statements: Statements) -> None:
    for sql, args, tenants in statements:
        async with conn.transaction(readonly=True):
            await conn.execute("SELECT set_config('audit.tenants', $1, true)", tenants or "*")
            await conn.fetch(sql, *args)


async def explain(conn: Any, statements: Statements) -> tuple[str, list[str]]:
    """The indexes the plans use, and the big tables they scan sequentially."""
    indexes: list[str] = []
    scans: list[str] = []

    def walk(node: dict[str, Any], limited: bool = False) -> None:
        relation = node.get("Relation Name", "")
        # A sequential scan under a Limit stops after that many rows (the capped count): bounded, not a scan of
        # the table.
        if node.get("Node Type") == "Seq Scan" and relation.startswith(BIG_TABLES) and not limited:
            scanned.append(relation)
        if "Index Name" in node:
            indexes.append(node["Index Name"])
        kind = node.get("Node Type", "")
        streams = kind not in _BLOCKING  # a node that reads all its input first does not stop early
        for child in node.get("Plans", []):
            walk(child, (limited or kind == "Limit") and streams)

    scanned: list[str] = []
    for sql, args, tenants in statements:
        async with conn.transaction(readonly=True):
            await conn.execute("SELECT set_config('audit.tenants', $1, true)", tenants or "*")
            plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
        walk(plan[0]["Plan"])
    # Scanning an empty or small partition is the right plan; a large one is not.
    if scanned:
        sizes = await conn.fetch(
            "SELECT relname, reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND relname = ANY($2::text[])",
            SCHEMA,
            scanned,
        )
        scans.extend(r["relname"] for r in sizes if r["reltuples"] > BIG_ROWS)
    names = sorted({i.split("_y20")[0] for i in indexes})
    return ", ".join(names[:3]) or "-", sorted(set(scans))


def main() -> None:
    import logging

    import structlog

    # The capturing app's access log (one line per request) would drown the table.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--only", default="", help="Run only the shapes whose name contains this text.")
    args = parser.parse_args()
    sys.exit(asyncio.run(run(args.entries, args.requests, args.regenerate, args.only)))


if __name__ == "__main__":
    main()
