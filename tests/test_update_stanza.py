"""An injection policy's `spec.update` stanza: what loads, what is refused, what the
revision leaves out, and what `policies check` warns about."""

from __future__ import annotations

import pytest

from tests.engine_helpers import policies_from_yaml
from webhook.policy.errors import PolicyLoadError
from webhook.policy.lint import lint
from webhook.policy.update import UpdateFallback, UpdateStrategy

BASE = """\
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: agent}
spec:
  match: {namespaces: {include: [team-*]}}
  inject:
    sidecars: [{name: agent, image: "registry.example.com/agent:1.0"}]
"""


def policy(update: str = "", *, inject: str = "") -> str:
    text = BASE if not inject else BASE.replace(
        '    sidecars: [{name: agent, image: "registry.example.com/agent:1.0"}]\n', inject)
    return text + (f"  update: {update}\n" if update else "")


def load_one(update: str = "", **kw: str):   # type: ignore[no-untyped-def]
    return policies_from_yaml(policy(update, **kw)).injection[0]


def errors_of(update: str) -> list[str]:
    with pytest.raises(PolicyLoadError) as caught:
        policies_from_yaml(policy(update))
    return [f"{e.field}: {e.message}" for e in caught.value.errors]


def test_defaults_are_manual_one_at_a_time_ten_minutes() -> None:
    update = load_one().spec.update
    assert update.strategy is UpdateStrategy.MANUAL and not update.acts
    assert update.fallback is UpdateFallback.RESTART
    assert (update.max_concurrent, update.paused, update.progress_deadline_seconds) == (1, False, 600)
    assert update.selects_namespace("anything")


def test_a_full_stanza_loads() -> None:
    update = load_one("{strategy: InPlace, fallback: Manual, maxConcurrent: 3, paused: true, "
                      "namespaces: {include: [team-canary-*], exclude: [team-canary-db]}, "
                      "progressDeadlineSeconds: 120}").spec.update
    assert update.strategy is UpdateStrategy.IN_PLACE and update.fallback is UpdateFallback.MANUAL
    assert (update.max_concurrent, update.paused, update.progress_deadline_seconds) == (3, True, 120)
    assert not update.acts   # paused
    assert update.selects_namespace("team-canary-web")
    assert not update.selects_namespace("team-canary-db")
    assert not update.selects_namespace("team-prod")


@pytest.mark.parametrize(("update", "expected"), [
    ("{strategy: Rolling}", "update.strategy: Input should be 'Manual', 'Restart' or 'InPlace'"),
    ("{strategy: Restart, maxConcurrent: 0}", "update.maxConcurrent: Input should be greater than or equal to 1"),
    ("{strategy: Restart, maxConcurrent: '2'}", "update.maxConcurrent: Input should be a valid integer"),
    ("{strategy: Restart, paused: 'yes'}", "update.paused: Input should be a valid boolean"),
    ("{strategy: Restart, progressDeadlineSeconds: 5}",
     "update.progressDeadlineSeconds: Input should be greater than or equal to 30"),
    ("{strategy: Restart, maxConcurent: 2}", "update.maxConcurent: unknown field"),
    ("{strategy: Restart, fallback: Manual}",
     "update: fallback applies to strategy InPlace only (strategy is Restart)"),
    ("{strategy: InPlace, fallback: InPlace}", "update.fallback: Input should be 'Restart' or 'Manual'"),
    ("{namespaces: {include: team-a}}", "update.namespaces.include: Input should be a valid list"),
])
def test_a_wrong_stanza_is_refused_with_the_field(update: str, expected: str) -> None:
    assert errors_of(update) == [f"spec.{expected}"]


def test_the_stanza_is_left_out_of_the_revision() -> None:
    plain = policies_from_yaml(policy()).injectors[0].revision
    for update in ("{strategy: Restart}", "{strategy: InPlace, maxConcurrent: 5, paused: true}",
                   "{strategy: Manual}"):
        assert policies_from_yaml(policy(update)).injectors[0].revision == plain
    changed = policy().replace("agent:1.0", "agent:1.1")
    assert policies_from_yaml(changed).injectors[0].revision != plain


def _update_warnings(text: str) -> list[str]:
    return [w.split(": ", 2)[2] for w in lint(policies_from_yaml(text)) if ": policy agent: " in w]


@pytest.mark.parametrize(("text", "expected"), [
    (policy("{maxConcurrent: 3, paused: true}"),
     ["update.maxConcurrent, update.paused has no effect with strategy Manual (the controller only reports)"]),
    (policy("{strategy: Restart, namespaces: {include: [prod-*], exclude: ['prod*']}}"),
     ["update.namespaces selects no namespace: every included pattern ['prod-*'] is also excluded"]),
    (policy("{strategy: Restart, namespaces: {include: [canary]}}").replace("include: [team-*]", "include: [web]"),
     ["update.namespaces ['canary'] selects none of the namespaces the policy matches (['web']): nothing would "
      "ever be updated"]),
    (policy("{strategy: InPlace}", inject="    env: [{name: X, value: y}]\n"),
     ["update.strategy InPlace on a policy that injects no container: every change is handled by its fallback "
      "(Restart)"]),
    (policy("{strategy: Restart}").replace("  match:", "  mode: Shadow\n  match:"),
     ["update.strategy Restart on a Shadow policy: it injects nothing, so no pod is ever brought up to it"]),
    (policy("{strategy: InPlace, maxConcurrent: 4, namespaces: {include: [team-canary]}}"), []),
])
def test_policies_check_warns_of_an_update_stanza_that_cannot_do_what_it_says(text: str,
                                                                               expected: list[str]) -> None:
    assert _update_warnings(text) == expected


def test_the_schema_offers_the_stanza() -> None:
    from webhook.policy.model import json_schema
    definitions = json_schema()["$defs"]
    update = definitions["Update"]
    assert update["additionalProperties"] is False
    assert set(update["properties"]) == {"strategy", "fallback", "maxConcurrent", "paused", "namespaces",
                                         "progressDeadlineSeconds"}
    assert update["properties"]["progressDeadlineSeconds"]["minimum"] == 30
