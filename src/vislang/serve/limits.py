"""What one request may cost the server: the options that bound it, and the request-body limit.

The body limit is a plain ASGI middleware rather than a framework option so that it behaves the
same on every FastAPI / Starlette version the ``search`` extra allows: a declared
``Content-Length`` over the limit is refused before a byte of the body is read, and a body sent
without one (chunked) is counted as it arrives and refused as soon as it passes the limit, so an
oversized upload is never read whole, buffered or spooled to disk.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIB = 1024 * 1024
FORM_OVERHEAD = 64 * 1024  # multipart boundaries, headers and the small text fields beside the file


@dataclass(frozen=True)
class ServeOptions:
    """Bounds on a request: the upload's bytes and pixels, results per query, class names per
    labelling, characters per query or class name. ``model`` is what ``/api/info`` names."""

    max_upload_bytes: int = 10 * MIB
    max_pixels: int = 25_000_000
    max_k: int = 100
    max_classes: int = 100
    max_text_chars: int = 1000
    model: str | None = None

    @property
    def max_body_bytes(self) -> int:
        """The whole request body: the largest allowed file plus its form's overhead."""
        return self.max_upload_bytes + FORM_OVERHEAD


class BodyTooLarge(Exception):
    """Raised into the application when a streamed body passes the limit (it stops reading)."""


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 and ``{"error": ...}``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"the request body is over the {self.max_bytes / MIB:.1f} MiB limit"

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"error": self._message()}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]  # fmt: skip
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        seen, over, started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise BodyTooLarge(self._message())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # the application's answer to a body it could not finish: ours replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:  # the limit's own exception, or what the application made of it
            if not over:
                raise
        if over and not started:
            await self._refuse(send)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; a malformed header counts as none (then the body is counted)."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
