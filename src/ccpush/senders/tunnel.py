"""A CONNECT relay on loopback between reqwest and the egress proxy: ``TunnelRelay``.

reqwest asks a proxy for a tunnel to the push address's host name (``CONNECT name:443``),
and the proxy would resolve that name again itself, after the guard checked it: an answer
that changed in between (DNS rebinding) would lead the proxy inside. reqwest takes no other
address for the tunnel while keeping the name for TLS, so https pushes go through this
relay: it answers reqwest's ``CONNECT name:port``, asks the proxy for the address the guard
checked for that name (``CONNECT ip:port``, with the proxy's credentials), and then copies
bytes both ways. TLS stays end to end between reqwest and the receiver.

A name the guard has not checked is refused (403), and so is an address it refuses: the
relay is no way around the guard. What the proxy did when it refused a tunnel is kept in
``failures`` for the sender's error text, reqwest saying only that the tunnel failed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import Callable
from typing import Final

from ccpush.guard import TargetPolicy, check_address, literal_address
from ccpush.senders.egress import PushProxy, proxy_refused, proxy_unreachable

HEAD_LIMIT: Final = 16_384
CHUNK: Final = 65_536
FAILURES_KEPT: Final = 1024


class TunnelRelay:
    """Tunnels to the checked address of each name, through ``proxy``. ``checked`` gives the
    address the guard passed for a name (None if none)."""

    def __init__(
        self,
        proxy: PushProxy,
        checked: Callable[[str], str | None],
        policy: TargetPolicy,
        connect_timeout: float,
        trusted: ssl.SSLContext | None = None,
    ) -> None:
        self.proxy = proxy
        self._trusted = trusted
        """How an https proxy's certificate is checked (default: the system's CAs)."""
        self._checked = checked
        self._policy = policy
        self._timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.failures: dict[str, str] = {}
        """Why the proxy gave no tunnel to a ``host:port`` reqwest asked for, the last time."""
        self.url = ""

    async def start(self) -> str:
        """Listen on loopback; the relay's URL, for reqwest's https proxy."""
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._tunnel(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self._timeout):
            head = await reader.readuntil(b"\r\n\r\n")
        method, _, rest = head.decode("latin-1").partition(" ")
        asked = rest.partition(" ")[0]
        address = self._address(asked) if method == "CONNECT" else None
        if address is None:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = await self._open_tunnel(asked, address)
        if upstream is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        up_reader, up_writer = upstream
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            up_writer.close()

    def _address(self, asked: str) -> str | None:
        """The address to ask the proxy for, for reqwest's ``host:port``; None if refused."""
        host, _, port = asked.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            return None
        if literal_address(host) is not None:
            found: str | None = host if check_address(host, self._policy) is None else None
        else:
            found = self._checked(host.lower())
        if found is None:
            return None
        return f"[{found}]:{port}" if ":" in found else f"{found}:{port}"

    async def _open_tunnel(
        self, asked: str, address: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        proxy = self.proxy
        tls = None
        if proxy.scheme == "https":
            tls = self._trusted or ssl.create_default_context()
        try:
            async with asyncio.timeout(self._timeout):
                up_reader, up_writer = await asyncio.open_connection(
                    proxy.host, proxy.port, ssl=tls, limit=HEAD_LIMIT
                )
        except (OSError, TimeoutError) as exc:
            self._failed(asked, proxy_unreachable(proxy, _reason(exc)))
            return None
        up_writer.write(self._connect(address))
        try:
            async with asyncio.timeout(self._timeout):
                answer = await up_reader.readuntil(b"\r\n\r\n")
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            up_writer.close()
            self._failed(asked, proxy_unreachable(proxy, "no answer to CONNECT"))
            return None
        status, reason = _status(answer)
        if status != 200:
            up_writer.close()
            self._failed(asked, proxy_refused(proxy, status, reason, address))
            return None
        self.failures.pop(asked, None)
        return up_reader, up_writer

    def _connect(self, address: str) -> bytes:
        lines = [f"CONNECT {address} HTTP/1.1", f"Host: {address}"]
        if self.proxy.username is not None:
            pair = f"{self.proxy.username}:{self.proxy.password or ''}".encode()
            lines.append(f"Proxy-Authorization: Basic {base64.b64encode(pair).decode()}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _failed(self, asked: str, text: str) -> None:
        if len(self.failures) >= FAILURES_KEPT:
            self.failures.clear()
        self.failures[asked] = text


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(CHUNK):
            sink.write(chunk)
            await sink.drain()
    finally:
        with contextlib.suppress(OSError):
            if sink.can_write_eof():
                sink.write_eof()


def _status(answer: bytes) -> tuple[int, str]:
    line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ", 2)
    try:
        return int(parts[1]), (parts[2] if len(parts) > 2 else "")
    except (IndexError, ValueError):
        return 0, "(not HTTP)"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no connection in time"
    return getattr(exc, "strerror", None) or type(exc).__name__
