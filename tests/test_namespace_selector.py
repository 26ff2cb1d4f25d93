"""`match.namespaceSelector`: the schema, the engine (both policy kinds), explain and the
offline tools' label sources. No HTTP here: the server and its cache are tested in
test_namespace_cache.py and test_namespace_selector_server.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine_helpers import inject, policies_from_yaml, run
from tests.test_cli import webhook, write
from tests.test_validate_helpers import container, pod, policy, policy_set, request
from webhook.engine.match import mismatch
from webhook.engine.mutate import mutate
from webhook.engine.namespaces import LabelsUnknown, NamespaceLabelsUnavailable
from webhook.engine.pod import pod_facts
from webhook.engine.validate import validate
from webhook.cli.offline import NamespaceLabelSource, parse_namespace_labels
from webhook.policy.common import Match
from webhook.policy.errors import PolicyLoadError
from webhook.policy.loader import load_policy_sources

INJECT = """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: payments-audit}
spec:
  match:
    namespaces: {exclude: [payments-sandbox]}
    namespaceSelector:
      matchLabels: {team: payments}
      matchExpressions: [{key: env, operator: In, values: [prod, staging]}]
  inject:
    env: [{name: AUDIT, value: "on"}]
"""
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
       "spec": {"containers": [{"name": "app", "image": "registry.example.com/web:1.0"}]}}
PAYMENTS = {"team": "payments", "env": "prod"}


def _match(**selector: Any) -> Match:
    return Match.model_validate({"namespaces": {"include": ["pay-*"]}, "namespaceSelector": selector})


@pytest.mark.parametrize(("selector", "namespace", "labels", "missed"), [
    ({"matchLabels": {"team": "payments"}}, "pay-1", {"team": "payments"}, None),
    ({"matchLabels": {"team": "payments"}}, "pay-1", {"team": "shop"},
     "namespaceSelector does not match namespace 'pay-1' (its labels: team=shop)"),
    ({"matchLabels": {"team": "payments"}}, "pay-1", {},
     "namespaceSelector does not match namespace 'pay-1' (its labels: none)"),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, "pay-1", {}, None),
    ({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]}, "pay-1", {"env": "dev"},
     "namespaceSelector does not match namespace 'pay-1' (its labels: env=dev)"),
    ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, "pay-1", {"env": ""}, None),
    ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, "pay-1", {"env": "x"},
     "namespaceSelector does not match namespace 'pay-1' (its labels: env=x)"),
    ({}, "pay-1", {}, None),   # an empty selector selects every namespace, as in Kubernetes
    # the name globs must hold too, whatever the labels
    ({"matchLabels": {"team": "payments"}}, "shop", {"team": "payments"},
     "namespace 'shop' is not in include ['pay-*']"),
])
def test_namespace_selector_table(selector: dict[str, Any], namespace: str, labels: dict[str, str],
                                  missed: str | None) -> None:
    facts = pod_facts(POD, namespace=namespace, namespace_labels=labels)
    assert mismatch(_match(**selector), facts) == missed


def test_unknown_labels_raise_instead_of_missing_but_only_when_the_selector_is_reached() -> None:
    match = _match(matchLabels={"team": "payments"})
    with pytest.raises(NamespaceLabelsUnavailable) as caught:
        mismatch(match, pod_facts(POD, namespace="pay-1", namespace_labels=LabelsUnknown("cache down")))
    assert caught.value.namespace == "pay-1" and "cache down" in str(caught.value)
    # A namespace the name globs leave out needs no labels: decided as before.
    assert mismatch(match, pod_facts(POD, namespace="kube-system")) == "namespace 'kube-system' is not in include ['pay-*']"
    # A policy without a selector never asks for labels.
    assert mismatch(Match(), pod_facts(POD, namespace="pay-1")) is None


@pytest.mark.parametrize(("selector", "error"), [
    ({"matchLabels": {"team ": "payments"}}, "invalid label/annotation key"),
    ({"matchLabels": {"team": "pay ments"}}, "label 'team'"),
    ({"matchExpressions": [{"key": "env", "operator": "In"}]}, "needs at least one value"),
    ({"matchExpressions": [{"key": "env", "operator": "Exists", "values": ["a"]}]}, "takes no values"),
    ({"matchLabel": {"team": "payments"}}, "matchLabel"),
])
def test_a_selector_no_namespace_could_match_is_a_load_error(selector: dict[str, Any], error: str) -> None:
    doc = yaml.safe_load(INJECT)
    doc["spec"]["match"]["namespaceSelector"] = selector
    with pytest.raises(PolicyLoadError) as caught:
        load_policy_sources({"p.yaml": yaml.safe_dump(doc).encode()})
    assert error in str(caught.value)
    assert "namespaceSelector" in str(caught.value)


def test_injection_applies_only_in_namespaces_whose_labels_match() -> None:
    policies = policies_from_yaml(INJECT)
    applied = run_with_labels(policies, "checkout", PAYMENTS)
    assert applied.pod["spec"]["containers"][0]["env"] == [{"name": "AUDIT", "value": "on"}]
    for labels, why in (({"team": "shop", "env": "prod"}, "its labels: env=prod, team=shop"),
                        ({"team": "payments", "env": "dev"}, "its labels: env=dev, team=payments")):
        missed = run_with_labels(policies, "checkout", labels)
        assert missed.patch == []
        assert why in missed.outcomes[0].reason
    # The name glob's exclude holds even where the labels match.
    excluded = run_with_labels(policies, "payments-sandbox", PAYMENTS)
    assert excluded.patch == [] and "excluded by 'payments-sandbox'" in excluded.outcomes[0].reason


def run_with_labels(policies: Any, namespace: str, labels: dict[str, str]) -> Any:
    result = inject(POD, namespace=namespace, policies=policies, namespace_labels=labels)
    # A second pass over the injected pod adds nothing (the reinvocation rule holds).
    assert inject(result.pod, namespace=namespace, policies=policies, namespace_labels=labels).patch == []
    return result


def test_mutate_raises_for_unknown_labels_so_the_caller_applies_its_failure_rule() -> None:
    policies = policies_from_yaml(INJECT)
    with pytest.raises(NamespaceLabelsUnavailable):
        mutate(request(POD, namespace="checkout"), policies)
    # The shipped policies have no selector: no labels are needed.
    assert run(POD, namespace="checkout").denial is None


def test_validation_policies_select_namespaces_by_label_too() -> None:
    policies = policy_set(policy("prod-images", [{"images": {"allowedRegistries": ["registry.prod.example.com"]}}],
                                 match={"namespaceSelector": {"matchLabels": {"env": "prod"}}}))
    obj = pod(container(image="docker.io/library/nginx:1.27"))
    denied = validate(request(obj, namespace="shop"), policies, namespace_labels={"env": "prod"})
    assert not denied.allowed and denied.violations[0].policy == "prod-images"
    assert validate(request(obj, namespace="shop"), policies, namespace_labels={"env": "dev"}).allowed
    with pytest.raises(NamespaceLabelsUnavailable):
        validate(request(obj, namespace="shop"), policies)


# -- offline label sources ------------------------------------------------------------------

def test_namespace_labels_flag_parsing() -> None:
    assert parse_namespace_labels("team=payments, env=prod") == PAYMENTS
    assert parse_namespace_labels("") == {}
    assert parse_namespace_labels("empty=") == {"empty": ""}
    for bad in ("team", "te am=x", "team=pay ments", "team=" + "x" * 64):
        with pytest.raises(ValueError):
            parse_namespace_labels(bad)


def test_a_namespace_object_gives_its_own_labels_and_the_flag_the_rest() -> None:
    source = NamespaceLabelSource(objects={"checkout": {"team": "payments"}}, given={"team": "shop"})
    # The API server labels every namespace with its name; offline labels get it too.
    assert source("checkout") == {"team": "payments", "kubernetes.io/metadata.name": "checkout"}
    assert source("other") == {"team": "shop", "kubernetes.io/metadata.name": "other"}
    unknown = NamespaceLabelSource()("checkout")
    assert isinstance(unknown, LabelsUnknown) and "--namespace-labels" in unknown.reason


def _policy_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "audit.yaml").write_text(INJECT)
    return directory


@pytest.mark.process
def test_offline_mutate_takes_labels_from_the_flag_or_namespace_objects(tmp_path: Path) -> None:
    policies = _policy_dir(tmp_path)
    pod_file = write(tmp_path / "pod.yaml", {**POD, "metadata": {"name": "web", "namespace": "checkout"}})
    flagged = webhook("mutate", "-f", str(pod_file), "--policies", str(policies), "-o", "json",
                      "--namespace-labels", "team=payments,env=prod")
    assert flagged.returncode == 0, flagged.stderr
    assert yaml.safe_load(flagged.stdout)["spec"]["containers"][0]["env"] == [{"name": "AUDIT", "value": "on"}]

    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "checkout", "labels": PAYMENTS}}
    both = write(tmp_path / "both.yaml", namespace, {**POD, "metadata": {"name": "web", "namespace": "checkout"}})
    from_object = webhook("mutate", "-f", str(both), "--policies", str(policies), "-o", "json")
    assert from_object.returncode == 0, from_object.stderr
    items = yaml.safe_load(from_object.stdout)["items"]
    assert items[0] == namespace   # passed through unchanged
    assert items[1]["spec"]["containers"][0]["env"] == [{"name": "AUDIT", "value": "on"}]


@pytest.mark.process
def test_offline_tools_refuse_to_guess_unknown_labels(tmp_path: Path) -> None:
    policies = _policy_dir(tmp_path)
    pod_file = write(tmp_path / "pod.yaml", POD)
    for command in ("mutate", "validate", "explain"):
        result = webhook(command, "-f", str(pod_file), "--policies", str(policies), "-n", "checkout")
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "labels of namespace 'checkout' are not known" in result.stderr
        assert "--namespace-labels" in result.stderr
    bad = webhook("mutate", "-f", str(pod_file), "--policies", str(policies), "--namespace-labels", "team")
    assert bad.returncode == 2 and "'team' is not key=value" in bad.stderr


@pytest.mark.process
def test_explain_names_the_namespace_labels_when_the_selector_misses(tmp_path: Path) -> None:
    policies = _policy_dir(tmp_path)
    pod_file = write(tmp_path / "pod.yaml", POD)
    result = webhook("explain", "-f", str(pod_file), "--policies", str(policies), "-n", "checkout",
                     "--namespace-labels", "team=payments,env=dev")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Pod/web (namespace checkout [env=dev, kubernetes.io/metadata.name=checkout, "
                                    "team=payments], workload Pod/web")
    assert ("payments-audit  not applied: namespaceSelector does not match namespace 'checkout' "
            "(its labels: env=dev, kubernetes.io/metadata.name=checkout, team=payments)") in result.stdout


@pytest.mark.process
def test_policy_test_cases_give_namespace_labels(tmp_path: Path) -> None:
    policies = _policy_dir(tmp_path)
    case = {"name": "audited", "namespace": "checkout", "object": POD,
            "expect": {"allowed": True, "pod": {"spec": {"containers": [{"env": [{"name": "AUDIT"}]}]}}}}
    test = {"apiVersion": "runtime.platform.io/v1", "kind": "PolicyTest", "metadata": {"name": "ns"},
            "spec": {"policies": str(policies), "cases": [{**case, "namespaceLabels": PAYMENTS},
                                                          {**case, "name": "no labels"}]}}
    result = webhook("test", str(write(tmp_path / "t.yaml", test)))
    assert result.returncode == 1
    assert "PASS ns/audited" in result.stdout
    assert "FAIL ns/no labels" in result.stdout and "give the case namespaceLabels" in result.stdout


def test_policies_check_warns_about_a_namespace_selector_nothing_satisfies() -> None:
    from webhook.policy.lint import never_matches

    contradictory = Match.model_validate({"namespaceSelector": {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]},
                             {"key": "team", "operator": "Exists"},
                             {"key": "team", "operator": "DoesNotExist"}]}})
    assert never_matches(contradictory) == [
        "namespace label 'env' can take no value that every requirement allows",
        "namespace label 'team' is both required and required absent",
        "namespace label 'team' must both exist and not exist"]
    assert never_matches(_match(matchLabels={"env": "prod"})) == []


@pytest.mark.process
def test_serve_refuses_a_kubeconfig_that_does_not_exist(tmp_path: Path) -> None:
    for args, env in (((("--kubeconfig", str(tmp_path / "missing")),), {}),
                      ((), {"WEBHOOK_KUBECONFIG": str(tmp_path / "missing")})):
        result = webhook("serve", "--cert-dir", str(tmp_path), *[a for pair in args for a in pair], env=env)
        assert result.returncode == 2, result.stderr
        assert f"--kubeconfig {tmp_path / 'missing'}: no such file" in result.stderr


def test_a_container_name_is_reserved_only_where_the_selector_would_inject_it() -> None:
    """reservedContainerNames asks which injection policies would apply: their
    namespaceSelector needs the labels too (and unknown labels are not a miss)."""
    policies = policies_from_yaml("""
        apiVersion: runtime.platform.io/v1
        kind: InjectionPolicy
        metadata: {name: audit}
        spec:
          match: {namespaceSelector: {matchLabels: {team: payments}}}
          inject:
            sidecars: [{name: audit-agent, image: registry.example.com/audit:1}]
    """, """
        apiVersion: runtime.platform.io/v1
        kind: ValidationPolicy
        metadata: {name: reserved}
        spec:
          action: Enforce
          rules: [{reservedContainerNames: {}}]
    """)
    own = pod(container(), container("audit-agent"))
    denied = validate(request(own, namespace="checkout"), policies, namespace_labels={"team": "payments"})
    assert not denied.allowed and "audit-agent" in (denied.message or "")
    assert validate(request(own, namespace="shop"), policies, namespace_labels={"team": "shop"}).allowed
    with pytest.raises(NamespaceLabelsUnavailable):
        validate(request(own, namespace="shop"), policies)
