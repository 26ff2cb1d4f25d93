"""Engine tests with purpose-written policies: conflicts, ordering, templates, modes, matching."""

from __future__ import annotations

import json

import pytest

from tests.engine_helpers import env_names, expand, names, policies_from_yaml, run, runtime_env
from webhook.engine.ledger import LEDGER_ANNOTATION
from webhook.engine.patch import escape
from webhook.policy.errors import PolicyLoadError

HEAD = """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: %s}
spec:
"""


def policy(name: str, body: str) -> str:
    indented = "\n".join("  " + line for line in body.strip("\n").splitlines())
    return HEAD % name + indented + "\n"


def pod(*containers: dict, **metadata) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **metadata},
            "spec": {"containers": list(containers) or [{"name": "app", "image": "a"}]}}


ENV_X = """
inject:
  env:
    - {name: X, value: policy, onConflict: %s}
"""


@pytest.mark.parametrize(("resolution", "expected"), [("Keep", "user"), ("Replace", "policy")])
def test_env_conflict_keep_or_replace(resolution: str, expected: str) -> None:
    policies = policies_from_yaml(policy("env", ENV_X % resolution))
    result = run(pod({"name": "app", "image": "a", "env": [{"name": "X", "value": "user"}]}),
                 policies=policies)
    env = result.pod["spec"]["containers"][0]["env"]
    assert env == [{"name": "X", "value": expected}]
    conflicts = json.loads(result.pod["metadata"]["annotations"][LEDGER_ANNOTATION])["policies"][0]["conflicts"]
    assert conflicts == [{"kind": "env", "name": "X", "resolution": resolution, "container": "app"}]


def test_env_conflict_skip_skips_the_whole_policy_and_records_it() -> None:
    policies = policies_from_yaml(policy("env", ENV_X % "Skip" + "  labels: {injected: 'yes'}\n"))
    result = run(pod({"name": "app", "image": "a", "env": [{"name": "X", "value": "user"}]}),
                 policies=policies)
    assert "labels" not in result.pod["metadata"]
    recorded = json.loads(result.pod["metadata"]["annotations"][LEDGER_ANNOTATION])
    assert recorded["policies"] == [] and recorded["skipped"][0]["policy"] == "env"


def test_env_conflict_deny_names_both_sides() -> None:
    policies = policies_from_yaml(policy("env", ENV_X % "Deny"))
    result = run(pod({"name": "app", "image": "a", "env": [{"name": "X", "value": "user"}]}),
                 policies=policies)
    assert result.denial and "policy env" in result.denial and "'X'" in result.denial
    assert "container 'app'" in result.denial


def test_container_conflict_replace_puts_the_policy_container_first() -> None:
    policies = policies_from_yaml(policy("proxy", """
inject:
  sidecars:
    - {name: proxy, image: proxy:2, onConflict: Replace}
"""))
    given = pod({"name": "app", "image": "a"}, {"name": "proxy", "image": "user-proxy:1"})
    out = run(given, policies=policies).pod
    assert names(out["spec"]["containers"]) == ["app"]
    assert out["spec"]["initContainers"] == [{"name": "proxy", "image": "proxy:2", "restartPolicy": "Always"}]


def test_classic_sidecar_is_appended_to_containers() -> None:
    policies = policies_from_yaml(policy("legacy", """
inject:
  sidecars:
    - {name: legacy-agent, image: agent:1, native: false}
  env:
    - {name: E, value: v}
"""))
    result = run(pod(), policies=policies)
    assert names(result.pod["spec"]["containers"]) == ["app", "legacy-agent"]
    assert "restartPolicy" not in result.pod["spec"]["containers"][1]
    assert "env" not in result.pod["spec"]["containers"][1]  # injected containers get no policy env
    assert {"op": "add", "path": "/spec/containers/-",
            "value": {"name": "legacy-agent", "image": "agent:1"}} in result.patch


