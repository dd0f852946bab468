"""A TCP proxy in front of a broker, to cut, refuse or delay connections (a network fault).

One helper for both brokers and every test that needs a network fault: the adapter tests
(cut, refuse, TLS termination, widened races) and the reliability suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl


class Proxy:
    """Listens on a free loopback port (``.port``) and pipes each connection to the target.

    With ``tls`` it terminates TLS on the listening side (a TLS broker in front of a plain one).
    """

    def __init__(
        self, target_port: int, host: str = "127.0.0.1", *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.target = (host, target_port)
        self.tls = tls
        #: New connections are dropped at once (the broker looks down).
        self.refusing = False
        #: Seconds every client->server chunk is held back.
        self.delay = 0.0
        self.port = 0
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Drop every proxied connection with no protocol goodbye (like a network failure)."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self._writers |= {writer, up_writer}
        for coro in (self._pipe(reader, up_writer, True), self._pipe(up_reader, writer, False)):
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                if upstream and self.delay:
                    await asyncio.sleep(self.delay)
                dst.write(data)
                await dst.drain()
        dst.transport.abort()
        self._writers.discard(dst)
