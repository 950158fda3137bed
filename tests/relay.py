"""A loopback TCP relay in front of a real server that can be frozen: it then keeps every socket open, accepts new
ones and forwards nothing, as a hung host does (SIGSTOP) — without stopping the shared server behind it."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit


@dataclass
class FrozenRelay:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` until `freeze()`; `accepted` counts connections."""

    target_host: str
    target_port: int
    port: int = 0
    accepted: int = 0
    _running: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def freeze(self) -> None:
        self._running.clear()

    def dsn(self, dsn: str) -> str:
        """`dsn` (a single-host PostgreSQL URL) pointed at the relay instead."""
        parts = urlsplit(dsn)
        auth = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)
        await self._running.wait()  # frozen: the connection is accepted, and never answered
        up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        self._writers.append(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(1_000_000):  # bounded
            data = await reader.read(65536)
            if not data:
                break
            await self._running.wait()  # frozen: what arrives is held, never passed on
            writer.write(data)
            await writer.drain()
        writer.close()

    def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


@contextlib.asynccontextmanager
async def frozen_relay(dsn: str) -> AsyncIterator[FrozenRelay]:
    """A relay in front of the server of `dsn`, running until frozen; everything closed on exit."""
    target = urlsplit(dsn)
    relay = FrozenRelay(target.hostname or "127.0.0.1", target.port or 5432)
    relay._running.set()
    server = await asyncio.start_server(relay._track, "127.0.0.1", 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        server.close()
        for task in list(relay._tasks):
            task.cancel()
        for writer in relay._writers:
            writer.close()
        await asyncio.gather(*relay._tasks, return_exceptions=True)
