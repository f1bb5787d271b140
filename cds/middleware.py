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
     The body is read here in full (bounded by the limit) and handed on unchanged, as one
     `http.request` message of the `receive` the app behind is called with.
  3. Every response (rejections included) gets `X-Content-Type-Options: nosniff`, `Vary: Origin` and,
     for an allowed Origin, `Access-Control-Allow-Origin`, as Starlette's CORSMiddleware sets them.
One layer rather than Starlette's CORSMiddleware around a hygiene layer: each ASGI layer costs a
coroutine frame, a send wrapper and a header parse per request (bench/components.py).
"""

from __future__ import annotations

import json

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
    """The edge layer as a plain ASGI middleware: answers preflights, refuses bad bodies, adds headers."""

    def __init__(
        self,
        app: ASGIApp,
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is not None and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self.cors(scope, receive, _with_nosniff(send))
            return
        send = self._edge_send(send, origin)
        try:
            body = await self._checked_body(scope["method"], headers, receive)
        except CdsError as exc:
            await _reject(scope, send, exc)
            return
        except ClientDisconnect:  # gone before its body was in: nobody to answer
            return
        await self.app(scope, receive if body is None else _replay(body, receive), send)

    async def _checked_body(self, method: str, headers: Headers, receive: Receive) -> bytes | None:
        """The whole body of a POST/PUT/PATCH once it passed every check; None for other methods.

        Raises the CdsError that refuses the request (400, 413, 415)."""
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise BadHookRequest("invalid Content-Length", code="bad-content-length") from None
            if declared > self.max_body_bytes:
                raise BodyTooLarge()
        if method not in _BODY_METHODS:
            return None
        if not _json_content_type(headers.get("content-type")):
            raise UnsupportedMediaType()
        body = await self._read_body(receive)
        if json_depth_exceeds(body, self.max_depth):
            raise BadHookRequest(f"JSON nested deeper than {self.max_depth} levels", code="too-deep")
        return body

    async def _read_body(self, receive: Receive) -> bytes:
        """Every `http.request` message's body, stopping at the size limit (a streamed body has no length)."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge()
            chunks.append(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _edge_send(self, send: Send, origin: str | None) -> Send:
        """`send` that adds nosniff and the CORS response headers of Starlette's CORSMiddleware.simple_response."""
        extra = [_NOSNIFF]
        if origin is not None and self.cors.is_allowed_origin(origin):
            allowed = "*" if self.cors.allow_all_origins else origin
            extra.append((b"access-control-allow-origin", allowed.encode("latin-1")))
        replaces_origin = len(extra) > 1

        async def edge_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = []
                vary = []
                for name, value in message.get("headers") or ():
                    if name.lower() == b"vary":
                        vary.append(value)
                    elif not (replaces_origin and name.lower() == b"access-control-allow-origin"):
                        kept.append((name, value))
                message["headers"] = [*kept, *extra, (b"vary", b", ".join([*vary, b"Origin"]))]
            await send(message)

        return edge_send


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app behind: the body read here as one message, then the server's own messages
    (the disconnect, when it comes)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _with_nosniff(send: Send) -> Send:
    async def nosniff_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*(message.get("headers") or ()), _NOSNIFF]
        await send(message)

    return nosniff_send


async def _reject(scope: Scope, send: Send, exc: CdsError) -> None:
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


def install(app: Starlette, settings: Settings) -> None:
    """Add the edge layer (Starlette: the middleware added last runs first, so add it last)."""
    app.add_middleware(
        EdgeMiddleware, max_body_bytes=settings.max_body_bytes, cors_origins=list(settings.cors_origins)
    )
