"""The benches in their smoke mode (small N, seconds), so they never rot: each runs end to end and prints its
table; their figures are read in full runs, never asserted here."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Stack

pytestmark = [pytest.mark.kafka]


def _smoke(module: str, stack: Stack, out: Path, timeout: float, **env: str) -> tuple[str, Any]:
    """`python -m bench.<module> --smoke` against `stack`: its table and its figures."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "AUDIT_KAFKA_BOOTSTRAP": stack.bootstrap,
            "AUDIT_OWNER_DSN": stack.owner_dsn,
            "AUDIT_PROJECTOR_DATABASE_URL": stack.projector_dsn,
            "AUDIT_QUERY_DSN": stack.query_dsn,
            **({"AUDIT_POSTGRES_ADMIN_DSN": stack.admin_dsn} if stack.admin_dsn else {}),
            **env,
        },
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout, json.loads(out.read_text())


def test_the_producer_bench_runs_and_writes_its_figures(stack: Stack, tmp_path: Path) -> None:
    table, figures = _smoke("producer_latency", stack, tmp_path / "producer.json", 180)
    assert "audit.action()" in table
    assert "÷ raw /s" in table
    assert figures["smoke"] is True
    assert {r["concurrency"] for r in figures["actions"]} == {1, 8, 64}
    assert all(r["per_second"] > 0 for r in figures["actions"] + figures["logs"])
    assert "the check of those exact bytes" in table
    assert figures["check_us"] > 0
    if stack.admin_dsn:  # the key store needs a schema of its own
        assert {r["name"] for r in figures["sealing"]} >= {"signed, not sealed", "sealed, warm cache"}
        assert all(r["per_second"] > 0 for r in figures["sealing"])


@pytest.mark.postgres
def test_the_ingest_bench_runs_and_writes_its_figures(stack: Stack, tmp_path: Path) -> None:
    table, figures = _smoke("ingest", stack, tmp_path / "ingest.json", 240)
    assert "COPY of its write set" in table
    assert "audit-projector replay" in table
    assert "floor: reading + the projector's decode" in table  # one process's ceiling, no database
    assert figures["rows"] > figures["records"]  # entries, outcomes, logs, leaves, nodes, rollups…
    assert all(r["records_per_s"] > 0 for r in figures["rates"].values())
    spent = figures["cpu"]["projector (tree and checkpoints on)"]  # where the time went: this process, the database
    assert spent["here"] > 0
    assert spent["postgres"] > 0


@pytest.mark.postgres
def test_the_projectors_bench_runs_one_and_three_and_checks_the_rebalance(stack: Stack, tmp_path: Path) -> None:
    table, figures = _smoke("projectors", stack, tmp_path / "projectors.json", 240)
    assert "records/CPU-s" in table
    assert set(figures["rates"]) == {"1", "3"}
    assert all(r["correct"] == 1.0 for r in figures["rates"].values())


@pytest.mark.postgres
def test_the_lag_bench_runs_with_and_without_witnesses_and_with_a_raw_load(stack: Stack, tmp_path: Path) -> None:
    table, figures = _smoke("lag", stack, tmp_path / "lag.json", 400)
    assert "list p99 ms" in table
    assert "lost" in table
    assert set(figures["variants"]) >= {"0", "2", "raw 0"}
    for variant in ("0", "2", "raw 0"):
        assert figures["variants"][variant]["never_seen"] == 0
        assert figures["variants"][variant]["steady"] > 0
        assert all(v > 0 for v in figures["variants"][variant]["list_p99"])
        assert figures["variants"][variant]["to_batch_p50"], "the projector's share of the lag is measured"
        assert figures["variants"][variant]["cores_busy"]["projector"] > 0
    assert figures["variants"]["2"]["cosign_p50"], "two witnesses cosigned the run's checkpoints"


@pytest.mark.postgres
def test_the_peer_bench_runs_kafka_connect_with_debezium_and_writes_its_figures(stack: Stack, tmp_path: Path) -> None:
    plugins = subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / "tools.sh"), "debezium"],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.strip()
    table, figures = _smoke("peer", stack, tmp_path / "peer.json", 300, AUDIT_DEBEZIUM_PLUGINS=plugins)
    assert "projector ÷ peer" in table
    assert figures["peer_best_per_s"][0] > 0
    assert figures["projector_per_s"][0] > 0
    [config] = figures["peer_configurations"]
    assert config["connector.class"] == "io.debezium.connector.jdbc.JdbcSinkConnector"


@pytest.mark.postgres
def test_the_memory_bench_runs_the_projector_and_a_replay_and_writes_their_peaks(stack: Stack, tmp_path: Path) -> None:
    table, figures = _smoke("memory", stack, tmp_path / "memory.json", 300)
    assert "peak RSS MiB" in table
    assert {(p["process"], p["records"] > 0) for p in figures["peaks"]} == {("projector", True), ("replay", True)}
    assert all(p["peak_rss_mib"] > 10 for p in figures["peaks"])


def test_the_swap_pause_bench_replays_swaps_and_writes_each_sizes_pause(stack: Stack, tmp_path: Path) -> None:
    table, figures = _smoke("swap_pause", stack, tmp_path / "swap_pause.json", 300)
    assert "pause ms" in table
    small, large = figures["swaps"]
    assert 0 < small["records"] < large["records"]
    assert all(s["rows_verified"] > 0 and s["paused_ms"] > 0 for s in (small, large))
