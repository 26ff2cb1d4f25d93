"""`make run` and `make test` set up .venv through tools/venv.py: safe to start together,
runtime dependencies only for `make run`, and the command line's PATH said."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Runs tools/venv.py in a scratch tree with creation and pip replaced by slow stand-ins
# that log when each step starts and ends: what matters is who runs what, and when.
DRIVER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {tools!r})
import venv as setup

root = Path({root!r})
setup.ROOT, setup.VENV, setup.LOCK = root, root / ".venv", root / ".venv.lock"
setup.PYTHON = setup.VENV / "bin" / "python"
setup.INPUTS = (root / "pyproject.toml", root / "requirements.lock")
setup.STAMPS = {{"runtime": setup.VENV / ".runtime", "test": setup.VENV / ".installed"}}

def log(step, *args):
    with open(root / "log", "a") as out:
        out.write(json.dumps([step, list(args), time.monotonic()]) + "\\n")

def create():
    log("create-start")
    time.sleep(0.5)   # a python without pip yet: what the race used to find
    setup.PYTHON.parent.mkdir(parents=True)
    setup.PYTHON.touch()
    time.sleep(0.5)
    log("create-end")

def pip(*args):
    log("pip-start", *args)
    time.sleep(0.3)
    log("pip-end", *args)

setup._create, setup._pip = create, pip
setup._usable = lambda: setup.PYTHON.exists()
sys.argv = ["venv.py", sys.argv[1]]
sys.exit(setup.main())
"""


def _steps(root: Path) -> list[tuple[str, list[str], float]]:
    return [tuple(json.loads(line)) for line in (root / "log").read_text().splitlines()]


@pytest.mark.process
def test_run_and_test_started_together_take_turns(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "requirements.lock"):
        (tmp_path / name).write_text("")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tools=str(ROOT / "tools"), root=str(tmp_path)))
    run = subprocess.Popen([sys.executable, str(driver), "runtime"])
    time.sleep(0.2)    # `make test` started while `make run` creates the environment
    test = subprocess.Popen([sys.executable, str(driver), "test"])
    assert run.wait(timeout=30) == 0 and test.wait(timeout=30) == 0
    steps = _steps(tmp_path)
    # one creation, and nothing of the other run inside it or inside any pip step
    assert [s for s, _, _ in steps].count("create-start") == 1
    for (step, _, _), (after, _, _) in zip(steps[::2], steps[1::2]):
        assert step.endswith("-start") and after == step.replace("-start", "-end"), steps
    installs = [args for step, args, _ in steps if step == "pip-start"]
    assert installs == [["--require-hashes", "-r", "requirements.lock"], ["--no-deps", "-e", "."],
                        ["-e", ".[test]"]]
    # Both set up: a third run finds nothing to do.
    assert subprocess.run([sys.executable, str(driver), "test"]).returncode == 0
    assert len(_steps(tmp_path)) == len(steps)


@pytest.mark.process
def test_runtime_alone_installs_no_test_tools_and_a_half_made_venv_is_made_again(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "requirements.lock"):
        (tmp_path / name).write_text("")
    (tmp_path / ".venv").mkdir()       # an interrupted creation: no python, no pip
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tools=str(ROOT / "tools"), root=str(tmp_path)))
    assert subprocess.run([sys.executable, str(driver), "runtime"]).returncode == 0
    steps = _steps(tmp_path)
    assert steps[0][0] == "create-start"
    assert not any(".[test]" in args for _, args, _ in steps)
    assert (tmp_path / ".venv" / ".runtime").exists() and not (tmp_path / ".venv" / ".installed").exists()
    # A newer lock file is a reason to install again.
    time.sleep(0.05)
    (tmp_path / "requirements.lock").write_text("# new\n")
    assert subprocess.run([sys.executable, str(driver), "runtime"]).returncode == 0
    assert len(_steps(tmp_path)) > len(steps)


@pytest.mark.process
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_sets_up_only_the_runtime_and_says_how_to_reach_the_command_line() -> None:
    run = subprocess.run(["make", "-n", "-W", "pyproject.toml", "run"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "tools/venv.py runtime" in run and "tools/venv.py test" not in run
    assert f'export PATH="{ROOT}/.venv/bin:$PATH"' in run
    test = subprocess.run(["make", "-n", "-W", "pyproject.toml", "test"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    assert "tools/venv.py test" in test
    # CI still runs the README's test command.
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")
