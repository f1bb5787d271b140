"""Baseline for the benchmark: the floor of the framework and server the service runs on.

A minimal FastAPI app that answers the same requests as the service with fixed bytes: every
`POST /cds-services/{id}` reads the whole body (as the service must) and returns a fixed JSON reply of
`BENCH_BASELINE_BYTES` bytes (bench/run.py sets it to the size of the real PLEX response), and
`GET /cds-services` returns a small fixed discovery document. It does no parsing and no work, so every
case of the service is reported as a ratio to it: what the service costs on top of FastAPI + uvicorn.

One more route is the floor of any service that reads the hook: `POST /cds-services/json-parse` also
parses the body with orjson (as the service does, the fastest JSON parser it has) and drops it. Its
ratio to the baseline bounds what the full PLEX hook can reach: it parses the same body and then does
all the work.

It is served the same way as the service (bench/serve.py calls `cds.cli.run_server`, as `cds serve`
does: same uvicorn settings and log configuration, same worker count and sockets), so the ratio
compares like with like.
"""

from __future__ import annotations

import json
import os

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response


def fixed_reply(size: int) -> bytes:
    """A CDS Hooks-shaped JSON reply of exactly `size` bytes (at least the size of the skeleton)."""
    card = {"summary": "baseline", "indicator": "info", "source": {"label": "baseline"}, "detail": ""}
    skeleton = json.dumps({"cards": [card]}, separators=(",", ":")).encode()
    pad = max(0, size - len(skeleton))
    card["detail"] = "x" * pad
    out = json.dumps({"cards": [card]}, separators=(",", ":")).encode()
    assert len(out) == max(size, len(skeleton)), (len(out), size)
    return out


def create_app(reply_bytes: int | None = None) -> FastAPI:
    size = reply_bytes if reply_bytes is not None else int(os.environ.get("BENCH_BASELINE_BYTES", "6000"))
    reply = fixed_reply(size)
    discovery = json.dumps(
        {"services": [{"hook": "order-select", "id": "baseline", "title": "baseline", "description": "x"}]}
    ).encode()
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/cds-services/{service_id}")
    async def hook(service_id: str, request: Request) -> Response:
        body = await request.body()
        if service_id == "json-parse":
            orjson.loads(body)
        return Response(reply, media_type="application/json")

    @app.get("/cds-services")
    async def services() -> Response:
        return Response(discovery, media_type="application/json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app


def app_factory() -> FastAPI:
    """uvicorn --factory entry point (each worker builds its own app)."""
    return create_app()
