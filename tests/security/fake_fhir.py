"""A misbehaving FHIR server, run as its own process: `python -m tests.security.fake_fhir PORT DATA.json`.

The first path segment picks the behaviour, so one process serves them all:
    /ok/fhir/...        the demo patient's resources (reads and the service's searches)
    /slow/fhir/...      answers after 30 s
    /drip/fhir/...      200 headers at once, then one byte a second
    /500, /503, /401    that status with an OperationOutcome
    /badjson/fhir/...   200 with a body that is not JSON
    /huge/fhir/...      200 with a 50 MB body (Content-Length; /hugechunked: chunked)
    /endless/fhir/...   a searchset whose next link (same host) never ends
    /html/fhir/...      200 text/html
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODES = ["slow", "drip", "500", "503", "401", "badjson", "huge", "hugechunked", "endless", "html"]


def make_app(resources: list[dict[str, Any]], patient_id: str) -> Starlette:
    from cds.demo import resolve_prefetch

    async def handle(request: Request) -> Response:
        mode = request.path_params["mode"]
        rest: str = request.path_params["rest"]
        query = request.url.query
        if mode == "ok":
            if not query and "/" in rest:
                rtype, rid = rest.split("/", 1)
                found = [r for r in resources if r.get("resourceType") == rtype and r.get("id") == rid]
                return (
                    JSONResponse(found[0])
                    if found
                    else JSONResponse({"resourceType": "OperationOutcome"}, 404)
                )
            try:
                bundle = resolve_prefetch({"q": f"{rest}?{query}"}, resources, patient_id)["q"]
            except ValueError:
                bundle = {"resourceType": "Bundle", "type": "searchset", "total": 0}
            return JSONResponse(bundle)
        if mode == "slow":
            await asyncio.sleep(30)
            return JSONResponse({"resourceType": "Bundle", "type": "searchset"})
        if mode == "drip":

            async def drip() -> AsyncIterator[bytes]:
                for byte in b'{"resourceType": "Bundle", "type": "searchset", "entry": []}':
                    yield bytes([byte])
                    await asyncio.sleep(1)

            return StreamingResponse(drip(), media_type="application/fhir+json")
        if mode in ("500", "503", "401"):
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "exception"}],
            }
            return JSONResponse(outcome, status_code=int(mode))
        if mode == "badjson":
            return Response(b'{"resourceType": "Bundle", "entry": [', media_type="application/fhir+json")
        if mode in ("huge", "hugechunked"):
            head = b'{"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "Basic", "x": "'
            tail = b'"}}]}'

            async def huge() -> AsyncIterator[bytes]:
                yield head
                chunk = b"x" * (1024 * 1024)
                for _ in range(50):
                    yield chunk
                yield tail

            length = (
                {"content-length": str(len(head) + 50 * 1024 * 1024 + len(tail))} if mode == "huge" else {}
            )
            return StreamingResponse(huge(), media_type="application/fhir+json", headers=length)
        if mode == "endless":
            page = int(request.query_params.get("page", "1"))
            base = f"{request.url.scheme}://{request.url.netloc}/endless/fhir/{rest}"
            return JSONResponse(
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "link": [{"relation": "next", "url": f"{base}?page={page + 1}"}],
                }
            )
        if mode == "html":
            return Response("<html><body>Login</body></html>", media_type="text/html")
        return JSONResponse({"resourceType": "OperationOutcome"}, status_code=404)

    return Starlette(routes=[Route("/{mode}/fhir/{rest:path}", handle)])


def main() -> None:
    import uvicorn

    port, data = int(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
    app = make_app(data["resources"], data["patient_id"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
