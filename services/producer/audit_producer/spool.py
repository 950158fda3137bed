"""A durable local queue for audit events Kafka did not acknowledge in time: fsync'd files, sent again in order.

Layout: `<spool_dir>/<source>/slot-<n>/<sequence>.rec`. A process takes the first slot it can lock
(`flock`), so several workers of one service each get their own, and a restarted process picks up a slot
a dead one left behind and re-sends its records. Each record is written to a temporary file, fsync'd,
renamed into place and the directory fsync'd: once `append` returns, the record survives a crash or a
power cut (given a disk that honours fsync).
"""

import base64
import contextlib
import fcntl
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

from audit_producer.errors import SpoolError, SpoolFullError

_SUFFIX: Final = ".rec"
_MAX_SLOTS: Final = 64


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    """One Kafka record waiting to be sent, and when it was spooled (Unix time)."""

    seq: int
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    spooled_at: float


class Spool:
    """FIFO of records on local disk for one process; every method is thread-safe and may block on fsync."""

    def __init__(self, root: Path, max_records: int, max_bytes: int) -> None:
        self._root = root
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._lock_file: IO[bytes] | None = None
        self.directory: Path | None = None
        self._seqs: list[int] = []
        self._sizes: dict[int, int] = {}
        self._oldest: dict[int, float] = {}

    def open(self) -> None:
        """Lock a slot directory (creating it) and index the records a previous process left there."""
        try:
            self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as e:
            raise SpoolError(f"cannot create the spool directory {self._root}: {e}") from e
        for n in range(_MAX_SLOTS):
            slot = self._root / f"slot-{n}"
            slot.mkdir(exist_ok=True, mode=0o700)
            handle = (slot / ".lock").open("ab")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._lock_file, self.directory = handle, slot
            break
        else:
            raise SpoolError(f"all {_MAX_SLOTS} spool slots under {self._root} are in use")
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        for path in self.directory.glob(f"*{_SUFFIX}"):
            seq = int(path.stem)
            stat = path.stat()
            self._seqs.append(seq)
            self._sizes[seq] = stat.st_size
            self._oldest[seq] = stat.st_mtime
        self._seqs.sort()

    def close(self) -> None:
        """Release the slot; records stay on disk for the next process."""
        handle, self._lock_file = self._lock_file, None
        if handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def __len__(self) -> int:
        return len(self._seqs)

    @property
    def size_bytes(self) -> int:
        """Bytes on disk."""
        return sum(self._sizes.values())

    def oldest_age(self) -> float:
        """Seconds the oldest record has waited (0 when empty)."""
        with self._lock:
            return time.time() - self._oldest[self._seqs[0]] if self._seqs else 0.0

    def append(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> int:
        """Write a record durably at the tail; raise SpoolFullError past the bounds, SpoolError on I/O failure."""
        directory = self._opened()
        now = time.time()
        body = _file_body(topic, key, value, headers, now)
        with self._lock:
            if len(self._seqs) >= self._max_records or self.size_bytes + len(body) > self._max_bytes:
                raise SpoolFullError(f"spool {directory} is full ({len(self._seqs)} records, {self.size_bytes} bytes)")
            seq = (self._seqs[-1] + 1) if self._seqs else _next_after_restart(directory)
            _write_durably(directory, seq, body, "cannot write to the spool")
            self._seqs.append(seq)
            self._sizes[seq] = len(body)
            self._oldest[seq] = now
        return seq

    def replace(self, record: SpooledRecord, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Rewrite a queued record in place, durably (written aside, fsync'd, renamed over it): its place in the
        queue and its age stay. Used once an escrowed record is resolved, so every re-send is byte-identical."""
        directory = self._opened()
        body = _file_body(record.topic, key, value, headers, record.spooled_at)
        with self._lock:
            _write_durably(directory, record.seq, body, "cannot rewrite a record in the spool")
            self._sizes[record.seq] = len(body)

    def head(self) -> SpooledRecord | None:
        """The oldest record, or None. A record that cannot be read is set aside as `.bad` and skipped."""
        directory = self._opened()
        while True:
            with self._lock:
                if not self._seqs:
                    return None
                seq = self._seqs[0]
            path = directory / f"{seq:020d}{_SUFFIX}"
            try:
                raw = json.loads(path.read_bytes())
                return SpooledRecord(
                    seq,
                    raw["topic"],
                    base64.b64decode(raw["key"]),
                    base64.b64decode(raw["value"]),
                    tuple((k, base64.b64decode(v)) for k, v in raw["headers"]),
                    float(raw["spooled_at"]),
                )
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                self._forget(seq)

    def remove(self, seq: int) -> None:
        """Delete a record Kafka acknowledged."""
        directory = self._opened()
        (directory / f"{seq:020d}{_SUFFIX}").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            _fsync_directory(directory)
        self._forget(seq)

    def set_aside(self, seq: int) -> None:
        """Move a record Kafka refused for good out of the queue (kept as `.rejected` for an operator)."""
        directory = self._opened()
        path = directory / f"{seq:020d}{_SUFFIX}"
        with contextlib.suppress(OSError):
            path.rename(path.with_suffix(".rejected"))
            _fsync_directory(directory)
        self._forget(seq)

    def _forget(self, seq: int) -> None:
        with self._lock:
            if seq in self._sizes:
                self._seqs.remove(seq)
                del self._sizes[seq]
                del self._oldest[seq]

    def _opened(self) -> Path:
        if self.directory is None:
            raise SpoolError("the spool is not open")
        return self.directory


def _file_body(topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]], spooled_at: float) -> bytes:
    """A record as its spool file holds it."""
    return json.dumps(
        {
            "topic": topic,
            "key": base64.b64encode(key).decode(),
            "value": base64.b64encode(value).decode(),
            "headers": [[k, base64.b64encode(v).decode()] for k, v in headers],
            "spooled_at": spooled_at,
        }
    ).encode()


def _write_durably(directory: Path, seq: int, body: bytes, failing: str) -> None:
    """Write the record file aside, fsync it, rename it into place and fsync the directory (SpoolError if not)."""
    final = directory / f"{seq:020d}{_SUFFIX}"
    temporary = directory / f"{seq:020d}.tmp"
    try:
        with temporary.open("wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        temporary.rename(final)
        _fsync_directory(directory)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise SpoolError(f"{failing} {directory}: {e}") from e


def _next_after_restart(directory: Path) -> int:
    """A fresh sequence after an emptied spool: time-based, so it sorts after anything a crash left behind."""
    return time.time_ns() // 1000


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
