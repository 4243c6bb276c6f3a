"""ASGI middleware in front of every route: bearer token, body-size limit, JSON-only bodies.

* Token: with a token set, every request but ``GET /health`` needs
  ``Authorization: Bearer TOKEN`` (compared with :func:`hmac.compare_digest`, in
  constant time), else ``401`` — ``/metrics``, ``/docs`` and ``/openapi.json`` included.
* Size: a body longer than ``max_body`` bytes is answered ``413`` — at once from its
  ``Content-Length``, or as soon as the bytes received pass the limit (chunked bodies;
  the body is read here, bounded, and handed to the app).
* Type: a request with a body must be ``Content-Type: application/json`` (``415``):
  a pickle, a form or any other body is refused before it is read. Nothing from a
  request is unpickled or evaluated; JSON is parsed and validated by the app.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

Scope = dict[str, Any]


async def send_json(send: Any, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Wraps an ASGI ``app`` (see the module doc)."""

    def __init__(self, app: Any, *, token: str | None, max_body: int) -> None:
        self.app, self.max_body = app, int(max_body)
        self._expected = None if token is None else f"Bearer {token}".encode()

    def _authorised(self, scope: Scope) -> bool:
        if self._expected is None or (scope["path"] == "/health" and scope["method"] in ("GET", "HEAD")):
            return True
        given = dict(scope["headers"]).get(b"authorization", b"")
        return hmac.compare_digest(given, self._expected)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._authorised(scope):
            await send_json(send, 401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")])
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, "Content-Length is not a number")
                return
            if declared > self.max_body:
                await send_json(send, 413, f"the body is {declared} bytes; the limit is {self.max_body}")
                return
        has_body = (length is not None and length != b"0") or b"transfer-encoding" in headers
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if has_body and media != b"application/json":
            shown = media.decode("latin-1") or "none"
            await send_json(send, 415, f"the body must be JSON (Content-Type: application/json), got {shown}")
            return

        body = bytearray()
        while has_body:  # read the whole body here (the app would buffer it too), bounded
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await send_json(send, 413, f"the body is over the limit of {self.max_body} bytes")
                return
            if not message.get("more_body", False):
                break
        try:
            bytes(body).decode("utf-8")  # JSON is UTF-8 text: a pickle or other binary is not
        except UnicodeDecodeError as exc:
            await send_json(send, 422, f"the body is not valid JSON (not UTF-8 text at byte {exc.start})")
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