def test_env_to_selected_containers_and_init_containers() -> None:
    policies = policies_from_yaml(policy("sel", """
inject:
  env:
    - {name: ONLY_B, value: "1", containers: [b]}
    - {name: ALL_INIT, value: "1", includeInitContainers: true}
"""))
    given = pod({"name": "a", "image": "a"}, {"name": "b", "image": "b"})
    given["spec"]["initContainers"] = [{"name": "setup", "image": "s"}]
    out = run(given, policies=policies).pod
    a, b = out["spec"]["containers"]
    assert env_names(a) == ["ALL_INIT"] and env_names(b) == ["ONLY_B", "ALL_INIT"]
    assert env_names(out["spec"]["initContainers"][0]) == ["ALL_INIT"]


def test_ordering_with_before_and_after_across_policies() -> None:
    policies = policies_from_yaml(
        policy("first", "priority: 1\ninject:\n  sidecars: [{name: proxy, image: p, after: [certs]}]\n"),
        policy("second", "priority: 2\ninject:\n  initContainers: [{name: certs, image: c}]\n"),
        policy("third", "priority: 3\ninject:\n  initContainers: [{name: early, image: e, before: [certs]}]\n"),
    )
    out = run(pod(), policies=policies).pod
    assert names(out["spec"]["initContainers"]) == ["early", "certs", "proxy"]


def test_ordering_cycle_is_a_load_error() -> None:
    with pytest.raises(PolicyLoadError, match="cycle among: a, b"):
        policies_from_yaml(
            policy("one", "inject:\n  initContainers: [{name: a, image: x, after: [b]}]\n"),
            policy("two", "inject:\n  initContainers: [{name: b, image: x, after: [a]}]\n"))


def test_ordering_reference_to_unknown_container_is_a_load_error() -> None:
    with pytest.raises(PolicyLoadError, match="names 'ghost'"):
        policies_from_yaml(policy("one", "inject:\n  initContainers: [{name: a, image: x, before: [ghost]}]\n"))


def test_templates_with_fallbacks_and_defaults() -> None:
    policies = policies_from_yaml(policy("tpl", """
inject:
  env:
    - {name: TEAM, value: "{{ labels['team'] | annotations['owner'] | 'unowned' }}"}
    - {name: WHERE, value: "{{ namespace }}/{{ serviceAccountName }}/{{ workload.kind }}"}
  annotations:
    example.com/owner: "{{ workload.name }}"
"""))
    out = run(pod(annotations={"owner": "payments"}), namespace="shop", policies=policies).pod
    env = {e["name"]: e["value"] for e in out["spec"]["containers"][0]["env"]}
    assert env == {"TEAM": "payments", "WHERE": "shop/default/Pod"}
    assert out["metadata"]["annotations"]["example.com/owner"] == "p"
    out = run(pod(), policies=policies).pod
    assert out["spec"]["containers"][0]["env"][0]["value"] == "unowned"


@pytest.mark.parametrize("bad", ["{{ spec.nodeName }}", "{{ labels[app] }}", "{{ }}", "{{ namespace",
                                 "{{ __import__('os') }}"])
def test_unknown_template_references_fail_at_load(bad: str) -> None:
    with pytest.raises(PolicyLoadError) as info:
        policies_from_yaml(policy("tpl", f"inject:\n  env: [{{name: X, value: \"{bad}\"}}]\n"))
    assert "p0.yaml" in str(info.value) and "tpl/spec.inject" in str(info.value)


def test_shadow_mode_warns_and_changes_nothing() -> None:
    policies = policies_from_yaml(policy("new-agent", """
mode: Shadow
inject:
  sidecars: [{name: agent, image: agent:1}]
  env: [{name: AGENT, value: "on"}]
"""))
    result = run(pod(), policies=policies)
    assert result.patch == []
    assert result.shadowed == ("new-agent",) and result.applied == ()
    assert result.warnings == ["shadow policy new-agent would add containers agent; env AGENT to 1 container(s)"]


def test_shadow_mode_reports_a_would_be_denial() -> None:
    policies = policies_from_yaml(policy("new-agent", "mode: Shadow\ninject:\n  sidecars: [{name: app, image: x}]\n"))
    result = run(pod(), policies=policies)
    assert result.denial is None and result.patch == []
    assert "would deny" in result.warnings[0]


OPT_IN = policy("debugger", "optIn: true\ninject:\n  env: [{name: DEBUG, value: '1'}]\n")


