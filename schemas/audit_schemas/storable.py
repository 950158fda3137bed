"""Value types that refuse what PostgreSQL cannot store, so such events fail validation, not the database.

PostgreSQL's `text` refuses NUL (22021), `jsonb` refuses `\\u0000` (22P05) and NaN/Infinity, `bigint` stops at
2**63-1 (22003), and any string must be valid UTF-8 (a lone surrogate is not). A `timestamptz` is stored in UTC,
so an offset that moves a date past year 1 or 9999 cannot be converted. Events are checked here, once, by the
producer before sending and by the projector before writing.

Text and times are checked by pydantic-core's own constraints (a pattern, which also refuses any string that is not
UTF-8, and bounds in UTC), not by Python validators: they run for every field of every record on the projector's
hot path. `explain` puts their errors in plain words.
"""

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, AwareDatetime, Field, JsonValue, StringConstraints, ValidationError

BIGINT_MAX: Final = 2**63 - 1
"""Largest value of PostgreSQL's `bigint`."""

JSON_MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects accepted inside a JSON value."""

JSON_INT_MAX_BITS: Final = 13_000
"""Largest integer inside a JSON value, in bits (about 3,900 decimal digits; Python prints at most 4,300)."""

TEXT_PATTERN: Final = r"^[^\x00]*$"
"""No NUL character; pydantic-core refuses a string that is not UTF-8 (a lone surrogate) before any pattern."""

UTC_MIN: Final = datetime(1, 1, 1, tzinfo=UTC)
UTC_MAX: Final = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
"""The range of instants a `timestamptz` converted to UTC (and Python's datetime) can hold."""
_UTC_BOUNDS: Final = ("0001-01-01T00:00:00", "9999-12-31T23:59:59")
"""How pydantic-core names those bounds in an error's context."""


def check_text(value: str) -> str:
    """Refuse strings PostgreSQL cannot store: NUL characters and lone surrogates (not UTF-8)."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"must be valid Unicode text (lone surrogate at position {e.start})") from None
    return value


def check_json(value: Any) -> Any:
    """Refuse JSON values `jsonb` cannot hold: NUL or surrogates in strings or keys, non-finite or huge numbers."""
    _walk(value, "", 0)
    return value


def _walk(value: Any, path: str, depth: int) -> None:
    if depth > JSON_MAX_DEPTH:
        raise ValueError(f"nested deeper than {JSON_MAX_DEPTH} levels at {path or '/'}")
    if isinstance(value, str):
        _at(path, check_text, value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if value.bit_length() > JSON_INT_MAX_BITS:
            raise ValueError(f"integer at {path or '/'} is too large (over {JSON_INT_MAX_BITS} bits)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"number at {path or '/'} must be finite (NaN and Infinity are not JSON)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _at(f"{path}/{key!r}", check_text, key)
            _walk(item, f"{path}/{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}/{i}", depth + 1)


def _at(path: str, check: Any, value: str) -> None:
    try:
        check(value)
    except ValueError as e:
        raise ValueError(f"{path or 'value'} {e}") from None


def check_utc(value: datetime) -> datetime:
    """Refuse aware datetimes whose UTC equivalent falls outside years 1..9999."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once converted to UTC") from None
    return value


Text = Annotated[str, StringConstraints(pattern=TEXT_PATTERN)]
"""A string PostgreSQL's `text` can store."""

StorableJson = Annotated[JsonValue, AfterValidator(check_json)]
"""A JSON value PostgreSQL's `jsonb` can store."""

StorableDatetime = Annotated[AwareDatetime, Field(ge=UTC_MIN, le=UTC_MAX)]
"""An aware datetime that converts to UTC."""

Bigint = Annotated[int, Field(ge=0, le=BIGINT_MAX)]
"""A non-negative integer that fits PostgreSQL's `bigint`."""

FiniteFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
"""A non-negative finite number."""


def explain(error: ValidationError) -> str:
    """A validation error on one line, with the storable constraints' failures in plain words."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {_message(e)}" for e in error.errors()[:10])


def _message(error: Mapping[str, Any]) -> str:
    kind, context = error["type"], error.get("ctx") or {}
    if kind == "string_pattern_mismatch" and context.get("pattern") == TEXT_PATTERN:
        return "must not contain a NUL character (U+0000)"
    if kind == "string_unicode":
        return "must be valid Unicode text (a lone surrogate is not UTF-8)"
    bound = str(context.get("ge", context.get("le")))
    if kind in ("greater_than_equal", "less_than_equal") and bound.startswith(_UTC_BOUNDS):
        return "is out of range once converted to UTC (years 1 to 9999)"
    return str(error["msg"])
