"""A DNS resolver for tests: answers from a table and never asks real DNS."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver


class FakeDNS(AbstractResolver):
    """Answers from a table, one answer per call (the last repeats); never asks real DNS.

    Names in ``real`` (only ever ``localhost``) go to aiohttp's ``ThreadedResolver``.
    """

    def __init__(self, answers: dict[str, list[list[str]]], real: Iterable[str] = ()) -> None:
        self.answers = {name: list(script) for name, script in answers.items()}
        self.real = frozenset(real)
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        if host in self.real:
            return await ThreadedResolver().resolve(host, port, family)
        script = self.answers.get(host)
        if not script:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = script.pop(0) if len(script) > 1 else script[0]
        return [_answer(host, address, port) for address in addresses]

    async def close(self) -> None:
        pass


def _answer(host: str, address: str, port: int) -> ResolveResult:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    return ResolveResult(
        hostname=host, host=address, port=port, family=family, proto=0, flags=flags
    )