def test_opt_in_policy_applies_only_when_asked() -> None:
    policies = policies_from_yaml(OPT_IN)
    assert run(pod(), policies=policies).patch == []
    out = run(pod(annotations={"runtime.platform.io/inject-debugger": "true"}), policies=policies).pod
    assert env_names(out["spec"]["containers"][0]) == ["DEBUG"]


SELECTOR = policy("sel", """
match:
  namespaces: {include: ["team-*"], exclude: ["team-secret"]}
  podSelector:
    matchLabels: {tier: web}
    matchExpressions:
      - {key: env, operator: In, values: [prod, staging]}
      - {key: legacy, operator: DoesNotExist}
      - {key: track, operator: NotIn, values: [canary]}
      - {key: app, operator: Exists}
inject:
  labels: {selected: "yes"}
""")


@pytest.mark.parametrize(("namespace", "labels", "selected"), [
    ("team-a", {"tier": "web", "env": "prod", "app": "x"}, True),
    ("team-a", {"tier": "web", "env": "prod", "app": "x", "track": "stable"}, True),
    ("team-a", {"tier": "web", "env": "prod", "app": "x", "track": "canary"}, False),
    ("team-a", {"tier": "web", "env": "dev", "app": "x"}, False),
    ("team-a", {"tier": "web", "env": "prod"}, False),
    ("team-a", {"tier": "web", "env": "prod", "app": "x", "legacy": ""}, False),
    ("team-a", {"tier": "api", "env": "prod", "app": "x"}, False),
    ("team-secret", {"tier": "web", "env": "prod", "app": "x"}, False),
    ("default", {"tier": "web", "env": "prod", "app": "x"}, False),
])
def test_selector_and_namespace_semantics(namespace: str, labels: dict, selected: bool) -> None:
    out = run(pod(labels=labels), namespace=namespace, policies=policies_from_yaml(SELECTOR)).pod
    assert (out["metadata"]["labels"].get("selected") == "yes") is selected


def test_mount_without_a_volume_is_denied_clearly() -> None:
    policies = policies_from_yaml(policy("m", "inject:\n  volumeMounts: [{name: missing, mountPath: /m}]\n"))
    result = run(pod(), policies=policies)
    assert result.denial and "invalid" in result.denial and "'missing'" in result.denial


@pytest.mark.parametrize(("text", "escaped"), [("a/b", "a~1b"), ("a~b", "a~0b"), ("~/", "~0~1"),
                                               ("~1", "~01")])
def test_pointer_escaping(text: str, escaped: str) -> None:
    assert escape(text) == escaped


@pytest.mark.parametrize(("document", "message"), [
    ("inject:\n  envv: []\n", "p0.yaml:7: bad/spec.inject.envv: unknown field"),
    ("inject:\n  env: [{name: X}]\n", "exactly one of value and valueFrom"),
    ("inject:\n  volumes: [{name: v, source: {}}]\n", "exactly one source"),
    ("inject:\n  sidecars: [{name: Bad_Name, image: x}]\n", "spec.inject.sidecars[0].name"),
    ("inject:\n  initContainers: [{name: a, image: x}, {name: a, image: y}]\n", "duplicate container"),
    ("inject:\n  env: [{name: X, value: a}, {name: X, value: b}]\n", "env var 'X' is injected twice"),
    ("inject:\n  env: [{name: X, value: a, containers: [app, b]}, {name: X, value: b, containers: [b]}]\n",
     "env var 'X' is injected twice"),
    ("inject:\n  volumeMounts: [{name: v, mountPath: /m}, {name: w, mountPath: /m, containers: [app]}]\n",
     "mount path '/m' is injected twice"),
    ("match: {podSelector: {matchExpressions: [{key: a, operator: In}]}}\ninject: {}\n", "needs at least one value"),
    # A selector no pod's labels could satisfy would silently never match.
    ("match: {podSelector: {matchLabels: {app: \"web \"}}}\ninject: {}\n",
     "spec.match.podSelector.matchLabels.app: label 'app': a label value is at most 63 characters"),
    ("match: {podSelector: {matchLabels: {\"team name\": web}}}\ninject: {}\n", "invalid label/annotation key"),
    ("match: {podSelector: {matchExpressions: [{key: tier, operator: In, values: [web, \"api,db\"]}]}}\n"
     "inject: {}\n", "label 'tier': a label value is at most 63 characters"),
    ("match: {podSelector: {matchExpressions: [{key: \"-tier\", operator: Exists}]}}\ninject: {}\n",
     "invalid label/annotation key '-tier'"),
    ("inject:\n  annotations: {runtime.platform.io/status: x}\n", "reserved"),
    ("priority: true\ninject: {}\n", "bad/spec.priority: Input should be a valid integer"),
])
def test_policy_errors_name_file_line_policy_and_field(document: str, message: str) -> None:
    with pytest.raises(PolicyLoadError) as info:
        policies_from_yaml(policy("bad", document))
    assert message in str(info.value)


