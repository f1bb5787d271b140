"""Request hygiene at the edge: CORS, body size, content type, JSON depth, in one pure-ASGI layer.

CONTRACT: install(app, settings) -> None, called once by cds.app.create_app (after its routes).

One layer (`EdgeMiddleware`, outermost of the app's own middleware) does, in this order:
  1. CORS preflights (OPTIONS with Origin and Access-Control-Request-Method) are answered here, before
     any JWT check, by Starlette's CORSMiddleware logic: origins from CDS_CORS_ORIGINS, e.g.
     `CDS_CORS_ORIGINS='["https://sandbox.cds-hooks.org"]'` for the CDS Hooks Sandbox, or the EHR's
     web origins in production; `Authorization` and `Content-Type`; GET, POST, OPTIONS. Credentials
     are never allowed, so `["*"]` (a development convenience) cannot be combined with cookies.
  2. Hygiene, every answer an OperationOutcome:
     * a Content-Length over CDS_MAX_BODY_BYTES, or a streamed body that grows past it -> 413;
     * POST/PUT/PATCH whose Content-Type is not application/json or application/*+json
       (parameters allowed; a charset must be utf-8) -> 415;
     * a JSON body nested deeper than MAX_JSON_DEPTH -> 400;
     The body is read here in full (bounded by the limit) and handed on unchanged.
  3. Every response (rejections included) gets `X-Content-Type-Options: nosniff`, `Vary: Origin` and,
     for an allowed Origin, `Access-Control-Allow-Origin`, as Starlette's CORSMiddleware sets them.
One layer rather than Starlette's CORSMiddleware around a hygiene layer: each ASGI layer costs a
coroutine frame, a send wrapper and a header parse per request (bench/components.py).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.middleware.cors import CORSMiddleware

from cds.errors import BadHookRequest, BodyTooLarge, CdsError, UnsupportedMediaType, to_operation_outcome
from cds.log import log_refused
from cds.settings import Settings

__all__ = ["MAX_JSON_DEPTH", "SANDBOX_ORIGIN", "EdgeMiddleware", "install", "json_depth_exceeds"]

SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
MAX_JSON_DEPTH = 64
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_NOSNIFF = (b"x-content-type-options", b"nosniff")

_OPEN_CLOSE = bytes.maketrans(b"[]{}", b"()()")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit` (brackets in strings ignored).

    C-speed bytes operations only: drop escaped backslashes and escaped quotes, keep only quotes and
    brackets (as "(" and ")"), drop the text inside strings, then peel the innermost pairs: each peel
    lowers the depth by one, and a text with n openers left is at most n deep.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = body.translate(_OPEN_CLOSE, _NOT_STRUCTURE)
    if marks.count(b"(") <= limit:
        return False
    # A bracket is inside a string iff an odd number of quotes precede it, so dropping two adjacent
    # quotes changes no bracket's side. One pass leaves no two quotes adjacent (runs shrink to 0 or 1)
    # and empties every string without brackets (nearly all): far cheaper than splitting on them all.
    marks = marks.replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[0::2])
    for peeled in range(limit + 1):
        if marks.count(b"(") <= limit - peeled:
            return False
        if b"()" not in marks:  # nothing left to peel: unclosed openers
            return True
        marks = marks.replace(b"()", b"")
    return True


def _json_content_type(value: str | None) -> bool:
    if not value:
        return False
    media, *params = (p.strip() for p in value.split(";"))
    kind, _, subtype = media.lower().partition("/")
    if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
        return False
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset" and val.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


class EdgeMiddleware:
    def __init__(
        self,
        app: Any,
        max_body_bytes: int,
        cors_origins: list[str] | tuple[str, ...] = (),
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        # Starlette's own preflight answer and origin policy; only its request path is bypassed.
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            allow_credentials=False,
            max_age=600,
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        method = scope["method"]
        raw_origin = headers.get(b"origin")
        if raw_origin is not None and method == "OPTIONS" and b"access-control-request-method" in headers:
            await self.cors(scope, receive, _with_nosniff(send))
            return
        send = self._edge_send(send, None if raw_origin is None else raw_origin.decode("latin-1"))

        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _reject(
                    scope, send, BadHookRequest("invalid Content-Length", code="bad-content-length")
                )
                return
            if declared > self.max_body_bytes:
                await _reject(scope, send, BodyTooLarge())
                return
        if method not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if not _json_content_type(headers.get(b"content-type", b"").decode("latin-1")):
            await _reject(scope, send, UnsupportedMediaType())
            return

        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reject(scope, send, BodyTooLarge())
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if json_depth_exceeds(data, self.max_depth):
            await _reject(
                scope,
                send,
                BadHookRequest(f"JSON nested deeper than {self.max_depth} levels", code="too-deep"),
            )
            return

        direct = getattr(self.app, "serve_body", None)  # cds.app.HookFastPath: hook calls, no replay
        if direct is not None and await direct(scope, data, receive, send):
            return

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}
            message: dict[str, Any] = await receive()  # after the body: wait for the disconnect
            return message

        await self.app(scope, replay, send)

    def _edge_send(self, send: Any, origin: str | None) -> Any:
        """nosniff and the CORS response headers of Starlette's CORSMiddleware.simple_response.

        The wrapper carries `edge_headers(headers)`, the same rewrite of a start message's headers,
        for a layer that sends straight to the server (`serve_body`)."""
        extra = [_NOSNIFF]
        if origin is not None and self.cors.is_allowed_origin(origin):
            allowed = "*" if self.cors.allow_all_origins else origin
            extra.append((b"access-control-allow-origin", allowed.encode("latin-1")))

        def edge_headers(headers: Any) -> list[tuple[bytes, bytes]]:
            kept = []
            vary = []
            for name, value in headers or ():
                if name.lower() == b"vary":
                    vary.append(value)
                elif not (len(extra) > 1 and name.lower() == b"access-control-allow-origin"):
                    kept.append((name, value))
            return [*kept, *extra, (b"vary", b", ".join([*vary, b"Origin"]))]

        async def edge_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = edge_headers(message.get("headers"))
            await send(message)

        edge_send.edge_headers = edge_headers  # type: ignore[attr-defined]
        edge_send.server_send = send  # type: ignore[attr-defined]
        return edge_send


def _with_nosniff(send: Any) -> Any:
    async def nosniff_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*(message.get("headers") or ()), _NOSNIFF]
        await send(message)

    return nosniff_send


async def _reject(scope: dict[str, Any], send: Any, exc: CdsError) -> None:
    log_refused(scope["method"], scope.get("path", ""), exc.status_code, exc.code)
    payload = json.dumps(to_operation_outcome(exc)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def install(app: Any, settings: Settings) -> None:
    """Add the edge layer (Starlette: the middleware added last runs first, so add it last)."""
    app.add_middleware(
        EdgeMiddleware, max_body_bytes=settings.max_body_bytes, cors_origins=list(settings.cors_origins)
    )
