"""podman for the container tests: set up by scripts/podman-setup.sh, run with the containers.conf it wrote.

    pm = set_up()                       # Podman, or a PodmanMissing saying why podman cannot be had
    image = pm.build(tag)               # deploy/Dockerfile on the Debian base: the image id
    pm("run", "-d", ...)                # any podman command; raises PodmanError with its output
    docs = kube_play_copy(...)          # deploy/k8s as podman 4.3's `kube play` can run it

The setup script installs podman and builds the base image once (cached by the script's content);
it exits 3 when podman cannot be installed (not root, apt fails), which the tests count as a skip.
"""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "podman-setup.sh"
K8S = ROOT / "deploy" / "k8s"
CANNOT_INSTALL = 3  # the setup script's exit status for "podman cannot be installed here"


class PodmanError(RuntimeError):
    """A podman command failed; the message holds the command and its output."""


@dataclass(frozen=True)
class PodmanMissing:
    reason: str


@dataclass(frozen=True)
class Podman:
    env: dict[str, str]  # the environment with CONTAINERS_CONF set
    base_image: str  # localhost/cds-base:<key>, the Dockerfile's PYTHON_IMAGE

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and run.returncode != 0:
            raise PodmanError(f"podman {' '.join(args)} -> {run.returncode}\n{run.stdout}\n{run.stderr}")
        return run

    def build(self, tag: str) -> str:
        """Build deploy/Dockerfile from the repository root (layers cached by podman); the image id."""
        run = self(
            "build",
            "--format=docker",  # OCI format drops HEALTHCHECK
            "--network=host",
            "--layers",
            f"--build-arg=PYTHON_IMAGE={self.base_image}",
            "--file",
            str(ROOT / "deploy" / "Dockerfile"),
            "--tag",
            tag,
            "--quiet",
            str(ROOT),
            timeout=900,
        )
        return run.stdout.strip().splitlines()[-1]

    def inspect(self, kind: str, name: str, template: str) -> str:
        return self(kind, "inspect", "--format", template, name).stdout.strip()

    def logs(self, container: str) -> str:
        run = self("logs", "--tail", "60", container, check=False)
        return (run.stdout + run.stderr)[-6000:]


def set_up() -> Podman | PodmanMissing:
    """Run scripts/podman-setup.sh (install and configure podman, build the base when not cached)."""
    run = subprocess.run(
        ["bash", str(SETUP)], capture_output=True, text=True, timeout=1800, check=False, cwd=ROOT
    )
    if run.returncode == CANNOT_INSTALL:
        return PodmanMissing(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "no reason given")
    if run.returncode != 0:
        raise PodmanError(f"{SETUP.name} failed ({run.returncode}):\n{run.stderr[-4000:]}")
    exported = dict(
        line.removeprefix("export ").split("=", 1)
        for line in run.stdout.splitlines()
        if line.startswith("export ")
    )
    env = {**os.environ, "CONTAINERS_CONF": exported["CONTAINERS_CONF"]}
    return Podman(env=env, base_image=exported["CDS_BASE_IMAGE"])


def manifest(name: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert isinstance(doc, dict), name
    return doc


def kube_play_copy(*, run_id: str, image: str, port: int, config: dict[str, str]) -> list[dict[str, Any]]:
    """The ConfigMap and Deployment of deploy/k8s, changed only where podman 4.3 on one host needs it.

    - the image is the one just built (by id: no registry here);
    - container `ports` are left out: the pods share the host's network, which refuses port mappings;
    - one replica: on the host's network every replica would want the same port, and `cds serve`
      refuses a port another process holds (it exits; podman would restart it over and over);
    - names get `run_id` appended (Deployment, ConfigMap, Secret reference, emptyDir volumes): podman
      turns each emptyDir into a volume named after it, which anything else on the machine with that
      name would share;
    - `config` overrides ConfigMap keys (the port, loopback, this run's Redis key prefix).
    The Secret is not played (podman 4.3 reads neither a Secret document nor stringData): the caller
    creates it with `podman secret create` under the name `cds-secrets-<run_id>`.
    """
    cm = copy.deepcopy(manifest("configmap.yaml"))
    dep = copy.deepcopy(manifest("deployment.yaml"))
    cm_name = f"{cm['metadata']['name']}-{run_id}"
    cm["metadata"]["name"] = cm_name
    cm["data"].update(config, CDS_PORT=str(port))
    dep["metadata"]["name"] = f"{dep['metadata']['name']}-{run_id}"
    dep["spec"]["replicas"] = 1
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    container["image"] = image
    container.pop("ports", None)
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            source["configMapRef"]["name"] = cm_name
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            ref["name"] = f"{ref['name']}-{run_id}"
    renamed = {v["name"]: f"cds-{run_id}-{v['name']}" for v in pod["volumes"]}
    for volume in pod["volumes"]:
        volume["name"] = renamed[volume["name"]]
    for mount in container["volumeMounts"]:
        mount["name"] = renamed[mount["name"]]
    return [cm, dep]


def secret_names(run_id: str) -> set[str]:
    """The Secrets the Deployment reads, under this run's names."""
    (container,) = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return {
        f"{var['valueFrom']['secretKeyRef']['name']}-{run_id}"
        for var in container.get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    }
