"""scripts/services.sh: idempotent, and afterwards PostgreSQL and Redis answer on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.deploy.conftest import _answers

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services.sh"


def test_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_running_it_twice_leaves_both_servers_answering() -> None:
    for _ in range(2):
        run = subprocess.run(["bash", str(SCRIPT)], check=False, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
    assert _answers("127.0.0.1", 5432), "PostgreSQL is not answering on 127.0.0.1:5432"
    assert _answers("127.0.0.1", 6379), "Redis is not answering on 127.0.0.1:6379"
