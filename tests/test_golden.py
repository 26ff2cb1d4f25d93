"""Golden answers: the server's answers to the test corpus over TLS and the offline CLI's
outputs must be exactly the recorded ones in tests/golden/ (see its package docstring).

When behaviour changes on purpose, `make golden` records the new answers; the diff of
tests/golden/ is then reviewed with the change.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from tests.conftest import ServerProcess
from tests.golden import admission, cases, cli
from tests.golden.compare import diff_answers, diff_transcripts
from tests.golden.regenerate import SERVER_FILES, cli_files


def _golden(name: str) -> str:
    path = cases.GOLDEN_DIR / name
    if not path.exists():
        pytest.fail(f"{path.relative_to(cases.ROOT)} is missing: run `make golden`")
    return path.read_text(encoding="utf-8")


def _fail_on(problems: list[str]) -> None:
    if any(problems):
        # Without pytest's rewriting of the assertion, which would print the report twice.
        pytest.fail("\n\n".join(p for p in problems if p), pytrace=False)


def test_server_answers_are_the_golden_ones(server: ServerProcess) -> None:
    lines = admission.record_all(server.client, cases.corpus_pods(), cases.pod_security_pods(),
                                 cases.raw_requests())
    problems = [diff_answers(_golden(SERVER_FILES[endpoint]), found, file=SERVER_FILES[endpoint])
                for endpoint, found in lines.items()]
    _fail_on(problems)


@pytest.mark.process
def test_cli_outputs_are_the_golden_ones() -> None:
    files = cli_files(cli.run(cases.cli_invocations()))
    problems = [diff_transcripts(_golden(name), text, file=name) for name, text in sorted(files.items())]
    _fail_on(problems)


def test_golden_files_cover_every_input() -> None:
    """A new corpus file or invocation without `make golden` fails here too, without a server."""
    recorded = {json.loads(line)["case"] for name in SERVER_FILES.values()
                for line in _golden(name).splitlines()}
    inputs = {pod.name for pod in cases.corpus_pods() + cases.pod_security_pods()}
    inputs |= {request.name for request in cases.raw_requests()}
    assert sorted(inputs - recorded) == [], "inputs without golden answers: run `make golden`"
    commands = {command for path in cases.GOLDEN_DIR.glob("cli-*.txt")
                for command in cli.split_transcripts(path.read_text(encoding="utf-8"))}
    expected = {cli.Transcript(i.argv, 0, "", "").command for i in cases.cli_invocations()}
    assert sorted(expected - commands) == [], "invocations without golden outputs: run `make golden`"


PATCH = [{"op": "add", "path": "/metadata/labels", "value": {"a": "é/~"}}]


@pytest.mark.parametrize("body", [
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u","allowed":true,'
    b'"patchType":"JSONPatch","patch":"' + base64.b64encode(json.dumps(PATCH, separators=(",", ":"),
                                                                        ensure_ascii=False).encode()) + b'"}}',
    b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u","allowed":false}}',
    b'{"error": "spaced, as Python writes by default", "code": 400}',
    b'{"a":1.0e3}',
    b"not JSON at all",
], ids=["patched", "plain", "spaced", "float", "text"])
def test_a_golden_line_gives_back_the_exact_body(body: bytes) -> None:
    line = admission.Answer("c", "/mutate", "0", 200, "application/json", body).line()
    record = json.loads(line)
    assert admission.body_of(record) == body
    if b"patch" in body:   # the patch is readable in the line, not base64
        assert record["patch"] == PATCH and record["response"]["response"]["patch"] == "<patch>"


def test_shipped_policies_have_no_expiring_exceptions() -> None:
    """An exception's `expires` makes answers depend on the date: golden answers would change
    from one day to the next. The shipped policies have none; a policy that gains one needs
    its golden cases pinned to a date instead."""
    for path in sorted(cases.SHIPPED_POLICIES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            spec = (doc or {}).get("spec") or {} if isinstance(doc, dict) else {}
            expiring = [e for e in spec.get("exceptions") or [] if isinstance(e, dict) and "expires" in e]
            assert not expiring, f"{path.name}: {expiring}"
