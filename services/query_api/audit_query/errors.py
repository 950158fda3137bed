"""The query API's exceptions; each maps to one HTTP status in `main.py`."""


class QueryError(RuntimeError):
    """Root of everything audit_query raises on purpose."""

    status_code = 500


class BadRequestError(QueryError, ValueError):
    """The request is well-formed but cannot be answered as asked (e.g. a foreign cursor)."""

    status_code = 400


class NotFoundError(QueryError):
    """No entry, entity history or trace with that id."""

    status_code = 404


class StoreUnavailableError(QueryError):
    """The read model could not be reached; retry later."""

    status_code = 503
