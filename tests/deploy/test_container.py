"""Run what we ship: the image built from deploy/Dockerfile, and deploy/k8s under `podman kube play`.

No image registry is needed: scripts/podman-setup.sh installs podman and builds a Debian bookworm
base (mmdebstrap) that stands in for python:3.11-slim-bookworm. The image then runs as shipped:
read-only root file system, its own non-root user, a volume on the state directory, JWT auth
against a JWKS server on loopback, PostgreSQL and Redis of this machine (host network). Shown here:

* /healthz and discovery answer; a PLEX order-select with prefetch returns the three cards;
* feedback posted to the container lands in PostgreSQL;
* SIGTERM stops it cleanly (exit 0, not killed) within the Deployment's grace period;
* the ConfigMap and Deployment of deploy/k8s run under `podman kube play` with the image just built
  (the Secret made with `podman secret create`) and answer the same hook call through JWT.

Everything the tests start is removed afterwards, on failure too. When podman cannot be installed
(not root, no package mirror) the module is skipped, and says so in the summary.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from cds import demo
from tests.deploy import podman
from tests.deploy.stores import fresh_database, redis_key_prefix
from tests.support.jwks import JwksServer, SigningKey
from tests.support.servers import free_port

IMAGE_TAG = "localhost/cds-pml-plex:test"  # the latest image the tests built (its layers are the cache)
ISS = "https://ehr.container-test.example.org"
SELECT = "/cds-services/pml-plex-select"
THREE_CARDS = ["plex-estimate", "iris", "dmt"]
CONFIG = podman.manifest("configmap.yaml")["data"]
GRACE_S = podman.manifest("deployment.yaml")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
STATE_DIR = CONFIG["CDS_STATE_DIR"]


def _say(config: pytest.Config, line: str, **markup: bool) -> None:
    """A line on the terminal even under -q and output capture (build time, image size, skips)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(line, **markup)


@pytest.fixture(scope="module")
def pm(pytestconfig: pytest.Config) -> podman.Podman:
    started = time.monotonic()
    got = podman.set_up()
    if isinstance(got, podman.PodmanMissing):
        reason = (
            f"podman cannot be installed here ({got.reason}): deploy/Dockerfile and deploy/k8s were NOT run"
        )
        _say(pytestconfig, f"\n!!! {reason}", red=True, bold=True)
        pytest.skip(reason)
    _say(
        pytestconfig,
        f"\ncontainer: podman and base {got.base_image} ready in {time.monotonic() - started:.1f} s",
    )
    return got


@dataclass(frozen=True)
class Image:
    id: str
    size_bytes: int
    user: str


@pytest.fixture(scope="module")
def image(pm: podman.Podman, pytestconfig: pytest.Config) -> Image:
    started = time.monotonic()
    image_id = pm.build(IMAGE_TAG)
    built = Image(
        id=image_id,
        size_bytes=int(pm.inspect("image", image_id, "{{.Size}}")),
        user=pm.inspect("image", image_id, "{{.Config.User}}"),
    )
    _say(
        pytestconfig,
        f"container: image {IMAGE_TAG} ({image_id[:12]}) built in {time.monotonic() - started:.1f} s, "
        f"{built.size_bytes / 1e6:.0f} MB",
    )
    return built


@dataclass
class Ehr:
    """The EHR's side: a signing key whose JWKS the service fetches over loopback."""

    key: SigningKey
    jku: str

    def issuers(self) -> str:
        fhir = json.loads(CONFIG["CDS_FHIR_SERVER_ALLOWLIST"])
        return json.dumps({ISS: {"jwks_url": self.jku, "allowed_jku": [self.jku], "fhir_servers": fhir}})

    def bearer(self, public_base: str, path: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key.token(iss=ISS, aud=public_base + path, jku=self.jku)}"}


@pytest.fixture(scope="module")
def ehr() -> Iterator[Ehr]:
    keys = JwksServer()
    key = keys.add_key("ehr", "ES384")
    with keys.serve():
        yield Ehr(key, keys.url("ehr"))


