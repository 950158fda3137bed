"""The projector's exceptions, and the one place that classifies driver errors into them."""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError

from audit_schemas.kafka_security import KafkaSecurity


class ProjectorError(RuntimeError):
    """Root of everything the projector raises on purpose."""

    retriable = False
    """True when the same work may succeed after reconnecting (the service restarts its pipeline)."""


class DependencyUnavailableError(ProjectorError):
    """Postgres or Kafka dropped or refused the connection; nothing was committed, try again."""

    retriable = True


class MigrationError(ProjectorError):
    """A migration failed, or an applied migration file was changed afterwards."""


class FencedError(ProjectorError):
    """A batch's offset fence did not hold: another projector moved the partition on; roll back."""

    def __init__(self, partitions: list[tuple[str, int]]) -> None:
        super().__init__(f"offset fence lost for {partitions}")
        self.partitions = partitions


class PausedError(ProjectorError):
    """An operator paused the projectors of this read model (a swap in progress): the batch was rolled back and
    the pipeline waits for the resume, then starts over from the stored offsets."""

    def __init__(self, read_model: str, reason: str | None) -> None:
        super().__init__(f"projection into {read_model} is paused" + (f": {reason}" if reason else ""))
        self.read_model = read_model


class DeadLetterError(ProjectorError):
    """The dead-letter topic did not acknowledge a record, so the batch must not be committed."""

    retriable = True


class RecordDataError(ProjectorError):
    """The database refused a value of the batch (a data error): some record may be poison; isolate it."""


class DatabaseError(ProjectorError):
    """The database failed for a reason that is not a record's fault (privileges, constraints, disk, bugs)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record the database or the registry refused on its own, with the reason its dead letter carries."""

    topic: str
    partition: int
    offset: int
    reason: str
    detail: str


class RecordsRejectedError(ProjectorError):
    """Records of the batch were refused on their own; the batch rolled back and is retried without them."""

    def __init__(self, rejections: list[Rejection]) -> None:
        super().__init__(f"{len(rejections)} record(s) refused: {[r.reason for r in rejections][:5]}")
        self.rejections = rejections


_CONNECTION_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 cannot connect now
    asyncpg.InsufficientResourcesError,  # 53: too many connections, out of memory, disk full — may pass
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions._base.InternalClientError,  # protocol state broken by a connection lost mid-operation
)
_CLIENT_DATA_ERRORS: Final = (
    asyncpg.exceptions._base.DataError,  # an argument asyncpg could not encode
    UnicodeEncodeError,  # a lone surrogate in a string
    OverflowError,  # an integer or date out of PostgreSQL's range, found while encoding
)
_RECORD_SQLSTATE_CLASSES: Final = ("22", "54")
"""Data exception (22xxx: bad encoding, out of range, invalid text) and program limit (54xxx: value too big)."""


def is_record_data_error(error: BaseException) -> bool:
    """True for errors a single bad value can cause; everything else is not a record's fault."""
    if isinstance(error, _CLIENT_DATA_ERRORS):
        return True
    state = getattr(error, "sqlstate", None)
    return isinstance(error, asyncpg.PostgresError) and isinstance(state, str) and state[:2] in _RECORD_SQLSTATE_CLASSES


def classify_db_error(what: str, error: BaseException) -> ProjectorError:
    """Map an asyncpg (or encoding) error to the projector's own kind; the caller raises it `from` the cause."""
    if isinstance(error, ProjectorError):
        return error
    if isinstance(error, _CONNECTION_ERRORS) or (
        isinstance(error, asyncpg.InterfaceError) and not isinstance(error, asyncpg.exceptions._base.DataError)
    ):
        return DependencyUnavailableError(f"{what}: database connection lost: {error}")
    state = getattr(error, "sqlstate", None)
    if isinstance(state, str) and (state[:2] == "40" or state == "55P03"):
        # Deadlock, serialization failure, lock timeout: the same work may pass on the next try.
        return DependencyUnavailableError(f"{what}: transient conflict [{state}] {error}")
    if is_record_data_error(error):
        return RecordDataError(f"{what}: [{state or type(error).__name__}] {error}")
    return DatabaseError(f"{what}: [{state or type(error).__name__}] {error}")


@contextlib.contextmanager
def db_errors(what: str) -> Iterator[None]:
    """Translate driver errors raised inside the block; the projector's own errors pass through."""
    try:
        yield
    except ProjectorError:
        raise
    except (asyncpg.PostgresError, asyncpg.InterfaceError, *_CONNECTION_ERRORS, *_CLIENT_DATA_ERRORS) as e:
        raise classify_db_error(what, e) from e


@contextlib.contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Translate Kafka client errors: retriable ones (broker away, leader moving) restart the pipeline."""
    try:
        yield
    except ProjectorError:
        raise
    except KafkaError as e:
        raise classify_kafka_error(what, e) from e


async def explain_refusal(error: ProjectorError, security: KafkaSecurity, bootstrap: str) -> ProjectorError:
    """A bootstrap failure under SASL with its cause named (the client only logs it); refused credentials or an
    untrusted broker certificate are not worth retrying, so they become fatal."""
    if not (error.retriable and isinstance(error.__cause__, KafkaConnectionError)):
        return error
    refusal = await security.explain_refusal(bootstrap)
    if refusal is None:
        return error
    kind = ProjectorError if refusal.permanent else DependencyUnavailableError
    explained = kind(f"{error}: {refusal.reason}")
    explained.__cause__ = error.__cause__
    return explained


def classify_kafka_error(what: str, error: KafkaError) -> ProjectorError:
    """Retriable Kafka errors (broker away, leader moving) are the kind that rebuilds the pipeline."""
    kind = DependencyUnavailableError if error.retriable or _is_connection(error) else ProjectorError
    return kind(f"{what}: {error!r}")


def _is_connection(error: KafkaError) -> bool:
    return type(error).__name__ in {"KafkaConnectionError", "NodeNotReadyError", "RequestTimedOutError"}
