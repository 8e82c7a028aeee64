"""A receiver on loopback that answers every push with exact bytes, however broken: for
answers no HTTP server library would write."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal, Self

Then = Literal["keep", "close", "stall"]
"""After the answer: keep the connection for the next push, close it, or leave it open
without a word more until the receiver stops."""


class RawReceiver:
    def __init__(self, answer: bytes = b"", then: Then = "close") -> None:
        self.answer = answer
        self.then: Then = then
        self.pushes = 0
        self._server: asyncio.Server | None = None
        self._stopping = asyncio.Event()
        self._serving: set[asyncio.Task[None]] = set()

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        """Stop listening, and end every connection (a kept one waits for a next push)."""
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for task in self._serving:
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/cdr"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        serving = asyncio.current_task()
        assert serving is not None
        self._serving.add(serving)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while await _read_push(reader):
                    self.pushes += 1
                    writer.write(self.answer)
                    await writer.drain()
                    if self.then == "stall":
                        await self._stopping.wait()
                    if self.then != "keep":
                        break
        finally:
            writer.close()
            self._serving.discard(serving)


async def _read_push(reader: asyncio.StreamReader) -> bool:
    """Read one request (its head, and its body by its Content-Length); False at the end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return True


def head(status_line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    """An answer: its status line, headers and body, with a Content-Length matching
    ``body`` unless ``headers`` have one."""
    if not any(header.lower().startswith(b"content-length") for header in headers):
        headers = (*headers, b"Content-Length: %d" % len(body))
    return b"\r\n".join([status_line, *headers, b"", body])
