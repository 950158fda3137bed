"""The swap's pause as the read model grows: at a small and a large history of the realistic mix (`bench/mix.py`;
default 1 M and 5 M records), replay it into a live schema and into a rebuild, then swap the rebuild in. No
projector runs, so the pause is the hold itself: the catch-up, the tail comparison and the rename. Flat means the
large size's pause is about the small one's. Usage:
`python -m bench.swap_pause [--small N] [--large N] [--smoke] [--json PATH]` (records; the mix has 5 per action).
"""

import argparse
import asyncio
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from uuid import uuid4

import asyncpg

from audit_projector.migrations import migrate
from audit_projector.replay import replay
from audit_projector.swap import swap
from audit_projector.topics import ensure_topics
from bench import figures as figures_out
from bench.mix import publish_mix
from bench.projector_vs_copy import BOOTSTRAP, OWNER, bench_settings, drop_bench_schemas

PARTITIONS = 6


@dataclass(frozen=True)
class Swap:
    records: int
    rebuild_seconds: float
    rows_verified: int
    paused_ms: float
    catch_up_ms: float
    tail_compare_ms: float


async def one_size(records: int) -> Swap:
    name = f"bench_{uuid4().hex[:8]}"
    live = bench_settings(name).model_copy(update={"kafka_group_id": f"{name}-a"})
    rebuild = live.model_copy(update={"db_schema": f"{name}_b", "kafka_group_id": f"{name}-b"})
    await migrate(OWNER, live.db_schema, control_schema=live.control_schema)
    await ensure_topics(BOOTSTRAP, [*live.topics, live.dead_letter_topic, live.checkpoint_topic], PARTITIONS)
    await publish_mix(BOOTSTRAP, live.audit_topic, live.execution_log_topic, max(1, records // 5))
    conn = await asyncpg.connect(OWNER)
    try:
        first = await replay(live, OWNER, timeout_s=7200)
        second = await replay(rebuild, OWNER, timeout_s=7200)
        swapped = await swap(live, rebuild, OWNER, timeout_s=600)
        return Swap(
            first.records,
            second.seconds,
            swapped.rows_verified,
            swapped.paused_s * 1000,
            swapped.caught_up_s * 1000,
            swapped.tail_compared_s * 1000,
        )
    finally:
        await drop_bench_schemas(conn, name)
        await conn.close()


async def main(small: int, large: int, smoke: bool, out: Path) -> None:
    swaps = [await one_size(small), await one_size(large)]
    print(f"{os.cpu_count()} cores; the realistic mix at {small:,} and {large:,} records, swapped with no projector")
    print(
        f"{'records':>10} {'rebuild s':>10} {'rows verified':>14} {'pause ms':>9} {'catch-up ms':>12} "
        f"{'tail cmp ms':>12} {'÷ smaller':>10}"
    )
    for s in swaps:
        print(
            f"{s.records:>10,} {s.rebuild_seconds:>10.1f} {s.rows_verified:>14,} {s.paused_ms:>9.0f} "
            f"{s.catch_up_ms:>12.0f} {s.tail_compare_ms:>12.0f} {s.paused_ms / swaps[0].paused_ms:>10.2f}"
        )
    figures_out.write(out, {"smoke": smoke, "swaps": [asdict(s) for s in swaps]})
    print(f"written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=1_000_000)
    parser.add_argument("--large", type=int, default=5_000_000)
    parser.add_argument("--smoke", action="store_true", help="2,000 and 10,000 records: under a minute.")
    parser.add_argument("--json", type=Path, default=figures_out.default_path("swap_pause"))
    args = parser.parse_args()
    small, large = (2_000, 10_000) if args.smoke else (args.small, args.large)
    asyncio.run(main(small, large, args.smoke, args.json))