def test_invalid_yaml_names_file_and_line() -> None:
    with pytest.raises(PolicyLoadError, match=r"p0.yaml:3: invalid YAML"):
        policies_from_yaml("apiVersion: x\nkind: y\n  bad: indent\n")


VALIDATION_HEAD = "apiVersion: runtime.platform.io/v1\nkind: ValidationPolicy\nmetadata: {name: v}\n"


@pytest.mark.parametrize(("spec", "error"), [
    # The one a reviewer would miss: the second action wins and weakens the policy.
    ("spec:\n  action: Enforce\n  rules: [{images: {forbidLatest: true}}]\n  action: Audit\n",
     "p0.yaml:7: duplicate key 'action' (first on line 5)"),
    ("spec:\n  action: Enforce\n  rules: [{images: {forbidLatest: true, forbidLatest: false}}]\n",
     "p0.yaml:6: duplicate key 'forbidLatest' (first on line 6)"),
    ("spec:\n  action: Enforce\n  rules:\n    - images: {forbidLatest: true}\n"
     "      images: {forbidLatest: false}\n", "p0.yaml:8: duplicate key 'images' (first on line 7)"),
])
def test_a_key_given_twice_is_a_load_error_naming_its_lines(spec: str, error: str) -> None:
    with pytest.raises(PolicyLoadError) as info:
        policies_from_yaml(VALIDATION_HEAD + spec)
    assert error in str(info.value)
    assert len(info.value.errors) == 1


def test_merge_keys_may_be_overridden_and_aliases_are_not_repeats() -> None:
    loaded = policies_from_yaml(VALIDATION_HEAD + (
        "spec:\n  action: Enforce\n  match: &m {namespaces: {exclude: [a]}}\n"
        "  rules:\n    - images: &i {forbidLatest: true}\n    - name: again\n      images: *i\n"
        "  exceptions:\n    - <<: {namespaces: [a], reason: old}\n      reason: why\n"))
    assert loaded.validation[0].spec.exceptions[0].reason == "why"


def _laughs(depth: int) -> str:
    """A list nesting ten aliases of the one below it, `depth` times: 10 ** depth values."""
    inner = "&l0 [" + ", ".join(["lol"] * 10) + "]"
    for i in range(1, depth + 1):
        inner = f"&l{i} [{inner}, " + ", ".join([f"*l{i - 1}"] * 9) + "]"
    return inner


SIDECAR_PROBE = policy("p", "inject:\n  sidecars:\n    - name: s\n      image: busybox:1.36\n"
                            "      readinessProbe: {exec: {command: COMMAND}}\n")


def test_aliases_expanding_past_the_limit_are_refused_not_expanded() -> None:
    # 10 ** 6 values from a file of about 1 KB; one level more would take minutes to load.
    with pytest.raises(PolicyLoadError, match=r"p0.yaml:2: aliases expand this document to more than 100,000 values"):
        policies_from_yaml(SIDECAR_PROBE.replace("COMMAND", _laughs(6)))
    loaded = policies_from_yaml(SIDECAR_PROBE.replace("COMMAND", _laughs(3)))  # 1,000 values is fine
    assert loaded.injectors[0].name == "p"


def test_an_alias_inside_its_own_anchor_is_a_load_error() -> None:
    with pytest.raises(PolicyLoadError, match=r"p0.yaml:2: an alias refers to a node that contains it"):
        policies_from_yaml(SIDECAR_PROBE.replace("{exec: {command: COMMAND}}", "&probe {exec: {command: [x]}, "
                                                                                "again: *probe}"))


