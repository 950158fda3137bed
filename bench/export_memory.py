"""Export memory: a view of about 1 M entries exported as NDJSON and as CSV through the API, the server's resident
memory sampled throughout, beside a view a tenth of its size. A streamed export keeps memory flat: the large
export's peak growth over the server's idle size must stay within the small one's plus a margin.

Uses the read model `bench.query_latency` generates (`bench_api`, 10 M entries over 180 days) and the local stack
(`deploy/local/stack.sh up`): the API records each export in Kafka before it starts, so it needs the broker.

    python -m bench.export_memory [--days 18]

Each NDJSON download is checked end to end: its trailer's count equals the entry lines received and its SHA-256
equals the digest of every byte before it. Exit status 1 when memory grows with the view or a check fails.
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from audit_projector.topics import ensure_topics
from bench.query_latency import OWNER, SCHEMA, _free_port, _until_up, generate, serve_api, token

BOOTSTRAP = os.environ.get("AUDIT_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
TOPICS = ("bench.export-audit", "bench.export-logs")
"""Where the API records its exports (its own audit topic), apart from any real deployment's."""
MARGIN_BYTES = 16 * 1024 * 1024
"""Allowance over the small export's growth: allocator noise, the pool's extra connections, a larger cursor batch."""


@dataclass
class Run:
    """One export: what it moved and what the server's memory did meanwhile."""

    fmt: str
    rows: int
    size: int
    seconds: float
    idle_rss: int
    peak_rss: int

    @property
    def growth(self) -> int:
        return self.peak_rss - self.idle_rss


class RssSampler:
    """The resident set size of a process, sampled every 20 ms on a thread, and its peak since `reset`."""

    def __init__(self, pid: int) -> None:
        self._path = Path(f"/proc/{pid}/status")
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        for line in self._path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def reset(self) -> int:
        self._peak = self.now()
        return self._peak

    @property
    def peak(self) -> int:
        return self._peak

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, self.now())

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def windows(days: float) -> list[tuple[str, datetime, datetime]]:
    """Two views over the middle of the generated history: `days` long and a tenth of that."""
    conn = await asyncpg.connect(OWNER, server_settings={"search_path": SCHEMA})
    try:
        span = await conn.fetchrow("SELECT min(bucket), max(bucket) FROM audit_rollups")
    finally:
        await conn.close()
    if span is None or span[0] is None:
        raise RuntimeError(f"{SCHEMA} holds no entries: run python -m bench.query_latency first")
    first, last = span
    start = first + (last - first) / 3
    return [("small", start, start + timedelta(days=days / 10)), ("large", start, start + timedelta(days=days))]


async def export(
    http: httpx.AsyncClient, sampler: RssSampler, fmt: str, since: datetime, until: datetime, headers: dict[str, str]
) -> Run:
    """Download one export, checking an NDJSON one's trailer against what arrived."""
    idle = sampler.reset()
    params = {"format": fmt, "since": since.isoformat(), "until": until.isoformat(), "sort": "time", "order": "asc"}
    started = time.perf_counter()
    rows = size = 0
    digest = hashlib.sha256()
    trailer: dict[str, object] | None = None
    async with http.stream("GET", "/v1/audit/export", params=params, headers=headers, timeout=600) as response:
        if response.status_code != 200:
            raise RuntimeError(f"export {fmt}: {response.status_code} {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            raw = (line + "\n").encode()
            size += len(raw)
            if fmt == "ndjson" and line.startswith('{"type":"trailer"'):
                trailer = json.loads(line)
                continue
            digest.update(raw)
            rows += line.startswith('{"type":"entry"') if fmt == "ndjson" else 1
    seconds = time.perf_counter() - started
    if fmt == "ndjson":
        if trailer is None or trailer["count"] != rows or trailer["sha256"] != digest.hexdigest():
            raise RuntimeError(f"the NDJSON trailer does not match the download: {trailer}, {rows} entries")
    else:
        rows -= 2  # the description line and the header row
    return Run(fmt, rows, size, seconds, idle, sampler.peak)


async def run(days: float) -> int:
    await generate(10_000_000, False)
    await ensure_topics(BOOTSTRAP, list(TOPICS), 1)
    secret = await token(None)
    port = _free_port()
    server = await serve_api(port, bootstrap_servers=BOOTSTRAP, topics=json.dumps(TOPICS), log_level="WARNING")
    headers = {"authorization": f"Bearer {secret}"}
    runs: list[tuple[str, Run]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            await _until_up(http)
            views = await windows(days)
            with RssSampler(server.pid) as sampler:
                # Warm up: imports, the pool's connection, the Kafka producer's first metadata.
                await export(http, sampler, "ndjson", views[0][1], views[0][1] + timedelta(hours=1), headers)
                for fmt in ("ndjson", "csv"):
                    for name, since, until in views:
                        result = await export(http, sampler, fmt, since, until, headers)
                        runs.append((name, result))
                        print(
                            f"{fmt:6} {name:5} {result.rows:>9,} rows {result.size / 1e6:8.1f} MB "
                            f"{result.seconds:6.1f} s {result.rows / result.seconds:>8,.0f} rows/s  server RSS "
                            f"{result.idle_rss / 2**20:6.1f} -> {result.peak_rss / 2**20:6.1f} MiB "
                            f"(+{result.growth / 2**20:.1f})",
                            flush=True,
                        )
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
    failed = False
    for fmt in ("ndjson", "csv"):
        small, large = (r for _, r in runs if r.fmt == fmt)
        ratio = large.rows / max(1, small.rows)
        flat = large.growth <= small.growth + MARGIN_BYTES
        failed |= not flat
        print(
            f"{fmt}: {ratio:.1f}x the rows; peak growth {large.growth / 2**20:.1f} MiB against "
            f"{small.growth / 2**20:.1f} MiB ({'flat' if flat else 'GROWS WITH THE VIEW'})"
        )
    return 1 if failed else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=float, default=18.0, help="Length of the large view (about 55,000 a day).")
    sys.exit(asyncio.run(run(parser.parse_args().days)))


if __name__ == "__main__":
    main()
