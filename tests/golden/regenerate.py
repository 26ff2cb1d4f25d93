"""Record the golden answers again: `python -m tests.golden.regenerate` (or `make golden`).

Starts `webhook serve` on the shipped policies over TLS (a throwaway CA), sends every input
of `tests.golden.cases`, runs the CLI invocations, and rewrites the files below. Review the
diff before committing it: every changed line is a change of behaviour.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tests.golden import admission, cases, cli

SERVER_FILES = {"/mutate": "mutate.jsonl", "/validate": "validate.jsonl"}


def cli_files(transcripts: Iterable[cli.Transcript]) -> dict[str, str]:
    """file name -> transcript text: one file per command, so a diff shows which one changed."""
    files: dict[str, list[str]] = {}
    for transcript in transcripts:
        command = transcript.argv[0] if transcript.argv[0] in ("mutate", "validate", "explain") else "policies"
        files.setdefault(f"cli-{command}.txt", []).append(transcript.render())
    return {name: "".join(blocks) for name, blocks in files.items()}


def record_server(work: Path) -> dict[str, str]:
    """file name -> golden lines, from a server started here and stopped after."""
    from tests.conftest import SHIPPED_POLICIES, ServerProcess, make_pki

    pki = make_pki(work / "pki")
    server = ServerProcess(cert_dir=pki, policies=SHIPPED_POLICIES, log_file=work / "server.log", args=[])
    try:
        lines = admission.record_all(server.client, cases.corpus_pods(), cases.pod_security_pods(),
                                     cases.raw_requests())
    finally:
        server.stop()
    return {SERVER_FILES[endpoint]: "".join(line + "\n" for line in found) for endpoint, found in lines.items()}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "pki").mkdir()
        files = record_server(Path(tmp))
    files |= cli_files(cli.run(cases.cli_invocations()))
    for name, text in sorted(files.items()):
        path = cases.GOLDEN_DIR / name
        before = path.read_text(encoding="utf-8") if path.exists() else None
        path.write_text(text, encoding="utf-8")
        state = "new" if before is None else "unchanged" if before == text else "CHANGED"
        print(f"{path.relative_to(cases.ROOT)}: {text.count(chr(10))} lines, {state}")
    stale = {p.name for p in cases.GOLDEN_DIR.glob("*.jsonl")} | {p.name for p in cases.GOLDEN_DIR.glob("cli-*.txt")}
    for name in sorted(stale - set(files)):
        (cases.GOLDEN_DIR / name).unlink()
        print(f"removed {name}: no longer recorded")
    print("Review `git diff tests/golden/` before committing: each change there is a change of behaviour.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