def test_a_policy_reading_labels_another_injects_is_still_a_fixed_point() -> None:
    policies = policies_from_yaml(
        policy("a", "priority: 1\ninject:\n  labels: {team: \"{{ namespace }}\", mesh: \"on\"}\n"),
        policy("b", "priority: 2\nmatch: {podSelector: {matchLabels: {mesh: \"on\"}}}\n"
                    "inject:\n  env: [{name: TEAM, value: \"{{ labels['team'] | 'none' }}\"}]\n"),
        policy("c", "priority: 3\ninject:\n  env: [{name: TEAM2, value: \"{{ labels['team'] | 'none' }}\"}]\n"))
    out = run(pod(), namespace="shop", policies=policies).pod  # run() asserts the second pass is empty
    assert out["metadata"]["labels"] == {"team": "shop", "mesh": "on"}
    assert env_names(out["spec"]["containers"][0]) == ["TEAM2"]  # b matched only the pod as written
    assert out["spec"]["containers"][0]["env"][0]["value"] == "none"


def test_replace_alongside_other_conflicts_is_a_fixed_point() -> None:
    policies = policies_from_yaml(policy("mix", """
inject:
  env:
    - {name: FOO, value: policy, onConflict: Replace}
    - {name: BAR, value: policy}
  labels: {team: platform}
"""))
    given = pod({"name": "app", "image": "a", "env": [{"name": "FOO", "value": "u"}, {"name": "BAR", "value": "u"}]},
                labels={"team": "mine"})
    run(given, policies=policies)  # asserts that a second pass adds nothing


def test_unreadable_ledger_shapes_are_ignored_not_fatal() -> None:
    from webhook.engine.ledger import LedgerError, parse_ledger
    for text in ('{"version":1,"policies":5}', '{"version":1,"policies":[{"name":"x","env":[]}]}', "[]", "1"):
        with pytest.raises(LedgerError):
            parse_ledger(text)
    result = run(pod(annotations={LEDGER_ANNOTATION: '{"version":1,"policies":true}'}),
                 policies=policies_from_yaml(policy("p", "inject:\n  labels: {a: b}\n")))
    assert "unreadable" in result.warnings[0]


@pytest.mark.parametrize(("job", "kind", "name"), [
    ("nightly-29410560", "CronJob", "nightly"), ("migrate-20240115", "Job", "migrate-20240115"),
    ("backup", "Job", "backup")])
def test_cronjob_is_told_apart_by_a_plausible_schedule_suffix(job: str, kind: str, name: str) -> None:
    from webhook.engine.pod import workload_of
    detected, workload_name = workload_of({"ownerReferences": [{"kind": "Job", "name": job, "controller": True}]}, {})
    assert (detected.value, workload_name) == (kind, name)


def test_what_an_older_policy_set_injected_and_this_one_does_not_is_removed() -> None:
    """A pod can come back with an earlier pass's additions (reinvocation after a policy edit,
    or a pod re-created from `kubectl get -o yaml`). What the ledger says we added and the
    serving set no longer adds is stripped, and the patch must remove the fields it emptied."""
    older = policies_from_yaml(policy("shared", """
inject:
  env: [{name: REGION, value: eu}]
  volumes: [{name: scratch, source: {emptyDir: {}}}]
  volumeMounts: [{name: scratch, mountPath: /scratch}]
"""))
    first = run(pod({"name": "app", "image": "a", "ports": [{"containerPort": 80}]},
                    {"name": "side", "image": "b", "env": [{"name": "OWN", "value": "1"}]}), policies=older)
    assert [env_names(c) for c in first.pod["spec"]["containers"]] == [["REGION"], ["REGION", "OWN"]]

    current = policies_from_yaml(policy("shared", "inject:\n  labels: {team: platform}\n"))
    result = run(first.pod, policies=current)  # the patch, applied to the returning pod, gives result.pod
    app, side = result.pod["spec"]["containers"]
    assert app == {"name": "app", "image": "a", "ports": [{"containerPort": 80}]}
    assert side == {"name": "side", "image": "b", "env": [{"name": "OWN", "value": "1"}]}
    assert result.pod["spec"].get("volumes", []) == []
    removed = sorted(op["path"] for op in result.patch if op["op"] == "remove")
    assert removed == ["/spec/containers/0/env", "/spec/containers/0/volumeMounts",
                       "/spec/containers/1/volumeMounts"], result.patch


