"""Reading HTTP/1.1 answers off a raw socket, for tests that write requests byte by byte.

Requests are written by hand on purpose (that is what such a test is about); answers
are framed by aiohttp's own response parser, the one wasp's HTTP client uses, so no
test trusts a home-made parser for what the server said. One `AnswerReader` per
connection keeps the bytes of pipelined answers that arrived early.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import HttpResponseParser, RawResponseMessage

MAX_HEAD_LINE = 1 << 16


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def keeps_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


class AnswerReader:
    """Answers in the order they come on one connection."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        self._reader = reader
        # read_until_eof: an answer without a length ends at the close (HTTP/1.0 style).
        self._parser = HttpResponseParser(
            BaseProtocol(loop), loop, MAX_HEAD_LINE, read_until_eof=True
        )
        self._ready: deque[tuple[RawResponseMessage, StreamReader]] = deque()
        self._after_upgrade = b""  # after a 101: the new protocol's bytes, not ours to parse
        self._ended = False

    async def _feed(self, timeout_s: float) -> None:
        if self._ended:
            raise ConnectionResetError("closed before an answer")
        data = await asyncio.wait_for(self._reader.read(1 << 16), timeout_s)
        if not data:
            self._ended = True
            self._parser.feed_eof()  # a body delimited by the close is complete now
            return
        messages, upgraded, tail = self._parser.feed_data(data)
        self._ready.extend(messages)
        if upgraded:
            self._after_upgrade += tail

    async def next(self, timeout_s: float = 5.0) -> Answer:
        """The next whole answer (an interim 100 is an answer of its own)."""
        while not self._ready:
            await self._feed(timeout_s)
        message, payload = self._ready.popleft()
        while not payload.is_eof() and not self._ended:
            await self._feed(timeout_s)
        body = await asyncio.wait_for(payload.read(), timeout_s)
        headers = {name.lower(): value for name, value in message.headers.items()}
        return Answer(message.code, headers, body)

    async def closed(self, timeout_s: float = 5.0) -> bool:
        """True once the server has closed the connection (nothing more was sent)."""
        if self._ready or self._after_upgrade:
            return False
        if self._ended:
            return True
        try:
            return await asyncio.wait_for(self._reader.read(1), timeout_s) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
