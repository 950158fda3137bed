"""CPU seconds spent by this process, by PostgreSQL (every backend, exited ones included) and by the Kafka broker,
read from /proc: where a phase's time went on a box they all share."""

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds so far: this process, PostgreSQL (live processes plus the postmaster's reaped children), Kafka."""

    here: float
    postgres: float
    kafka: float

    def __sub__(self, before: "Cpu") -> "Cpu":
        return Cpu(self.here - before.here, self.postgres - before.postgres, self.kafka - before.kafka)


def _stat(pid: str) -> tuple[str, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # exited meanwhile
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, text.rsplit(")", 1)[1].split()


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _ticks(fields: list[str], first: int) -> float:
    """Two adjacent tick counters of a stat line (user then system), in seconds."""
    return (int(fields[first]) + int(fields[first + 1])) / CLOCK_TICKS


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    found = _stat(str(pid))
    if found is None:
        raise ProcessLookupError(pid)
    return _ticks(found[1], 11)


def sample() -> Cpu:
    """Now. A backend's time is counted live, or (once it exits and is reaped) in its postmaster's children's time;
    a backend reaped between the two reads can be missed, a few milliseconds at most."""
    postgres = kafka = 0.0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        found = _stat(pid)
        if found is None:
            continue
        name, fields = found
        own = _ticks(fields, 11)
        if name in ("postgres", "postmaster"):
            postgres += own
            parent = _stat(fields[1])
            if parent is None or parent[0] not in ("postgres", "postmaster"):  # the postmaster: add reaped children
                postgres += _ticks(fields, 13)
        elif name == "java" and b"kafka.Kafka" in _cmdline(pid):
            kafka += own
    return Cpu(time.process_time(), postgres, kafka)