def test_one_env_name_may_go_to_different_containers_with_different_values() -> None:
    policies = policies_from_yaml(policy("split", """
inject:
  env:
    - {name: ROLE, value: web, containers: [app]}
    - {name: ROLE, value: worker, containers: [side]}
"""))
    result = run(pod({"name": "app", "image": "a"}, {"name": "side", "image": "b"}), policies=policies)
    assert [c["env"] for c in result.pod["spec"]["containers"]] == [
        [{"name": "ROLE", "value": "web"}], [{"name": "ROLE", "value": "worker"}]]


def test_a_value_unequal_to_itself_is_left_alone() -> None:
    """YAML's `.nan` reaches the engine through the offline `webhook mutate` (orjson refuses
    NaN on the wire). A field injection did not touch must get no operation, even one whose
    value is not equal to itself, or the patch would not be a fixed point."""
    result = run(pod({"name": "app", "image": "a", "x-weight": float("nan")}),
                 policies=policies_from_yaml(policy("env", ENV_X % "Keep")))
    assert [op["path"] for op in result.patch if op["path"].startswith("/spec/containers/0")] == \
        ["/spec/containers/0/env"]


PLATFORM_X = """
inject:
  env:
    - {name: PLATFORM, value: p}
    - {name: X, value: policy, onConflict: %s}
"""
# X referenced by a var defined after it: the reference holds only while X stays before it.
OWN_ENV = [{"name": "A", "value": "a"}, {"name": "X", "value": "user"}, {"name": "B", "value": "$(X)-$(PLATFORM)"}]


def ledger_of(result_pod: dict) -> dict:
    return json.loads(result_pod["metadata"]["annotations"][LEDGER_ANNOTATION])


def test_env_replace_keeps_the_replaced_vars_place() -> None:
    result = run(pod({"name": "app", "image": "a", "env": OWN_ENV}),
                 policies=policies_from_yaml(policy("env", PLATFORM_X % "Replace")))
    container = result.pod["spec"]["containers"][0]
    assert container["env"] == [{"name": "PLATFORM", "value": "p"}, {"name": "A", "value": "a"},
                                {"name": "X", "value": "policy"}, {"name": "B", "value": "$(X)-$(PLATFORM)"}]
    assert runtime_env(container)["B"] == "policy-p"
    assert [op for op in result.patch if op["path"].startswith("/spec/")] == [
        {"op": "add", "path": "/spec/containers/0/env/0", "value": {"name": "PLATFORM", "value": "p"}},
        {"op": "replace", "path": "/spec/containers/0/env/2", "value": {"name": "X", "value": "policy"}}]
    recorded = ledger_of(result.pod)["policies"][0]
    assert recorded["env"] == {"app": ["PLATFORM", "X"]}
    assert recorded["conflicts"] == [{"kind": "env", "name": "X", "resolution": "Replace", "container": "app"}]


def test_env_keep_leaves_the_pods_var_in_its_place() -> None:
    result = run(pod({"name": "app", "image": "a", "env": OWN_ENV}),
                 policies=policies_from_yaml(policy("env", PLATFORM_X % "Keep")))
    container = result.pod["spec"]["containers"][0]
    assert container["env"] == [{"name": "PLATFORM", "value": "p"}, *OWN_ENV]
    assert runtime_env(container)["B"] == "user-p"
    recorded = ledger_of(result.pod)["policies"][0]
    assert recorded["env"] == {"app": ["PLATFORM"]}
    assert recorded["conflicts"] == [{"kind": "env", "name": "X", "resolution": "Keep", "container": "app"}]


def test_env_from_several_policies_goes_first_in_the_policies_order() -> None:
    policies = policies_from_yaml(
        policy("first", "priority: 1\ninject:\n  env: [{name: ONE, value: '1'}, {name: TWO, value: '2'}]\n"),
        policy("second", "priority: 2\ninject:\n  env: [{name: THREE, value: '$(ONE)$(TWO)'}]\n"))
    result = run(pod({"name": "app", "image": "a", "envFrom": [{"configMapRef": {"name": "cm"}}],
                      "env": [{"name": "OWN", "value": "$(THREE)"}]}), policies=policies)
    container = result.pod["spec"]["containers"][0]
    assert env_names(container) == ["ONE", "TWO", "THREE", "OWN"]
    assert runtime_env(container)["OWN"] == "12"
    assert container["envFrom"] == [{"configMapRef": {"name": "cm"}}]  # envFrom is left alone


