"""structlog set-up for the query service: console lines on a TTY, JSON lines otherwise, one chain for our own
events (the access log of who read what) and for uvicorn's and the drivers' stdlib records."""

import logging
import sys

import structlog
from prometheus_client import Counter

from audit_schemas.kafka_logs import quiet_kafka_outages

KAFKA_LINES_HELD = Counter(
    "audit_query_kafka_client_lines_held", "Kafka client warnings and errors held back during outages."
)


def configure(level: str = "INFO") -> None:
    """Route structlog and stdlib logging through one renderer on stderr, at `level`."""
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_kafka_outages(lambda n: KAFKA_LINES_HELD.inc(n))


__all__ = ["configure"]
