"""deploy/k8s/*.yaml: schema-valid for Kubernetes (kubernetes-validate, strict) and consistent."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cds.settings import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
K8S_VERSION = "1.30"
FILES = sorted(K8S.glob("*.yaml"))


def _load(name: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return doc


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_manifests_are_there() -> None:
    kinds = {d["kind"] for f in FILES for d in yaml.safe_load_all(f.read_text()) if d}
    assert kinds >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "Ingress",
        "ServiceAccount",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_manifest_is_schema_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            _validate(doc)


def test_the_cli_validator_passes_the_directory() -> None:
    exe = Path(sys.executable).with_name("kubernetes-validate")
    run = subprocess.run(
        [str(exe), "--strict", "--kubernetes-version", K8S_VERSION, *map(str, FILES)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    "breakage",
    [
        "replicas-as-text",
        "unknown-field",
        "probe-without-handler-port",
        "missing-selector",
    ],
)
def test_a_broken_copy_fails_validation(breakage: str, tmp_path: Path) -> None:
    doc = copy.deepcopy(_load("deployment.yaml"))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    if breakage == "replicas-as-text":
        doc["spec"]["replicas"] = "two"
    elif breakage == "unknown-field":
        container["securityContext"]["readOnlyRootFileSystem"] = True  # misspelt: would be silently ignored
    elif breakage == "probe-without-handler-port":
        del container["livenessProbe"]["httpGet"]["port"]
    elif breakage == "missing-selector":
        del doc["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(doc)
    # and the command-line validator says so too, on a file
    broken = tmp_path / "deployment.yaml"
    broken.write_text(yaml.safe_dump(doc))
    exe = Path(sys.executable).with_name("kubernetes-validate")
    run = subprocess.run(
        [str(exe), "--strict", "--kubernetes-version", K8S_VERSION, str(broken)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0


def _pod() -> dict[str, Any]:
    return _load("deployment.yaml")["spec"]["template"]["spec"]


def test_deployment_probes_security_and_writable_mounts() -> None:
    pod = _pod()
    (c,) = pod["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(c["resources"])
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    state_dir = _load("configmap.yaml")["data"]["CDS_STATE_DIR"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    for writable in ("/tmp", state_dir):
        assert mounts.get(writable) in empty_dirs, f"{writable} must be a writable emptyDir"
    assert env["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/")


def test_labels_selectors_and_names_agree() -> None:
    dep = _load("deployment.yaml")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert _load("service.yaml")["spec"]["selector"].items() <= pod_labels.items()
    assert _load("pdb.yaml")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    target = _load("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", dep["metadata"]["name"])
    assert _load("hpa.yaml")["spec"]["minReplicas"] > _load("pdb.yaml")["spec"]["minAvailable"]
    ingress = _load("ingress.yaml")
    assert ingress["spec"]["tls"][0]["hosts"] == [r["host"] for r in ingress["spec"]["rules"]]
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {_load("service.yaml")["metadata"]["name"]}
    public = _load("configmap.yaml")["data"]["CDS_PUBLIC_BASE_URL"]
    assert public == "https://" + ingress["spec"]["rules"][0]["host"]


def test_config_and_secret_keys_are_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt CDS_ key would be ignored silently by Settings (extra="ignore"): catch it here."""
    known = {f"CDS_{name.upper()}" for name in Settings.model_fields}
    config = _load("configmap.yaml")["data"]
    secret = _load("secret.example.yaml")["stringData"]
    assert set(config) <= known, set(config) - known
    assert set(secret) <= known, set(secret) - known
    refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in _pod()["containers"][0]["env"] if "valueFrom" in e}
    assert refs <= set(secret)
    # the example values are what Settings accepts, read from the environment as in the pod
    for key in [k for k in os.environ if k.startswith("CDS_")]:
        monkeypatch.delenv(key)
    for key, value in {**config, **secret}.items():
        monkeypatch.setenv(key, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.workers == int(config["CDS_WORKERS"])
    assert settings.database_url and settings.database_url.startswith("postgresql://")
    assert all(i.fhir_servers for i in settings.jwt_issuers.values())


def test_configmap_workers_fit_the_cpu_limit() -> None:
    workers = int(_load("configmap.yaml")["data"]["CDS_WORKERS"])
    limit = _pod()["containers"][0]["resources"]["limits"]["cpu"]
    cpus = float(limit[:-1]) / 1000 if str(limit).endswith("m") else float(limit)
    assert 1 <= workers <= max(1, int(cpus))