def _wait_ready(
    base: str, path: str, alive: Callable[[], bool], logs: Callable[[], str], timeout_s: float = 120
) -> None:
    """Poll `base + path` until it answers 200; fail early with the logs when the container died."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            pytest.fail(f"the container exited before {path} answered:\n{logs()}")
        try:
            r = httpx.get(base + path, timeout=2)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    pytest.fail(f"{base + path} did not answer 200 within {timeout_s} s (last: {last}):\n{logs()}")


def _plex_select(base: str, public_base: str, ehr: Ehr) -> httpx.Response:
    body = demo.hook_request(demo.patient("high-level", datetime.now(UTC)), "order-select")
    return httpx.post(base + SELECT, json=body, headers=ehr.bearer(public_base, SELECT), timeout=30)


def _card_kinds(response: httpx.Response) -> list[str]:
    return [c["extension"]["pml-plex"]["kind"] for c in response.json()["cards"]]


# ---------------------------------------------------------------- the image, run as a container


@dataclass
class Container:
    name: str
    base: str
    public_base: str
    dsn: str
    pm: podman.Podman

    def running(self) -> bool:
        return self.pm.inspect("container", self.name, "{{.State.Running}}") == "true"

    def logs(self) -> str:
        return self.pm.logs(self.name)


@pytest.fixture(scope="module")
def container(
    pm: podman.Podman, image: Image, ehr: Ehr, pg_admin_dsn: str, redis_url: str
) -> Iterator[Container]:
    run_id = uuid.uuid4().hex[:10]
    name, volume, port = f"cds-test-{run_id}", f"cds-test-{run_id}-state", free_port()
    public_base = "https://cds.container-test.example.org"
    with contextlib.ExitStack() as cleanup:
        dsn = cleanup.enter_context(fresh_database(pg_admin_dsn, "cds_container"))
        prefix = cleanup.enter_context(redis_key_prefix(redis_url, "cds-container"))
        cleanup.callback(pm, "volume", "rm", "--force", volume, check=False)
        cleanup.callback(pm, "rm", "--force", "--time=0", name, check=False)
        env = {
            "CDS_HOST": "127.0.0.1",  # host network: listen on loopback only
            "CDS_PORT": str(port),
            "CDS_AUTH": "jwt",
            "CDS_PUBLIC_BASE_URL": public_base,
            "CDS_JWT_ISSUERS": ehr.issuers(),
            "CDS_FHIR_SERVER_ALLOWLIST": CONFIG["CDS_FHIR_SERVER_ALLOWLIST"],
            "CDS_DATABASE_URL": dsn,
            "CDS_REDIS_URL": redis_url,
            "CDS_REDIS_KEY_PREFIX": prefix,
        }
        pm("volume", "create", volume)
        pm(
            "run",
            "--detach",
            "--name",
            name,
            "--network=host",
            "--read-only",  # /tmp, /var/tmp and /run become tmpfs (podman's --read-only-tmpfs)
            "--volume",
            f"{volume}:{STATE_DIR}",
            *(f"--env={k}={v}" for k, v in env.items()),
            image.id,  # no --user: the image's own
        )
        box = Container(name, f"http://127.0.0.1:{port}", public_base, dsn, pm)
        _wait_ready(box.base, "/readyz", box.running, box.logs)
        yield box


def test_the_image_runs_read_only_as_its_non_root_user(container: Container, image: Image) -> None:
    pm = container.pm
    assert image.user.split(":")[0] not in ("", "0", "root")
    assert pm.inspect("container", container.name, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    status = pm("exec", container.name, "cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [image.user.split(":")[0]] * 4, "the service (pid 1) runs as the image's user"
    refused = pm("exec", container.name, "touch", "/opt/cds/written", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    wrote = pm("exec", container.name, "touch", f"{STATE_DIR}/written", check=False)
    assert wrote.returncode == 0, wrote.stderr


def test_healthz_and_discovery(container: Container, ehr: Ehr) -> None:
    health = httpx.get(container.base + "/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    discovery = "/cds-services"
    headers = ehr.bearer(container.public_base, discovery)  # JWT is on, as shipped
    services = httpx.get(container.base + discovery, headers=headers, timeout=10)
    assert services.status_code == 200
    by_id = {s["id"]: s for s in services.json()["services"]}
    assert by_id["pml-plex-select"]["hook"] == "order-select"
    assert by_id["pml-plex-select"]["prefetch"], "discovery lists the prefetch templates"


def test_plex_order_select_with_prefetch_returns_the_three_cards(container: Container, ehr: Ehr) -> None:
    r = _plex_select(container.base, container.public_base, ehr)
    assert r.status_code == 200, r.text[:500]
    assert _card_kinds(r) == THREE_CARDS
    unsigned = demo.hook_request(demo.patient("high-level", datetime.now(UTC)), "order-select")
    assert httpx.post(container.base + SELECT, json=unsigned, timeout=10).status_code == 401


def test_feedback_is_stored_in_postgres(container: Container, ehr: Ehr) -> None:
    card = str(uuid.uuid4())
    path = SELECT + "/feedback"
    feedback = {"card": card, "outcome": "accepted", "outcomeTimestamp": "2026-02-01T09:30:00Z",
                "acceptedSuggestions": [{"id": "s-1"}]}  # fmt: skip
    r = httpx.post(
        container.base + path,
        json={"feedback": [feedback]},
        headers=ehr.bearer(container.public_base, path),
        timeout=10,
    )
    assert r.status_code == 200, r.text[:500]
    with psycopg.connect(container.dsn) as conn:
        rows = conn.execute(
            "SELECT service_id, outcome, body->'acceptedSuggestions' FROM cds_feedback WHERE card = %s",
            (card,),
        ).fetchall()
    assert rows == [("pml-plex-select", "accepted", [{"id": "s-1"}])]


def test_sigterm_stops_it_within_the_grace_period(container: Container, image: Image) -> None:
    """Last in this module: it stops the container the tests above use."""
    pm = container.pm
    assert pm.inspect("image", image.id, "{{.Config.StopSignal}}") == "SIGTERM"
    started = time.monotonic()
    pm("stop", f"--time={GRACE_S}", container.name, timeout=GRACE_S + 30)
    took = time.monotonic() - started
    exit_code = int(pm.inspect("container", container.name, "{{.State.ExitCode}}"))
    logs = container.logs()
    assert exit_code == 0, f"exit {exit_code} (137: killed after the grace period):\n{logs}"
    assert took < GRACE_S
    assert "Application shutdown complete" in logs


# ---------------------------------------------------------------- deploy/k8s under podman kube play


@dataclass
class Kube:
    base: str
    public_base: str
    containers: list[str]  # ids of the service containers, one per pod (infra containers left out)
    pm: podman.Podman

    def running(self) -> bool:
        return all(self.pm.inspect("container", c, "{{.State.Running}}") == "true" for c in self.containers)

    def logs(self) -> str:
        return "\n".join(self.pm.logs(c) for c in self.containers)


@pytest.fixture(scope="module")
def kube(
    pm: podman.Podman,
    image: Image,
    ehr: Ehr,
    pg_admin_dsn: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Kube]:
    run_id = uuid.uuid4().hex[:10]
    port = free_port()
    tmp = tmp_path_factory.mktemp("kube")
    with contextlib.ExitStack() as cleanup:
        dsn = cleanup.enter_context(fresh_database(pg_admin_dsn, "cds_kube"))
        prefix = cleanup.enter_context(redis_key_prefix(redis_url, "cds-kube"))
        docs = podman.kube_play_copy(
            run_id=run_id,
            image=image.id,
            port=port,
            config={"CDS_HOST": "127.0.0.1", "CDS_REDIS_KEY_PREFIX": prefix},
        )
        played = tmp / "play.yaml"
        played.write_text(yaml.safe_dump_all(docs))
        # podman 4.3 reads a secret as a flat JSON map of key to base64 value
        values = {"CDS_DATABASE_URL": dsn, "CDS_REDIS_URL": redis_url, "CDS_JWT_ISSUERS": ehr.issuers()}
        secret_file = tmp / "secret.json"
        secret_file.write_text(
            json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in values.items()})
        )
        for secret in podman.secret_names(run_id):
            cleanup.callback(pm, "secret", "rm", secret, check=False)
            pm("secret", "create", secret, str(secret_file))
        cleanup.callback(_kube_down, pm, played)
        out = pm("kube", "play", "--network=host", str(played), timeout=180).stdout
        box = Kube(f"http://127.0.0.1:{port}", CONFIG["CDS_PUBLIC_BASE_URL"], _played_containers(out), pm)
        _wait_ready(box.base, "/readyz", box.running, box.logs)
        yield box


def _played_containers(kube_play_output: str) -> list[str]:
    """The container ids `podman kube play` lists (under "Container:"; pods are listed under "Pod:")."""
    ids: list[str] = []
    heading = ""
    for line in map(str.strip, kube_play_output.splitlines()):
        if line.endswith(":"):
            heading = line
        elif line and heading == "Container:":
            ids.append(line)
    return ids


def _kube_down(pm: podman.Podman, played: Path) -> None:
    pm("kube", "down", str(played), check=False, timeout=120)
    # the emptyDir volumes, when kube down left them (a pod that failed to start)
    names = {v["name"] for d in yaml.safe_load_all(played.read_text()) if d["kind"] == "Deployment"
             for v in d["spec"]["template"]["spec"]["volumes"]}  # fmt: skip
    for name in names:
        pm("volume", "rm", "--force", name, check=False)


def test_kube_play_runs_the_deployment_as_written(kube: Kube, image: Image) -> None:
    pm = kube.pm
    spec = podman.manifest("deployment.yaml")["spec"]
    assert len(kube.containers) == 1, "one replica on the host's network (podman.kube_play_copy)"
    run_as = str(spec["template"]["spec"]["securityContext"]["runAsUser"])
    for name in kube.containers:
        assert pm.inspect("container", name, "{{.Image}}") == image.id
        assert pm.inspect("container", name, "{{.RestartCount}}") == "0", "no crash loop"
        assert pm.inspect("container", name, "{{.HostConfig.ReadonlyRootfs}}") == "true"
        assert pm.inspect("container", name, "{{.Config.User}}").split(":")[0] == run_as
        env = pm("exec", name, "printenv", "CDS_STATE_DIR", "CDS_WORKERS", "CDS_AUTH").stdout.split()
        assert env == [CONFIG["CDS_STATE_DIR"], CONFIG["CDS_WORKERS"], CONFIG["CDS_AUTH"]]


def test_kube_play_answers_the_plex_order_select(kube: Kube, ehr: Ehr) -> None:
    for _ in range(4):  # connections spread over the pod's workers (one SO_REUSEPORT socket each)
        r = _plex_select(kube.base, kube.public_base, ehr)
        assert r.status_code == 200, f"{r.status_code} {r.text[:500]}\n{kube.logs()}"
        assert _card_kinds(r) == THREE_CARDS
