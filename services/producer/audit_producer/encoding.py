"""Turn whatever a caller records into JSON the contract accepts, deterministically, without ever raising.

Common types are encoded the same way every time (datetimes and dates as ISO 8601, Decimal as its exact
string, UUIDs as strings, enums as their values, bytes as base64, sets as sorted lists). A value that
cannot be recorded (NaN, a NUL character, a lone surrogate, a circular structure, an unknown type, or too
large) is replaced by a marker `{"$unrecorded": "<why>"}` and the reason is reported, so the outcome is
always recorded.
"""

import base64
import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from pydantic import BaseModel

from audit_schemas.storable import JSON_INT_MAX_BITS, JSON_MAX_DEPTH

MARKER: Final = "$unrecorded"
_SCALAR_KEYS: Final = (str, int, float, bool, type(None), Decimal, uuid.UUID, dt.date, enum.Enum)


def marker(why: str) -> dict[str, str]:
    """The JSON that stands in for a value that could not be recorded."""
    return {MARKER: why[:1024]}


def safe_text(value: object, limit: int) -> str:
    """Any object as text the contract accepts: str() that cannot raise, NUL and surrogates escaped, bounded."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception as e:
        text = f"<unprintable {type(value).__name__}: {type(e).__name__}>"
    text = text.replace("\x00", "\\x00")
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text[:limit]


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode)"
    return None


def to_json(value: Any, path: str, problems: dict[str, str], *, max_bytes: int, lenient: bool = False) -> Any:
    """`value` as a JSON value; unrecordable parts become markers and are reported under their path.

    `lenient` (execution logs): text is escaped and unknown types are written as their repr instead.
    """
    encoded = _encode(value, path, problems, 0, set(), lenient)
    try:
        size = len(json.dumps(encoded, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError) as e:  # unreachable for _encode's output; kept so this never raises
        problems[path] = f"not encodable: {e}"
        return marker("not encodable")
    if size > max_bytes:
        why = f"{size} bytes, over the {max_bytes}-byte limit"
        problems[path] = why
        return marker(why)
    return encoded


def _encode(value: Any, path: str, problems: dict[str, str], depth: int, active: set[int], lenient: bool) -> Any:
    if depth > JSON_MAX_DEPTH:
        return _refuse(path, problems, f"nested deeper than {JSON_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        return _encode(value.value, path, problems, depth + 1, active, lenient)
    if isinstance(value, int):
        return value if value.bit_length() <= JSON_INT_MAX_BITS else _refuse(path, problems, "integer too large")
    if isinstance(value, float):
        return value if math.isfinite(value) else _refuse(path, problems, f"{value} is not a finite number")
    if isinstance(value, str):
        why = text_problem(value)
        if why is not None and lenient:
            problems[path] = why
            return safe_text(value, len(value) * 4 + 16)
        return value if why is None else _refuse(path, problems, why)
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else _refuse(path, problems, f"Decimal {value} is not finite")
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if id(value) in active:
        return _refuse(path, problems, "circular reference")
    active.add(id(value))
    try:
        return _encode_container(value, path, problems, depth, active, lenient)
    finally:
        active.discard(id(value))


def _encode_container(
    value: Any, path: str, problems: dict[str, str], depth: int, active: set[int], lenient: bool
) -> Any:
    if isinstance(value, BaseModel):
        return _encode(value.model_dump(mode="json"), path, problems, depth + 1, active, lenient)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _encode(fields, path, problems, depth + 1, active, lenient)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = json_key(key)
            if not isinstance(key, _SCALAR_KEYS):
                problems[f"{path}.{safe_text(name, 64)}"] = f"a {type(key).__name__} key written as its repr"
            why = text_problem(name)
            if why is not None:
                problems[f"{path}.{safe_text(name, 64)}"] = f"key {why}"
                name = safe_text(name, 256)
            out[name] = _encode(item, f"{path}.{name}", problems, depth + 1, active, lenient)
        return out
    if isinstance(value, list | tuple):
        return [_encode(item, f"{path}[{i}]", problems, depth + 1, active, lenient) for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_encode(item, f"{path}[]", problems, depth + 1, active, lenient) for item in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if lenient:
        problems[path] = f"a {type(value).__name__} written as its repr"
        return safe_text(_repr(value), 4096)
    return _refuse(path, problems, f"a {type(value).__name__} is not JSON-encodable")


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as e:
        return f"<unprintable {type(value).__name__}: {type(e).__name__}>"


def json_key(key: Any) -> str:
    """JSON object keys are strings: other scalars are written the way `json.dumps` writes them."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, enum.Enum):
        return json_key(key.value)
    if isinstance(key, int | float | Decimal | uuid.UUID | dt.date | dt.datetime):
        return key.isoformat() if isinstance(key, dt.date) else str(key)
    return safe_text(repr(key), 256)


def _refuse(path: str, problems: dict[str, str], why: str) -> dict[str, str]:
    problems[path] = why
    return marker(why)
