"""What the master refuses before it looks at who asks or where a request goes.

aiohttp (llhttp) frames every request and already refuses what HTTP/1.1 calls
invalid: a chunked coding that is not last, Transfer-Encoding beside
Content-Length, duplicate lengths, obs-fold, bare LF, bad chunk sizes. Two
things it lets through would reach a worker as a different request than the
client meant, so they stop here, with the connection closed after the answer:

- a transfer coding other than `chunked` (`gzip, chunked`): the proxy removes
  Transfer-Encoding, so the worker would take still-coded bytes for the body;
- Transfer-Encoding on HTTP/1.0, whose framing HTTP/1.1 says to treat as
  faulty and to close after.
"""

from __future__ import annotations

from aiohttp import HttpVersion11, hdrs, web

from wasp_master.errors import BadFraming


def check_framing(request: web.Request) -> None:
    coding = request.headers.get(hdrs.TRANSFER_ENCODING)
    if coding is None:
        return
    if request.version < HttpVersion11:
        raise BadFraming("Transfer-Encoding is not allowed on HTTP/1.0")
    if coding.strip(" \t").lower() != "chunked":
        raise BadFraming(f"unsupported Transfer-Encoding {coding[:64]!r}: only chunked")
