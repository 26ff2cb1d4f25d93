"""Every error of a policy file in one run, each at its own line (no HTTP)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.engine_helpers import policies_from_yaml
from tests.test_cli import webhook
from webhook.policy.errors import PolicyLoadError

HEAD = "apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\nmetadata: {name: bad}\nspec:\n  priority: 50\n"


def errors_of(body: str) -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        policies_from_yaml(HEAD + textwrap.indent(textwrap.dedent(body), "  "))
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize(("body", "expected"), [
    # A key and a value wrong in one selector: both, each at its own line.
    ("""\
       match:
         podSelector:
           matchLabels:
             "tier ": web
             app: "a,b"
       inject: {}
     """, ["p0.yaml:9: bad/spec.match.podSelector.matchLabels.tier : invalid label/annotation key 'tier '",
           "p0.yaml:10: bad/spec.match.podSelector.matchLabels.app: label 'app': a label value"]),
    ("""\
       match:
         podSelector:
           matchExpressions:
             - key: "x y"
               operator: Exists
               values:
                 - "a,b"
       inject: {}
     """, ["p0.yaml:9: bad/spec.match.podSelector.matchExpressions[0].key: invalid label/annotation key 'x y'",
           "p0.yaml:9: bad/spec.match.podSelector.matchExpressions[0]: operator Exists takes no values",
           "p0.yaml:12: bad/spec.match.podSelector.matchExpressions[0].values[0]: label 'x y': a label value"]),
    # Two unknown template references: each named, at its own line, not at `inject:`.
    ("""\
       inject:
         env:
           - name: A
             value: "{{ pod.nope }}"
           - name: B
             value: "{{ namespace }}-{{ pod.one }}-{{ pod.two }}"
     """, ["p0.yaml:9: bad/spec.inject.env[0].value: unknown reference 'pod.nope'",
           "p0.yaml:11: bad/spec.inject.env[1].value: unknown reference 'pod.one'",
           "p0.yaml:11: bad/spec.inject.env[1].value: unknown reference 'pod.two'"]),
    # Template errors beside the section's other errors, in line order.
    ("""\
       inject:
         sidecars:
           - name: proxy
             image: "registry.example.com/{{ pod.image }}:1"
         labels:
           "bad key": x
           good: "not ok!"
         annotations:
           runtime.platform.io/status: x
     """, ["p0.yaml:9: bad/spec.inject.sidecars[0].image: unknown reference 'pod.image'",
           "p0.yaml:11: bad/spec.inject.labels.bad key: invalid label/annotation key 'bad key'",
           "p0.yaml:12: bad/spec.inject.labels.good: label 'good': a label value",
           "p0.yaml:14: bad/spec.inject.annotations.runtime.platform.io/status: 'runtime.platform.io/status' "
           "is reserved for the injection ledger"]),
    ("""\
       match:
         workloads: [Service, deployment, "Job "]
       inject: {}
     """, ["p0.yaml:7: bad/spec.match.workloads[1]: workload 'deployment'",
           "p0.yaml:7: bad/spec.match.workloads[2]: workload 'Job '"]),
])
def test_every_error_at_its_own_line(body: str, expected: list[str]) -> None:
    found = errors_of(body)
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected):
        assert line.startswith(prefix), (line, prefix)


@pytest.mark.process
def test_policies_check_lists_every_error_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(HEAD + "  match: {podSelector: {matchLabels: {'tier ': 'a,b'}}}\n  inject: {}\n")
    (tmp_path / "b.yaml").write_text(HEAD.replace("name: bad", "name: other") +
                                     "  inject:\n    env:\n      - {name: A, value: '{{ pod.x }}'}\n"
                                     "      - {name: B, value: '{{ pod.y }}'}\n")
    result = webhook("policies", "check", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == "4 error(s)"
    assert [line.split(": ")[0] for line in lines[:-1]] == [
        f"{tmp_path / 'a.yaml'}:6", f"{tmp_path / 'a.yaml'}:6", f"{tmp_path / 'b.yaml'}:8",
        f"{tmp_path / 'b.yaml'}:9"]
