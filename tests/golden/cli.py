"""Golden answers of the offline CLI: each invocation's exit code, stdout and stderr.

All invocations run in one child process (`python -m tests.golden.cli IN OUT`), each through
`webhook.cli.main.main` with its standard streams captured at the file descriptor, so the output
is what a terminal would show; a process per invocation would take many times longer.

The transcript (`cli.txt`) shows each invocation as the command, `[exit N]`, its stdout
lines prefixed `| ` and its stderr lines prefixed `! `.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.golden.cases import ROOT, Invocation


@dataclass(frozen=True)
class Transcript:
    argv: tuple[str, ...]
    exit: int
    stdout: str
    stderr: str

    @property
    def command(self) -> str:
        return "$ webhook " + " ".join(self.argv)

    def render(self) -> str:
        lines = [self.command, f"[exit {self.exit}]"]
        for prefix, text, name in (("| ", self.stdout, "stdout"), ("! ", self.stderr, "stderr")):
            lines += [(prefix + line).rstrip() for line in text.splitlines()]
            if text and not text.endswith("\n"):
                lines.append(f"[no newline at the end of {name}]")
        return "\n".join(lines) + "\n"


def split_transcripts(text: str) -> dict[str, str]:
    """command line -> its rendered block, from a whole `cli.txt`."""
    blocks: dict[str, str] = {}
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith("$ webhook ") and current:
            blocks[current[0].rstrip("\n")] = "".join(current)
            current = []
        current.append(line)
    if current:
        blocks[current[0].rstrip("\n")] = "".join(current)
    return blocks


def run(invocations: Sequence[Invocation]) -> list[Transcript]:
    with tempfile.TemporaryDirectory() as tmp:
        request, answer = Path(tmp) / "in.json", Path(tmp) / "out.json"
        request.write_text(json.dumps([list(i.argv) for i in invocations]))
        # The user's WEBHOOK_* settings would change the defaults; COLUMNS fixes argparse's width.
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_")} | {"COLUMNS": "100"}
        proc = subprocess.run([sys.executable, "-m", "tests.golden.cli", str(request), str(answer)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"the CLI runner failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return [Transcript(tuple(t["argv"]), t["exit"], t["stdout"], t["stderr"])
                for t in json.loads(answer.read_text())]


def _captured(argv: list[str]) -> dict[str, object]:
    """Runs `webhook ARGV` in this process with fds 1 and 2 sent to temporary files."""
    from webhook.cli import main as cli

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            try:
                code = cli.main(argv)
            except SystemExit as exc:   # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return {"argv": argv, "exit": code, "stdout": out.read().decode("utf-8"),
                "stderr": err.read().decode("utf-8")}


def _child(request: Path, answer: Path) -> None:
    argvs = json.loads(request.read_text())
    answer.write_text(json.dumps([_captured(argv) for argv in argvs]))


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
