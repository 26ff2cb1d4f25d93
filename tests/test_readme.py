"""The README, followed as written in a fresh copy of the repository.

Its shell blocks run in order, in one bash session started without the virtualenv on
the PATH (the README must say how to get the command line), with the files in
examples/. `make run` starts in the background (on a free port, one worker: the
README's `localhost:8443` is rewritten to it), and the next blocks run once it
listens. Not run: `make test` (this suite), and `kubectl`/`docker` lines, which need a
cluster or an engine (tests/test_manifests.py checks what they apply). A command whose
comment says `exit N` must exit N, any other 0; each `text` block right after a shell
block shows the last command's output, of which every line without `...` must appear.
The copy uses this checkout's .venv (linked), so setting it up costs nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SKIPPED = ("make test", "kubectl ", "docker ")
EXPECTED_EXIT = re.compile(r"#.*\bexit (\d+)")
MAX_WORDS = 900   # "at most about": the layout table grows with the code


def _blocks() -> list[tuple[str, str]]:
    return [(lang, body) for lang, body in BLOCK.findall(README.read_text())]


def _commands(body: str) -> list[str]:
    """A shell block's commands, continuation lines joined, comment-only lines dropped."""
    commands, current = [], ""
    for line in body.splitlines():
        current += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        if current.strip() and not current.lstrip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


def _fresh_copy(target: Path) -> None:
    """The files a clone has (tracked, plus new ones not ignored), and a .venv that links
    to this checkout's, with its stamps newer than the copied inputs."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    venv = target / ".venv"
    venv.mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if not entry.name.startswith("."):
            (venv / entry.name).symlink_to(entry)
    for stamp in (".runtime", ".installed"):
        (venv / stamp).touch()


def _start_make_run(repo: Path, log: Path) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "WEBHOOK_PORT": "0", "WEBHOOK_WORKERS": "1"}
    proc = subprocess.Popen(["make", "run"], cwd=repo, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("{") and (event := json.loads(line)).get("event") == "listening":
                return proc, int(event["port"])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"make run did not start:\n{log.read_text()}")


def test_the_readme_is_short_and_has_its_parts() -> None:
    text = README.read_text()
    assert len(text.split()) <= MAX_WORDS * 1.1, f"{len(text.split())} words"
    assert "```mermaid" in text
    for step in ("API server", "mutating", "schema validation", "validating", "etcd"):
        assert step in text.split("```mermaid", 1)[1].split("```", 1)[0], step
    for section in ("## Try it", "## Write your first policy", "## Deploy"):
        assert section in text
    assert "base64" not in text.split("## Try it", 1)[1].split("\n## ", 1)[0].replace("from its base64", "")


def test_the_files_the_readme_shows_are_the_examples_it_runs() -> None:
    shown = [body for lang, body in _blocks() if lang == "yaml"]
    assert shown == [(ROOT / "examples" / name).read_text() for name in ("inject-region.yaml", "tests/region.yaml")]


@pytest.mark.process
@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None or shutil.which("curl") is None,
                    reason="needs make, git and curl")
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _fresh_copy(repo)
    outputs = tmp_path / "out"
    outputs.mkdir()
    server: subprocess.Popen | None = None
    port = 0
    script: list[str] = []
    checks: list[tuple[int, str, int]] = []           # (index, command, expected exit)
    shown: list[tuple[int, str]] = []                 # (index of the command, text it prints)
    blocks = _blocks()
    try:
        for number, (lang, body) in enumerate(blocks):
            if lang == "text" and number and blocks[number - 1][0] == "sh" and checks:
                shown.append((checks[-1][0], body))
            if lang != "sh":
                continue
            for command in _commands(body):
                if command.startswith("make run"):
                    assert server is None
                    server, port = _start_make_run(repo, tmp_path / "make-run.log")
                    continue
                if command.startswith(SKIPPED):
                    continue
                expected = EXPECTED_EXIT.search(command)
                index = len(checks)
                checks.append((index, command, int(expected.group(1)) if expected else 0))
                runnable = command.replace("localhost:8443", f"localhost:{port}") if port else command
                script.append(f'{{ {runnable}\n}} >"{outputs}/{index}" 2>&1; echo $? >"{outputs}/{index}.rc"')
        assert server is not None, "the README never starts the server with make run"
        path = ":".join(p for p in os.environ["PATH"].split(":") if ".venv" not in p)
        subprocess.run(["bash", "-c", "\n".join(script)], cwd=repo, env={**os.environ, "PATH": path}, timeout=120,
                       check=False)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    for index, command, expected in checks:
        output = (outputs / str(index)).read_text()
        rc = int((outputs / f"{index}.rc").read_text())
        assert rc == expected, f"`{command}` exited {rc}, not {expected}:\n{output}"
    for index, text in shown:
        # Compared with runs of spaces as one: an excerpt may drop its indentation.
        actual = {" ".join(line.split()) for line in (outputs / str(index)).read_text().splitlines()}
        for line in text.splitlines():
            if line.strip() and "..." not in line:
                assert " ".join(line.split()) in actual, f"README shows {line.strip()!r} after `{checks[index][1]}`"
    made_run = (tmp_path / "make-run.log").read_text()
    assert 'export PATH="' in made_run and "/.venv/bin:$PATH" in made_run   # how to reach the CLI
