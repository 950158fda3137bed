"""The query API's exceptions, each with its HTTP status, and the one place that classifies driver errors."""

import contextlib
from collections.abc import Iterator
from typing import Any, Final

import asyncpg
from aiokafka.errors import KafkaConnectionError

from audit_schemas.kafka_security import KafkaSecurity


class QueryError(RuntimeError):
    """Root of everything audit_query raises on purpose."""

    status_code = 500


class BadRequestError(QueryError, ValueError):
    """The request is well-formed but cannot be answered as asked (e.g. a foreign cursor)."""

    status_code = 400


class UnauthorizedError(QueryError):
    """No credential, or one that is invalid, expired or revoked."""

    status_code = 401

    def __init__(self, message: str, *, invalid: bool = False) -> None:
        super().__init__(message)
        self.invalid = invalid

    @property
    def challenge(self) -> str:
        """The `WWW-Authenticate` header (RFC 6750)."""
        if self.invalid:
            return 'Bearer realm="audit-trail", error="invalid_token"'
        return 'Bearer realm="audit-trail"'


class ForbiddenError(QueryError):
    """The credential is valid but lacks the scope the route needs."""

    status_code = 403


class NotFoundError(QueryError):
    """No entry, entity history or trace with that id."""

    status_code = 404


class TooManyRequestsError(QueryError):
    """The caller holds its share of a bounded resource (open live streams); retry after a while."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreUnavailableError(QueryError):
    """The read model could not be reached; retry later."""

    status_code = 503


_CONNECTION_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress" after a lost socket
    asyncpg.OperatorInterventionError,  # 57P01 terminated by an administrator, 57P03 cannot connect now
    asyncpg.InsufficientResourcesError,  # 53: too many connections, out of memory
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions._base.InternalClientError,  # protocol state broken by a connection lost mid-operation
)


def classify_db_error(error: BaseException) -> QueryError | None:
    """The one place that maps asyncpg errors to statuses: lost or refused connections and timeouts are 503."""
    if isinstance(error, asyncpg.DataError | asyncpg.exceptions._base.DataError):
        # A value that reached SQL and PostgreSQL refused: the request's fault, not the server's.
        return BadRequestError(f"a request value was refused: {error}")
    if isinstance(error, asyncpg.QueryCanceledError):
        return StoreUnavailableError("the query took too long and was cancelled; narrow the filters or retry")
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return StoreUnavailableError("the database answering is read-only (a failover under way?); retry shortly")
    if isinstance(error, _CONNECTION_ERRORS):
        return StoreUnavailableError(f"read model unavailable: {error}")
    return None


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Translate driver errors raised inside the block; anything unclassified propagates as a bug (500)."""
    try:
        yield
    except QueryError:
        raise
    except Exception as e:
        mapped = classify_db_error(e)
        if mapped is None:
            raise
        raise mapped from e


ERROR_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    400: {"description": "A parameter, cursor or value the API cannot take (the detail says which)."},
    401: {"description": "No credential, or one that is invalid or expired."},
    403: {"description": "The credential lacks the scope this route needs."},
    404: {"description": "No such entry, entity or trace (or not one the caller's tenants may see)."},
    429: {"description": "Too many open live streams for this credential; retry after `Retry-After` seconds."},
    503: {"description": "The read model is unreachable or a query timed out; retry later."},
}
"""Statuses every data route may answer, each with a JSON body `{"detail": ...}`, for the OpenAPI document."""


async def kafka_refusal(error: BaseException, security: KafkaSecurity, bootstrap: str) -> str:
    """`error` as text, with the cause of a SASL bootstrap failure named (the Kafka client only logs it)."""
    refusal = await security.explain_refusal(bootstrap) if isinstance(error, KafkaConnectionError) else None
    return f"{error!r}" if refusal is None else f"{error!r}: {refusal.reason}"
