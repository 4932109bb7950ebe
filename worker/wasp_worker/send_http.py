"""POST /api/accounts/{slot}/send and /schedule: a message into the durable queue.

Before anything is queued, in this order: the body (JSON, or a multipart form whose
`message` part is the JSON without media and whose `file` part is the bytes), what
the document cannot check (422), whether the backend sends this kind (501), the
file's size and type (413, 415), and, in the queue's transaction, the message a reply
quotes (404). A refused request leaves no row and no file.

The body limit of these two routes is their own (`SEND_JSON_MAX_BYTES`; a form's file
is read in chunks up to its kind's limit): every other route keeps MAX_BODY_BYTES.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import BodyPartReader, web
from pydantic import ValidationError

from wasp.contract import MAX_BODY_BYTES, SEND_JSON_MAX_BYTES
from wasp.messages import MediaMessage, Message, ScheduleRequest, SendRequest
from wasp.validation import problems
from wasp_worker import outgoing_media
from wasp_worker.errors import BadRequest, NotSupported, TooLarge, Unprocessable
from wasp_worker.http_support import read_body
from wasp_worker.outgoing_media import Upload
from wasp_worker.state import CONFIG, QUEUE, RUNNER, SESSIONS

# Stands in for the file while a form's message is validated (it is replaced by the bytes).
_UPLOADED = "https://upload.invalid/file"


async def send(request: web.Request) -> web.Response:
    """Accept a message into the durable queue: 202 once it (and its file) is on disk."""
    sessions, queue = request.app[SESSIONS], request.app[QUEUE]
    slot = sessions.own(request.match_info["slot"])
    model = ScheduleRequest if request.path.endswith("/schedule") else SendRequest
    data: bytes | None = None
    if request.content_type == "multipart/form-data":
        message, data = await _read_form(request, model)
    else:
        big = request.clone(client_max_size=SEND_JSON_MAX_BYTES)
        body: SendRequest | ScheduleRequest = (
            await read_body(big, ScheduleRequest)
            if model is ScheduleRequest
            else await read_body(big, SendRequest)
        )
        message = body.root
        if isinstance(message, MediaMessage) and message.media_base64 is not None:
            data = outgoing_media.decode(message.media_base64)
    problem = message.problem()
    if problem is not None:
        raise Unprocessable(f"{message.type}: {problem}")
    if message.type not in sessions.backend.sends:
        backend = request.app[CONFIG].backend
        raise NotSupported(f"send.{message.type}: not supported by the {backend} backend")
    upload: Upload | None = None
    if data is not None:
        assert isinstance(message, MediaMessage)
        upload = outgoing_media.check(message.type, data, message.mime)
        # The queue keeps the bytes as a file: the row needs no copy of them.
        message = message.model_copy(update={"media_base64": None, "media_url": None})
    row, created = await queue.enqueue(slot, message, upload)
    request.app[RUNNER].wake.set()
    return web.json_response({"ok": True, "message": row.public()}, status=202 if created else 200)


async def _read_form(
    request: web.Request, model: type[SendRequest] | type[ScheduleRequest]
) -> tuple[Message, bytes]:
    """A form's message and file. The form's shape is the document's (400 when it is not);
    its `message` part is any text to the document, so one that is no media message is 422."""
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError):
        raise BadRequest("multipart: not a multipart/form-data body") from None
    text: str | None = None
    data: bytes | None = None
    kind: str | None = None
    while True:
        try:
            part = await reader.next()
        except ValueError as error:
            raise BadRequest(f"multipart: {error}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader) or part.name not in ("message", "file"):
            raise BadRequest("multipart: the parts are `message` and `file`, nothing else")
        if (text if part.name == "message" else data) is not None:
            raise BadRequest(f"multipart: `{part.name}` given twice")
        if part.name == "message":
            raw = await _read_part(part, MAX_BODY_BYTES, "the message part")
            text = raw.decode("utf-8", errors="replace")
            kind = _kind_of(text)
        else:
            found = outgoing_media.LIMITS.get(kind or "")
            limit = found.max_bytes if found else outgoing_media.UPLOAD_MAX_BYTES
            data = await _read_part(part, limit, kind or "a file")
    if text is None or data is None:
        raise BadRequest("multipart: both parts are required, `message` and `file`")
    return _form_message(text, model), data


def _kind_of(text: str) -> str | None:
    """The media kind a message part names, if it is one (for the file's early limit)."""
    try:
        found = json.loads(text)
    except ValueError:
        return None
    kind = found.get("type") if isinstance(found, dict) else None
    return kind if kind in outgoing_media.LIMITS else None


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    """The part's bytes, refused (413) as soon as they pass `limit`."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(1 << 16):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"{what}: over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _form_message(text: str, model: type[SendRequest] | type[ScheduleRequest]) -> Message:
    try:
        found: Any = json.loads(text)
    except ValueError:
        raise Unprocessable("multipart: the message part is not JSON") from None
    if not isinstance(found, dict) or found.get("type") not in outgoing_media.LIMITS:
        kinds = ", ".join(outgoing_media.LIMITS)
        raise Unprocessable(f"multipart: the message part must be a media message ({kinds})")
    if "media_url" in found or "media_base64" in found:
        raise Unprocessable("multipart: the file part is the media; the message names none")
    try:
        message = model.model_validate({**found, "media_url": _UPLOADED}).root
    except ValidationError as error:
        raise Unprocessable(f"multipart: invalid message: {problems(error)}") from None
    return message
