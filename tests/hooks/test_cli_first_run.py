"""A first run (issue 17): `make run` on another port, `GET /`, `cds demo --list/--detail`, a 401 with its
reason, and a bad setting told in one line (exit 2). Real processes, real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cds import demo
from tests.support.servers import free_port, serve_service, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update(extra)
    return env


def _cds(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cds", *args],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


def test_demo_list_and_help_name_every_demo_patient() -> None:
    listed = _cds("demo", "--list")
    assert listed.returncode == 0, listed.stderr
    helped = _cds("demo", "--help")
    for name in demo.scenarios():
        assert any(line.startswith(name + " ") for line in listed.stdout.splitlines()), name
        assert name in helped.stdout


def test_readme_lists_every_demo_patient() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in demo.scenarios():
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CDS_AUTH", "bogus"), ("CDS_JWT_ISSUERS", "{not json"), ("CDS_PORT", "abc"), ("CDS_WORKERS", "0")],
)
@pytest.mark.parametrize("command", [("serve",), ("demo", "--patient", "high-level")])
def test_a_bad_setting_is_one_line_naming_it_exit_2(
    variable: str, value: str, command: tuple[str, ...]
) -> None:
    r = _cds(*command, env=_env(**{variable: value}))
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"cds: bad setting {variable}")
    assert value not in lines[0] or value == "0"  # the value is not echoed (it may be a secret)


def test_demo_says_why_a_401(tmp_path: Path) -> None:
    from cds.settings import IssuerConfig, Settings

    settings = Settings(
        _env_file=None,
        auth="jwt",
        jwt_issuers={"https://ehr.example": IssuerConfig(jwks_url="https://ehr.example/jwks")},
        state_dir=tmp_path,
    )
    with serve_service(settings) as url:
        r = _cds("demo", "--url", url)
    assert r.returncode == 1
    assert "HTTP 401: the service requires a signed JWT (CDS_AUTH=jwt)" in r.stderr
    assert "CDS_AUTH=off" in r.stderr


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`make run` as a user runs it, on a port of our choosing (CDS_PORT) and without CDS_PUBLIC_BASE_URL."""
    if not (ROOT / ".venv" / "bin" / "cds").exists():
        pytest.skip("make run needs .venv (make venv)")
    port = free_port()
    env = _env(CDS_PORT=str(port), CDS_STATE_DIR=str(tmp_path_factory.mktemp("make-run")))
    proc = subprocess.Popen(
        ["make", "-s", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: make, cds serve and its workers end together
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, 90, f"make run on {port}")
        yield url, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def test_make_run_honours_cds_port_and_links_follow_it(make_run: tuple[str, int]) -> None:
    url, port = make_run
    body = httpx.get(f"{url}/demo/request/high-level", timeout=10).json()
    cards = httpx.post(f"{url}/cds-services/pml-plex-select", json=body, timeout=10).json()["cards"]
    own = [
        link["url"]
        for c in cards
        for link in c.get("links", [])
        if "/charts/" in link["url"] or "/cards/" in link["url"]
    ]
    assert own and all(u.startswith(f"http://127.0.0.1:{port}/") for u in own), own
    assert httpx.get(own[0], timeout=10).status_code == 200


def test_root_points_to_the_demo_when_it_is_on(make_run: tuple[str, int]) -> None:
    url, _ = make_run
    r = httpx.get(url + "/", timeout=10)
    assert r.status_code == 307 and r.headers["location"] == "/demo"
    assert httpx.get(url + "/", timeout=10, follow_redirects=True).text.count("DemoEHR") >= 1


def test_demo_detail_prints_detail_and_links_from_the_port_in_cds_port(make_run: tuple[str, int]) -> None:
    _, port = make_run
    r = _cds("demo", "--patient", "active-fingolimod", "--detail", env=_env(CDS_PORT=str(port)))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "[critical] Active fingolimod" in out.splitlines()[1]  # the critical card first
    assert "**Stop fingolimod now:**" in out and "suggestion (recommended): Stop fingolimod" in out
    assert "link: Full details" in out and f"http://127.0.0.1:{port}/cards/" in out
