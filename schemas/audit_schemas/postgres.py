"""Connecting through a multi-host DSN with a deadline per host, as libpq's `connect_timeout` means it.

asyncpg spends one deadline on all hosts in turn, so a host that accepts TCP but never answers (a frozen former
primary) uses it up and the promoted standby behind it is never tried. Here each host gets its own deadline, and
`target_session_attrs` (read-write, prefer-standby, ...) is honoured across them. Closing is bounded the same way.
"""

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import asyncpg

DEFAULT_CLOSE_TIMEOUT_S: Final = 5.0
"""How long a graceful close may wait for the server's goodbye before the socket is just dropped."""
DEFAULT_HOST_TIMEOUT_S: Final = 5.0
"""Per host, unless the DSN says `connect_timeout=`: long enough for a loaded server's TLS handshake, short
enough that a failover is found within seconds."""

_URL: Final = re.compile(r"^(?P<scheme>postgres(?:ql)?://)(?:(?P<auth>[^@/?]*)@)?(?P<hosts>[^/?]*)(?P<path>/[^?]*)?"
                         r"(?:\?(?P<query>.*))?$")  # fmt: skip
_STANDBY_FIRST: Final = {"prefer-standby": "standby"}
_SUSPECT_FOR_S: Final = 30.0
_suspect: dict[str, float] = {}
"""Hosts that let a connection attempt time out, and when: tried last for a while, so that every new connection
does not wait out a frozen host's deadline first."""

Connect = Callable[..., Awaitable[asyncpg.Connection]]


def split_hosts(dsn: str) -> tuple[list[str], float]:
    """One single-host DSN per host of `dsn` (in order, each keeping `target_session_attrs`), and the per-host
    timeout; a DSN that names its hosts otherwise (e.g. `?host=` sockets) comes back whole."""
    match = _URL.match(dsn)
    if match is None or not match["hosts"] or ("," not in match["hosts"] and "connect_timeout" not in dsn):
        return [dsn], DEFAULT_HOST_TIMEOUT_S
    query = parse_qsl(match["query"] or "", keep_blank_values=True)
    timeout = DEFAULT_HOST_TIMEOUT_S
    kept = []
    for key, value in query:
        if key == "connect_timeout":
            try:
                timeout = max(1.0, float(value))  # libpq: values under 2 count as 2; one second is our floor
            except ValueError as e:
                raise ValueError(f"connect_timeout must be a number of seconds, not {value!r}") from e
        else:
            kept.append((key, value))
    rest = f"{match['path'] or ''}{'?' + urlencode(kept) if kept else ''}"
    auth = f"{match['auth']}@" if match["auth"] is not None else ""
    return [f"{match['scheme']}{auth}{host}{rest}" for host in match["hosts"].split(",")], timeout


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """`asyncpg.connect`, each host of a multi-host `dsn` tried with its own deadline (see the module)."""
    hosts, timeout = split_hosts(dsn)
    kwargs.pop("timeout", None)
    if len(hosts) == 1:
        single: asyncpg.Connection = await asyncpg.connect(hosts[0], timeout=timeout, **kwargs)
        return single
    attrs = _target(dsn)
    first_pass = _STANDBY_FIRST.get(attrs)
    errors: list[str] = []
    alive: list[str] = []
    now = time.monotonic()
    for host in sorted(hosts, key=lambda h: _suspect.get(h, 0.0) > now - _SUSPECT_FOR_S):
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                _with_target(host, first_pass or attrs), timeout=timeout, **kwargs
            )
            _suspect.pop(host, None)
            return conn
        except asyncpg.TargetServerAttributeNotMatched as e:
            alive.append(host)
            errors.append(f"{_where(host)}: {e}")
        except TimeoutError as e:
            _suspect[host] = time.monotonic()
            errors.append(f"{_where(host)}: no answer within {timeout:g} s ({e!r})")
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as e:
            errors.append(f"{_where(host)}: {e!r}")
    if first_pass is not None:
        for host in alive:  # no standby answers: a primary serves as well
            try:
                conn = await asyncpg.connect(_with_target(host, "any"), timeout=timeout, **kwargs)
                return conn  # noqa: RET504 (typed: asyncpg.connect returns Any to mypy)
            except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as e:
                errors.append(f"{_where(host)}: {e!r}")
    raise ConnectionError(f"no host of the DSN serves as {attrs}: {'; '.join(errors)}")


async def close(conn: asyncpg.Connection, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
    """Close `conn` gracefully, or drop it: a frozen server never answers the goodbye, and asyncpg waits for it
    without end unless given a timeout (it then aborts the socket itself)."""
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()


async def close_pool(pool: asyncpg.Pool, timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S) -> None:
    """Close every connection of `pool` gracefully within `timeout_s`, or terminate them all (see `close`)."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pool.terminate()


def _target(dsn: str) -> str:
    match = _URL.match(dsn)
    query = dict(parse_qsl(match["query"] or "")) if match else {}
    return str(query.get("target_session_attrs", "any"))


def _with_target(dsn: str, attrs: str) -> str:
    match = _URL.match(dsn)
    assert match is not None
    query = [(k, v) for k, v in parse_qsl(match["query"] or "", keep_blank_values=True) if k != "target_session_attrs"]
    query.append(("target_session_attrs", attrs))
    return dsn.split("?", 1)[0] + "?" + urlencode(query)


def _where(dsn: str) -> str:
    match = _URL.match(dsn)
    return str(match["hosts"]) if match else "?"
