"""`webhook completion bash|zsh`: bash sources the script and completes commands, options,
their choices and files, as generated from the parser itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_cli import webhook
from webhook.cli import main as cli
from webhook.cli.completion import script

pytestmark = pytest.mark.process
BIN = Path(sys.executable).parent


def complete(line: str, shell_script: str | None = None, cwd: Path = ROOT) -> list[str]:
    """What bash offers for `line` (the cursor at its end) with the generated script loaded."""
    words = line.split(" ")
    loader = "source <(webhook completion bash)" if shell_script is None else shell_script
    program = (f"{loader}\nCOMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
               "_webhook\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, cwd=cwd, timeout=60,
                            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return sorted(line for line in result.stdout.splitlines() if line)


def test_bash_sources_the_script_and_registers_the_completion() -> None:
    result = subprocess.run(["bash", "-c", "source <(webhook completion bash); complete -p webhook"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "complete -o filenames -F _webhook webhook"


def test_bash_completes_commands_options_choices_and_files(tmp_path: Path) -> None:
    assert complete("webhook ") == sorted(["-h", "--help", "--version", "serve", "certs", "policies", "mutate",
                                           "validate", "explain", "test", "install-ca", "report", "status", "controller",
                                              "completion"])
    assert complete("webhook va") == ["validate"]
    assert complete("webhook policies ") == ["--help", "-h", "check", "schema"]
    assert complete("webhook certs generate --i") == ["--if-missing"]
    assert complete("webhook validate -o ") == ["json", "text"]
    assert complete("webhook mutate -n shop --output ") == ["diff", "json", "patch", "yaml"]
    assert complete("webhook serve --log-level w") == ["warning"]
    assert complete("webhook completion ") == ["--help", "-h", "bash", "zsh"]
    # Files for -f, directories for DIR options, the command found past options and their values.
    (tmp_path / "pod.yaml").write_text("kind: Pod\n")
    (tmp_path / "sub").mkdir()
    assert complete("webhook validate -n shop -f ", cwd=tmp_path) == ["pod.yaml", "sub"]
    assert complete("webhook validate -f pod.yaml --policies ", cwd=tmp_path) == ["sub"]
    assert complete("webhook test ", cwd=tmp_path) == ["pod.yaml", "sub"]
    assert complete("webhook test --p", cwd=tmp_path) == ["--policies"]
    # A value that looks like a command is not one.
    assert complete("webhook validate -n serve -o ") == ["json", "text"]


def test_every_command_of_the_parser_is_in_the_script() -> None:
    parser = cli._build_parser()
    bash = script(parser, "bash")
    for command in ("serve", "certs generate", "policies check", "install-ca", "report", "completion"):
        assert f"{command}" in bash
    zsh = webhook("completion", "zsh")
    assert zsh.returncode == 0 and "bashcompinit" in zsh.stdout and "complete -o filenames -F _webhook webhook" \
        in zsh.stdout


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_sources_the_script() -> None:
    result = subprocess.run(["zsh", "-c", "source <(webhook completion zsh) && print ok"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
