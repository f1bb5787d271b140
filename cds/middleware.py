"""Request hygiene at the edge: CORS, body size, content type, JSON depth.

CONTRACT: install(app, settings) -> None, called once by cds.app.create_app (after its routes).

Layers, outermost first:
  1. CORS (Starlette CORSMiddleware). Origins from CDS_CORS_ORIGINS, e.g.
     `CDS_CORS_ORIGINS='["https://sandbox.cds-hooks.org"]'` for the CDS Hooks Sandbox, or the EHR's
     web origins in production. Preflights are answered here (before any JWT check) for
     `Authorization` and `Content-Type` and GET, POST, OPTIONS. Credentials are never allowed, so
     `["*"]` (a development convenience) cannot be combined with cookies.
  2. Hygiene (pure ASGI, no BaseHTTPMiddleware), every answer an OperationOutcome:
     * a Content-Length over CDS_MAX_BODY_BYTES, or a streamed body that grows past it -> 413;
     * POST/PUT/PATCH whose Content-Type is not application/json or application/*+json
       (parameters allowed; a charset must be utf-8) -> 415;
     * a JSON body nested deeper than MAX_JSON_DEPTH -> 400;
     * `X-Content-Type-Options: nosniff` on every response.
     The body is read here in full (bounded by the limit) and handed on unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.middleware.cors import CORSMiddleware

from cds.errors import BadHookRequest, BodyTooLarge, CdsError, UnsupportedMediaType, to_operation_outcome
from cds.settings import Settings

__all__ = ["MAX_JSON_DEPTH", "SANDBOX_ORIGIN", "HygieneMiddleware", "install", "json_depth_exceeds"]

SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
MAX_JSON_DEPTH = 64
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

_OPEN_CLOSE = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit` (brackets in strings ignored).

    C-speed bytes operations only: drop escaped backslashes and escaped quotes, keep the text outside
    strings (every other piece between quotes), keep only the brackets as "(" and ")", then peel the
    innermost pairs: a text nested d deep empties after exactly d peels.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(body.split(b'"')[0::2]).translate(_OPEN_CLOSE, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"()", b"")
    return bool(brackets)


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


class HygieneMiddleware:
    def __init__(self, app: Any, max_body_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}

        async def send_nosniff(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff")]
            await send(message)

        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _reject(
                    send_nosniff, BadHookRequest("invalid Content-Length", code="bad-content-length")
                )
                return
            if declared > self.max_body_bytes:
                await _reject(send_nosniff, BodyTooLarge())
                return
        if scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send_nosniff)
            return
        if not _json_content_type(headers.get(b"content-type", b"").decode("latin-1")):
            await _reject(send_nosniff, UnsupportedMediaType())
            return

        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _reject(send_nosniff, BodyTooLarge())
                return
            more = message.get("more_body", False)
        data = bytes(body)
        if json_depth_exceeds(data, self.max_depth):
            await _reject(
                send_nosniff,
                BadHookRequest(f"JSON nested deeper than {self.max_depth} levels", code="too-deep"),
            )
            return

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}
            message: dict[
                str, Any
            ] = await receive()  # after the body: wait for the disconnect, as the server would
            return message

        await self.app(scope, replay, send_nosniff)


async def _reject(send: Any, exc: CdsError) -> None:
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
    """Add hygiene, then CORS around it (Starlette: the middleware added last runs first)."""
    app.add_middleware(HygieneMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type"],
        allow_credentials=False,
        max_age=600,
    )
