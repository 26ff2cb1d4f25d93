"""The layering the README states, checked on every run by import-linter's contracts in
pyproject.toml: the decision logic (core, policy, engine, rules) never reaches for a
transport, a process, the cluster or the command line, so the server, the controller and
the CLI cannot disagree and the engine stays a pure function."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


@pytest.mark.process
def test_import_contracts_hold() -> None:
    run = subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


@pytest.mark.process
def test_a_broken_contract_fails_the_check(tmp_path: Path) -> None:
    # The same contracts, with an engine module that imports the admission server: the
    # check must name it, or a passing run above proves nothing.
    package = tmp_path / "webhook"
    subprocess.run(["cp", "-r", str(ROOT / "webhook"), str(package)], check=True)
    (package / "engine" / "leak.py").write_text("from webhook.admission import server\n")
    run = subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1, run.stdout + run.stderr
    assert "webhook.engine.leak -> webhook.admission.server" in run.stdout
