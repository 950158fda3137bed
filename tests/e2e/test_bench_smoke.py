"""The benches in their smoke mode (small N, seconds), so they never rot: each runs end to end and prints its
table; their figures are read in full runs, never asserted here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Stack

pytestmark = [pytest.mark.kafka]


def test_the_producer_bench_runs_and_writes_its_figures(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "producer.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.producer_latency", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "AUDIT_KAFKA_BOOTSTRAP": stack.bootstrap},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "audit.action()" in done.stdout
    assert "÷ raw /s" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["smoke"] is True
    assert {r["concurrency"] for r in figures["actions"]} == {1, 8, 64}
    assert all(r["per_second"] > 0 for r in figures["actions"] + figures["logs"])
