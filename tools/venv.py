"""Set up the development virtualenv `.venv`: `runtime` (what `make run` needs) or `test`.

`runtime` installs the dependencies exactly as the image does (requirements.lock, by
hash) and the package itself without dependencies; `test` adds the test tools (the
package's `test` extra) on top. Each step holds an exclusive lock on `.venv.lock` and
checks again under it whether it is still needed, so `make run` and `make test` started
together take turns instead of one finding a half-created environment (a python
without pip). A half-created environment (an interrupted run) is created again.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
LOCK = ROOT / ".venv.lock"
PYTHON = VENV / "bin" / "python"
INPUTS = (ROOT / "pyproject.toml", ROOT / "requirements.lock", Path(__file__))
STAMPS = {"runtime": VENV / ".runtime", "test": VENV / ".installed"}


def _fresh(stamp: Path, *after: Path) -> bool:
    """Whether `stamp` exists and is newer than every input it depends on."""
    if not stamp.exists():
        return False
    made = stamp.stat().st_mtime
    return all(p.stat().st_mtime <= made for p in (*INPUTS, *after))


def _pip(*args: str) -> None:
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                   cwd=ROOT, check=True)


def _usable() -> bool:
    return PYTHON.exists() and subprocess.run([str(PYTHON), "-m", "pip", "--version"],
                                              capture_output=True).returncode == 0


def _create() -> None:
    shutil.rmtree(VENV, ignore_errors=True)   # absent, or left half-made by an interrupted run
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    _pip("--upgrade", "pip")


def _runtime() -> None:
    if _fresh(STAMPS["runtime"]):
        return
    if not _usable():
        _create()
    _pip("--require-hashes", "-r", "requirements.lock")
    _pip("--no-deps", "-e", ".")
    STAMPS["runtime"].touch()


def _test() -> None:
    _runtime()
    if _fresh(STAMPS["test"], STAMPS["runtime"]):
        return
    _pip("-e", ".[test]")
    STAMPS["test"].touch()


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in STAMPS:
        print(f"usage: {sys.argv[0]} runtime|test", file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):
        print(f"the webhook needs Python 3.11 or later; {sys.executable} is "
              f"{'.'.join(map(str, sys.version_info[:3]))} (make PYTHON=python3.11 ...)", file=sys.stderr)
        return 2
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes, or the process dies
        (_runtime if sys.argv[1] == "runtime" else _test)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