@pytest.mark.parametrize("user_x", [False, True])
def test_env_replaced_by_a_later_policy_stays_put_on_reinvocation(user_x: bool) -> None:
    """A later policy replacing X (the pod's own, or an earlier policy's) in place; `run`
    checks that a second pass over the patched pod adds nothing."""
    policies = policies_from_yaml(
        policy("early", "priority: 1\ninject:\n  env: [{name: X, value: early, onConflict: Replace}]\n"),
        policy("late", "priority: 2\ninject:\n  env: [{name: Y, value: y}, "
                       "{name: X, value: late, onConflict: Replace}]\n"))
    own = OWN_ENV if user_x else [e for e in OWN_ENV if e["name"] != "X"]
    result = run(pod({"name": "app", "image": "a", "env": own}), policies=policies)
    env = result.pod["spec"]["containers"][0]["env"]
    expected = (["Y", "A", "X", "B"] if user_x else ["X", "Y", "A", "B"])
    assert [e["name"] for e in env] == expected
    assert {e["name"]: e["value"] for e in env}["X"] == "late"


@pytest.mark.parametrize(("old", "new", "ops"), [
    ([1, 2], [0, 1, 2], [("add", "/l/0")]),
    ([1, 2], [1, 2, 3], [("add", "/l/-")]),
    ([1, 2, 3], [0, 1, 9, 3], [("add", "/l/0"), ("replace", "/l/2")]),
    ([1], [0, 9], [("add", "/l/0"), ("replace", "/l/1")]),
    ([1, 2, 3], [0, 8, 9, 3], [("replace", "/l")]),   # most elements changed: one replacement
    ([1, 2, 3], [1, 3], [("replace", "/l")]),
])
def test_list_ops_insert_at_the_front_and_replace_in_place(old: list, new: list, ops: list) -> None:
    import jsonpatch

    from webhook.engine.patch import list_ops
    patch = list_ops("/l", old, new)
    assert [(op["op"], op["path"]) for op in patch] == ops
    assert jsonpatch.apply_patch({"l": old}, patch) == {"l": new}


def test_a_replaced_env_var_the_policy_no_longer_injects_stays_in_place() -> None:
    """The pod's own value was replaced and is not kept anywhere: when the serving set stops
    injecting the var, the last injected value stays where the pod had its var (removing it
    would break the pod's later references), and the ledger no longer names it."""
    first = run(pod({"name": "app", "image": "a", "env": OWN_ENV}),
                policies=policies_from_yaml(policy("env", PLATFORM_X % "Replace")))
    current = policies_from_yaml(policy("env", "inject:\n  env: [{name: PLATFORM, value: p}]\n"))
    result = run(first.pod, policies=current)
    assert result.pod["spec"]["containers"][0]["env"] == [
        {"name": "PLATFORM", "value": "p"}, {"name": "A", "value": "a"},
        {"name": "X", "value": "policy"}, {"name": "B", "value": "$(X)-$(PLATFORM)"}]
    assert ledger_of(result.pod)["policies"][0] == {
        "name": "env", "revision": ledger_of(result.pod)["policies"][0]["revision"], "env": {"app": ["PLATFORM"]}}


@pytest.mark.parametrize("item", ["env: [{name: \"X_{{ labels['app'] }}\", value: '1'}]",
                                  "volumeMounts: [{name: v, mountPath: \"/data/{{ namespace }}\"}]"])
def test_a_template_in_an_env_name_or_mount_path_is_a_load_error(item: str) -> None:
    # Both identify the item in the ledger before rendering: on reinvocation the rendered
    # var was injected a second time, and the rendered mount path denied the pod.
    with pytest.raises(PolicyLoadError, match="cannot hold a template"):
        policies_from_yaml(policy("tpl", f"inject:\n  volumes: [{{name: v, source: {{emptyDir: {{}}}}}}]\n  {item}\n"))


