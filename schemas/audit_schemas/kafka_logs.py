"""The Kafka client's own logging during an outage, as one line when it starts, one a minute while it lasts and one
when it ends, with a count of what was held back — instead of a line per reconnection attempt (hundreds a second).

Each service installs it once (`quiet_kafka_outages`) and reports the count through its own metrics.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

REMIND_S: Final = 60.0
"""While an outage lasts, one reminder line this often."""
QUIET_S: Final = 10.0
"""With no client error for this long, the outage counts as over (unless a success said so sooner)."""


class KafkaOutageFilter(logging.Filter):
    """Lets the first client warning or error of an outage through (marked as such) and holds back the rest."""

    def __init__(self, on_suppressed: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._on_suppressed = on_suppressed
        self._lock = threading.Lock()
        self._since: float | None = None
        self._last_error = 0.0
        self._last_line = 0.0
        self._held = 0

    @property
    def in_outage(self) -> bool:
        """Whether client errors are being held back now."""
        return self._since is not None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = time.monotonic()
        with self._lock:
            if self._since is not None and now - self._last_error >= QUIET_S:
                self._end(now, "no client error for a while")
            self._last_error = now
            if self._since is None:
                self._since = self._last_line = now
                return True  # the first line of a spell passes as it is: often it is the only one
            if now - self._last_line >= REMIND_S:
                self._last_line = now
                record.msg = (
                    f"kafka client trouble for {now - self._since:.0f} s, {self._held} client lines held back; "
                    f"latest: {record.msg}"
                )
                return True
            if self._held == 0:
                record.msg = f"kafka client trouble (further client lines are counted, not logged): {record.msg}"
                self._held = 1
                return True
            self._held += 1
        if self._on_suppressed is not None:
            self._on_suppressed(1)
        return False

    def recovered(self) -> None:
        """The client succeeded again (an acknowledgement, a fetch): end the outage now, with its summary line."""
        if self._since is None:
            return
        with self._lock:
            if self._since is not None:
                self._end(time.monotonic(), "the client succeeded again")

    def _end(self, now: float, why: str) -> None:
        assert self._since is not None
        if self._held:  # a spell of one line needs no summary
            logging.getLogger("aiokafka.outage").warning(
                "kafka client trouble over after %.1f s (%s); %d client lines were held back",
                now - self._since,
                why,
                self._held - 1,
            )
        self._since = None
        self._held = 0


_installed: KafkaOutageFilter | None = None


def quiet_kafka_outages(on_suppressed: Callable[[int], None] | None = None) -> KafkaOutageFilter:
    """Install one outage filter on every aiokafka logger there is (a filter on a parent does not see its children's
    records; call it once aiokafka is imported); idempotent. Returns it, so a service can tell it of a success."""
    global _installed
    if _installed is None:
        _installed = KafkaOutageFilter(on_suppressed)
    names = ["aiokafka", *(n for n in logging.Logger.manager.loggerDict if n.startswith("aiokafka."))]
    for name in names:
        if name == "aiokafka.outage":
            continue
        target = logging.getLogger(name)
        if _installed not in target.filters:
            target.addFilter(_installed)
    return _installed


__all__ = ["KafkaOutageFilter", "quiet_kafka_outages"]
