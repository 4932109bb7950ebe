"""Reading HTTP/1.1 answers off a raw socket, for tests that write requests byte by byte.

Requests are written by hand on purpose (that is what such a test is about); answers
are parsed by llhttp (httptools), so no test trusts a home-made parser for what the
server said. One `AnswerReader` per connection keeps the bytes of pipelined answers
that arrived early.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = b""

    @property
    def keeps_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"


@dataclass
class _Parsed:
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    done: bool = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class AnswerReader:
    """Answers in the order they come on one connection."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader
        self._early = b""

    async def next(self, timeout_s: float = 5.0) -> Answer:
        """The next whole answer; an answer without a length ends at the close."""
        parsed = _Parsed()
        parser = httptools.HttpResponseParser(parsed)
        data, self._early = self._early, b""
        while True:
            if data:
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade as switched:
                    # 101: what follows the head is the new protocol's, not ours to parse.
                    self._early = data[switched.args[0] :]
                    return Answer(parser.get_status_code(), parsed.headers)
                if parsed.done:
                    return Answer(parser.get_status_code(), parsed.headers, bytes(parsed.body))
            data = await asyncio.wait_for(self._reader.read(1 << 16), timeout_s)
            if not data:  # closed: a body delimited by the close is complete now
                if parsed.headers:
                    return Answer(parser.get_status_code(), parsed.headers, bytes(parsed.body))
                raise ConnectionResetError("closed before an answer")

    async def closed(self, timeout_s: float = 5.0) -> bool:
        """True once the server has closed the connection (nothing more was sent)."""
        if self._early:
            return False
        try:
            return await asyncio.wait_for(self._reader.read(1), timeout_s) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    @property
    def early(self) -> bytes:
        """Bytes received after the last answer (a 101's first frames, say)."""
        return self._early

    def take_early(self, count: int) -> bytes:
        taken, self._early = self._early[:count], self._early[count:]
        return taken
