"""Schemathesis against the committed openapi.yaml on the running service (`cds serve`, CDS_AUTH=off,
demo on): every operation, a bounded number of generated cases, no 5xx and no response that breaks the
schema. Random bodies hardly ever form a PLEX order, so a second test sends the real demo hook requests
(every scenario, both hooks) and validates the card responses against the same schema.

Bounded: `CDS_SCHEMATHESIS_EXAMPLES` cases per operation and phase (default 25), fixed seed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error, response_schema_conformance

from cds import demo
from tests.security.procs import ROOT, Proc, service_process

SPEC = ROOT / "openapi.yaml"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def _operation_count() -> int:
    """Operations in the committed spec: every one of them must be exercised."""
    import yaml

    paths = yaml.safe_load(SPEC.read_text(encoding="utf-8"))["paths"]
    return sum(1 for item in paths.values() for method in item if method in _METHODS)


ST = Path(sys.executable).with_name("st")
EXAMPLES = int(os.environ.get("CDS_SCHEMATHESIS_EXAMPLES", "25"))
SERVICES = ("pml-plex-select", "pml-plex-sign")

# Path parameters mostly take real values so generated bodies reach the hook and feedback logic
# (a random service id is a 404 before the body is read); the rest of the time they are generated.
CONFIG = f"""
[dictionaries.services]
values = {list(SERVICES)!r}

[dictionaries.scenarios]
values = {demo.scenarios()!r}

[dictionaries.assets]
values = ["demo.js", "demo.css", "demo.html", "../../cds/app.py", "..%2f..%2fpyproject.toml", "%00"]

[[operations]]
include-path-regex = "^/cds-services/"
parameters = {{ "path.service_id" = {{ dictionary = "services", probability = 0.8 }} }}

[[operations]]
include-path = "/demo/request/{{name}}"
parameters = {{ "path.name" = {{ dictionary = "scenarios", probability = 0.7 }} }}

[[operations]]
include-path = "/demo/static/{{name}}"
parameters = {{ "path.name" = {{ dictionary = "assets", probability = 0.5 }} }}
"""
Hook = Literal["order-select", "order-sign"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    env = {"CDS_AUTH": "off", "CDS_DEMO": "1", "CDS_STATE_DIR": str(tmp / "state")}
    with service_process(env, tmp / "serve.log") as svc:
        yield svc


def test_schemathesis_finds_no_server_error_and_no_schema_break(service: Proc, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    cmd = [
        str(ST),
        "--config-file",
        str(config),
        "run",
        str(SPEC),
        "--url",
        service.base,
        "--checks",
        "not_a_server_error,response_schema_conformance",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        "20240604",
        "--workers",
        "4",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--continue-on-failure",
        "--max-failures",
        "50",
        "--no-color",
    ]
    run = subprocess.run(cmd, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    print(out[-3000:])
    assert run.returncode == 0, f"schemathesis failed (exit {run.returncode}):\n{out[-12000:]}"
    operations = _operation_count()
    assert f"{operations} selected" in out or f"Tested: {operations}" in out, (
        "not every operation was exercised"
    )
    server_log = service.log.read_text()
    assert "Traceback" not in server_log, server_log[-4000:]


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
def test_every_demo_hook_response_conforms_to_the_schema(service: Proc, hook: Hook) -> None:
    schema = schemathesis.openapi.from_path(str(SPEC))
    call = schema["/cds-services/{service_id}"]["POST"]
    service_id = SERVICES[0] if hook == "order-select" else SERVICES[1]
    now = datetime.now(UTC)
    kinds: dict[str, int] = {}
    with httpx.Client(base_url=service.base, timeout=15) as client:
        for name in demo.scenarios():
            body = demo.hook_request(demo.patient(name, now), hook)
            case = call.Case(
                path_parameters={"service_id": service_id}, body=body, media_type="application/json"
            )
            response = client.post(f"/cds-services/{service_id}", json=body)
            assert response.status_code == 200, (name, response.status_code, response.text[:500])
            # raises schemathesis.errors / FailureGroup on a non-conforming response
            ctx_checks = [not_a_server_error, response_schema_conformance]
            case.validate_response(response, checks=ctx_checks)
            kinds[name] = len(response.json()["cards"])
    assert any(kinds.values()), f"no demo scenario produced a card: {kinds}"