@pytest.mark.parametrize("value", ["hello world", "-edge", "x" * 64])
def test_an_invalid_label_value_is_a_load_error(value: str) -> None:
    # The API server refuses the pod: every pod the policy matches would fail to be created.
    with pytest.raises(PolicyLoadError, match="label 'team'"):
        policies_from_yaml(policy("lbl", f"inject:\n  labels: {{team: '{value}'}}\n"))


def test_a_label_value_rendered_invalid_is_a_clear_denial() -> None:
    policies = policies_from_yaml(policy("lbl", """
inject:
  labels: {owner: "{{ annotations['owner'] | 'nobody' }}"}
"""))
    result = run(pod(annotations={"owner": "Jane Doe"}), policies=policies)
    assert result.denial is not None
    assert "policy lbl sets label 'owner' to 'Jane Doe'" in result.denial
    assert run(pod(annotations={"owner": "jane"}), policies=policies).pod["metadata"]["labels"] == {"owner": "jane"}
    assert run(pod(), policies=policies).pod["metadata"]["labels"] == {"owner": "nobody"}


@pytest.mark.parametrize("value", ["8080", "true", "1.5"])
def test_an_injected_containers_env_value_must_be_a_string(value: str) -> None:
    # Passed through as written, the API server refused every pod that got the container.
    with pytest.raises(PolicyLoadError, match="env var 'PORT': value must be a string"):
        policies_from_yaml(policy("sc", f"inject:\n  sidecars: [{{name: s, image: i, env: [{{name: PORT, value: {value}}}]}}]\n"))
    policies_from_yaml(policy("sc", "inject:\n  sidecars: [{name: s, image: i, env: [{name: PORT, value: '8080'}]}]\n"))


def test_a_pod_value_reaches_the_container_as_written_where_the_kubelet_expands() -> None:
    # The kubelet reads `$$` as `$` and `$(VAR)` as VAR's value in command, args and env
    # values: an annotation's text put there unescaped arrived changed (or read another var).
    policies = policies_from_yaml(policy("tpl", """
inject:
  env:
    - {name: SECRET, value: hidden}
    - {name: NOTE, value: "{{ annotations['note'] }} $(SECRET)"}
  sidecars:
    - name: agent
      image: i
      args: ["--note={{ annotations['note'] }}"]
      env: [{name: NOTE, value: "{{ annotations['note'] | 'none' }}"}]
  annotations:
    example.com/note: "{{ annotations['note'] }}"
"""))
    note = "price $$5 $(SECRET)"
    out = run(pod(annotations={"note": note}), policies=policies).pod
    assert runtime_env(out["spec"]["containers"][0])["NOTE"] == f"{note} hidden"  # the policy's own $(SECRET) expands
    agent = out["spec"]["initContainers"][0]
    assert runtime_env(agent)["NOTE"] == note
    assert expand(agent["args"][0], {"SECRET": "hidden"}) == f"--note={note}"
    assert out["metadata"]["annotations"]["example.com/note"] == note  # not expanded there: as is


def test_before_and_after_on_a_classic_sidecar_are_checked() -> None:
    # Both were silently ignored: a classic sidecar starts after every init container.
    head = "inject:\n  initContainers: [{name: a, image: i}]\n  sidecars: [{name: s, image: i, native: false, %s}]\n"
    with pytest.raises(PolicyLoadError, match=r"native: false.*before: \['a'\] cannot hold"):
        policies_from_yaml(policy("sc", head % "before: [a]"))
    with pytest.raises(PolicyLoadError, match="s.after names 'ghost'"):
        policies_from_yaml(policy("sc", head % "after: [ghost]"))
    policies_from_yaml(policy("sc", head % "after: [a]"))


def test_replacing_the_pods_only_app_container_with_a_native_sidecar_is_denied() -> None:
    # The patch left spec.containers empty, which the API server refuses.
    policies = policies_from_yaml(policy("sc", "inject:\n  sidecars: [{name: app, image: i, onConflict: Replace}]\n"))
    result = run(pod(), policies=policies)
    assert result.denial is not None and "spec.containers would be left empty" in result.denial
    two = run(pod({"name": "app", "image": "a"}, {"name": "web", "image": "w"}), policies=policies)
    assert two.denial is None and names(two.pod["spec"]["containers"]) == ["web"]
