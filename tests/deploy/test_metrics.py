"""cds/metrics.py: counters move, the text format parses, several processes add up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from cds import metrics
from tests.support.servers import serve_asgi


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float:
    return _samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_helpers_move_the_counters() -> None:
    before = metrics.metrics_response()[0].decode()
    metrics.observe_request("svc-a", "cards", 0.012)
    metrics.observe_request("svc-a", "data-unavailable", 0.3)
    metrics.observe_fhir_fetch("Observation", 0.05)
    metrics.observe_fhir_fetch("Observation", 1.0, error="timeout")
    metrics.count_prefetch("svc-a", hits=4, misses=1)
    metrics.count_cache("fhir", hit=True)
    metrics.count_cache("fhir", hit=False)
    metrics.count_cards(
        "svc-a",
        [
            {"indicator": "warning", "extension": {"pml-plex": {"kind": "plex-estimate"}}},
            {"indicator": "info", "summary": "no extension"},
        ],
    )
    metrics.count_feedback("svc-a", "overridden", 2)
    body, content_type = metrics.metrics_response()
    after = body.decode()
    assert content_type.startswith("text/plain")

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("cds_requests_total", service="svc-a", outcome="cards") == 1
    assert delta("cds_request_duration_seconds_count", service="svc-a", outcome="data-unavailable") == 1
    assert delta("cds_request_duration_seconds_bucket", service="svc-a", outcome="cards", le="0.025") == 1
    assert delta("cds_fhir_fetch_duration_seconds_count", resource_type="Observation") == 2
    assert delta("cds_fhir_fetch_errors_total", resource_type="Observation", reason="timeout") == 1
    assert delta("cds_prefetch_keys_total", service="svc-a", result="hit") == 4
    assert delta("cds_prefetch_keys_total", service="svc-a", result="miss") == 1
    assert delta("cds_cache_lookups_total", cache="fhir", result="hit") == 1
    assert delta("cds_cards_total", service="svc-a", kind="plex-estimate", indicator="warning") == 1
    assert delta("cds_cards_total", service="svc-a", kind="other", indicator="info") == 1
    assert delta("cds_feedback_total", service="svc-a", outcome="overridden") == 2


def test_metrics_route_over_http() -> None:
    app = Starlette()
    app.add_route("/metrics", metrics.metrics_endpoint, methods=["GET"])
    metrics.observe_request("svc-http", "cards", 0.01)
    with serve_asgi(app) as url:
        resp = httpx.get(f"{url}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    assert _value(resp.text, "cds_requests_total", service="svc-http", outcome="cards") >= 1


_WORKER = """
import sys
from cds import metrics
for _ in range(int(sys.argv[1])):
    metrics.observe_request("svc-mp", "cards", 0.01)
metrics.count_feedback("svc-mp", "accepted", 1)
"""

_PREPARE = (
    "import sys; from cds import metrics; print(metrics.prepare_multiprocess(int(sys.argv[1]), sys.argv[2]))"
)
_READER = "import sys; from cds import metrics; sys.stdout.write(metrics.metrics_response()[0].decode())"


def test_multiprocess_mode_sums_every_worker(tmp_path: Path) -> None:
    mp_dir = tmp_path / "prom"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop(metrics.MULTIPROC_ENV, None)
    prepared = subprocess.run(
        [sys.executable, "-c", _PREPARE, "3", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert prepared == str(tmp_path / "prometheus")
    env[metrics.MULTIPROC_ENV] = str(mp_dir)
    mp_dir.mkdir()
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(n)], env=env) for n in (3, 5)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    text = subprocess.run(
        [sys.executable, "-c", _READER], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert _value(text, "cds_requests_total", service="svc-mp", outcome="cards") == 8
    assert _value(text, "cds_request_duration_seconds_count", service="svc-mp", outcome="cards") == 8
    assert _value(text, "cds_feedback_total", service="svc-mp", outcome="accepted") == 2


def test_prepare_multiprocess_is_a_no_op_for_one_worker(tmp_path: Path, monkeypatch: object) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)  # type: ignore[attr-defined]
    assert metrics.prepare_multiprocess(1, tmp_path) is None
    assert not (tmp_path / "prometheus").exists()


def test_importing_the_metrics_creates_no_file_before_the_directory_exists(tmp_path: Path) -> None:
    # `cds serve` imports cds.metrics, then prepare_multiprocess makes the directory: a metric
    # created at import (one without labels) would open its file first and the service not start
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env[metrics.MULTIPROC_ENV] = str(tmp_path / "not-yet")
    done = subprocess.run(
        [sys.executable, "-c", _PREPARE, "2", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "not-yet")
