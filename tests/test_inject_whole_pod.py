"""Engine tests: the injected pod must work as a whole.

Ports that clash between an injected container and another one, policies that require
others, what the pod keeps against a policy (told as warnings), the traffic proxy's
startup order, and resources that a later admission plugin set on an injected container.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine_helpers import ROOT, SHIPPED, names, policies_from_yaml, run
from tests.test_inject_policies import policy
from webhook.engine.conflicts import MAX_VALUE_CHARS, MAX_WARNINGS
from webhook.engine.inject import inject
from webhook.engine.ledger import LEDGER_ANNOTATION
from webhook.policy.errors import PolicyLoadError
from webhook.policy.lint import lint
from webhook.policy.loader import load_policy_sources

OPT_OUT_IDENTITY = {"runtime.platform.io/inject-identity": "false"}
# The shipped policies with identity's optOut relaxed, so that a pod can leave identity out
# and the policies that require it can be seen to follow.
IDENTITY_OPTIONAL = load_policy_sources({
    path.name: path.read_bytes().replace(b"optOut: Forbidden", b"optOut: Allowed")
    for path in sorted((ROOT / "policies").glob("*.yaml"))})


def pod(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers) or [{"name": "app", "image": "a"}]}
    if init is not None:
        spec["initContainers"] = init
    if volumes is not None:
        spec["volumes"] = volumes
    metadata: dict[str, Any] = {"name": "p", "labels": labels or {"app": "checkout"}}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def app(name: str = "app", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "registry.example.com/app:1", **fields}


def ledger(result: Any) -> dict[str, Any]:
    return json.loads(result.pod["metadata"]["annotations"][LEDGER_ANNOTATION])


def outcome(result: Any, name: str) -> str:
    return next(o for o in result.outcomes if o.policy == name).reason


# --- ports ----------------------------------------------------------------------------

SIDECAR_PORT = """
inject:
  sidecars:
    - name: agent
      image: agent:1
      ports: [{containerPort: 9000%s}]
"""


@pytest.mark.parametrize(("given", "clash"), [
    (pod(app(ports=[{"containerPort": 15021}])), "port 15021/TCP"),
    (pod(app(ports=[{"containerPort": 15006, "protocol": "TCP"}])), "port 15006/TCP"),
    (pod(app(), app("metrics", ports=[{"name": "admin", "containerPort": 15021}])), "port 15021/TCP"),
    # The pod's own init containers start after the injected native sidecars, beside them.
    (pod(app(), init=[app("migrate", ports=[{"containerPort": 15021}])]), "port 15021/TCP"),
    # A native sidecar of the pod's own runs beside the proxy too.
    (pod(app(), init=[app("mesh-agent", restartPolicy="Always", ports=[{"containerPort": 15006}])]),
     "port 15006/TCP"),
])
def test_an_app_port_the_proxy_declares_is_a_denial_naming_both_containers(given: dict, clash: str) -> None:
    result = run(given)
    assert result.denial is not None and result.patch == []
    assert "policy traffic-proxy injects container 'traffic-proxy'" in result.denial
    assert clash in result.denial
    clashing = next(c["name"] for c in (*given["spec"].get("initContainers", []), *given["spec"]["containers"])
                    if c.get("ports"))
    assert f"container {clashing!r}" in result.denial
    assert outcome(result, "traffic-proxy").startswith("denied: ")


@pytest.mark.parametrize("ports", [
    [{"containerPort": 15021, "protocol": "UDP"}],       # another protocol
    [{"containerPort": 8080, "hostPort": 15021}],        # a host port is on the node, not in the pod
    [{"containerPort": 8080}],
    [{"containerPort": "15021"}, {"containerPort": True}, "15021", None],  # the API server's to refuse
])
def test_ports_that_do_not_clash_are_injected(ports: list[Any]) -> None:
    result = run(pod(app(ports=ports)))
    assert result.denial is None
    assert "traffic-proxy" in names(result.pod["spec"]["initContainers"])


def test_a_run_to_completion_init_container_never_clashes_with_what_runs_later() -> None:
    policies = policies_from_yaml(policy("setup", """
inject:
  initContainers:
    - {name: setup, image: setup:1, ports: [{containerPort: 9000}]}
"""))
    result = run(pod(app(ports=[{"containerPort": 9000}]), init=[app("warm", ports=[{"containerPort": 9000}])]),
                 policies=policies)
    assert result.denial is None and names(result.pod["spec"]["initContainers"]) == ["setup", "warm"]


def test_a_native_sidecar_clashes_with_an_init_container_that_starts_after_it() -> None:
    policies = policies_from_yaml(policy("agent", SIDECAR_PORT % ""))
    result = run(pod(app(), init=[app("warm", ports=[{"containerPort": 9000}])]), policies=policies)
    assert result.denial is not None and "container 'warm' (spec.initContainers)" in result.denial


def test_port_on_conflict_skip_skips_only_that_policy_and_records_it() -> None:
    policies = policies_from_yaml(policy("agent", SIDECAR_PORT % ", onConflict: Skip"),
                                  policy("labels", "inject: {labels: {seen: 'yes'}}"))
    result = run(pod(app(ports=[{"containerPort": 9000}])), policies=policies)
    assert result.denial is None
    assert "initContainers" not in result.pod["spec"]
    assert result.pod["metadata"]["labels"]["seen"] == "yes"
    assert ledger(result)["skipped"] == [{"policy": "agent", "reason": "container 'app' already declares "
                                          "port 9000/TCP, which its container 'agent' declares"}]
    assert outcome(result, "agent").startswith("skipped: container 'app' already declares port 9000/TCP")


@pytest.mark.parametrize(("ours", "theirs", "clash"), [
    ({"hostPort": 9100}, {"containerPort": 80, "hostPort": 9100}, True),
    ({"hostPort": 9100, "hostIP": "10.0.0.1"}, {"containerPort": 80, "hostPort": 9100, "hostIP": "10.0.0.2"}, False),
    ({"hostPort": 9100, "hostIP": "10.0.0.1"}, {"containerPort": 80, "hostPort": 9100}, True),
    ({"hostPort": 9100, "hostIP": "10.0.0.1"}, {"containerPort": 80, "hostPort": 9100, "hostIP": "0.0.0.0"}, True),
    ({"hostPort": 9100, "protocol": "UDP"}, {"containerPort": 80, "hostPort": 9100}, False),
])
def test_host_ports_clash_on_the_node(ours: dict, theirs: dict, clash: bool) -> None:
    fields = "".join(f", {k}: {json.dumps(v)}" for k, v in ours.items())
    policies = policies_from_yaml(policy("agent", SIDECAR_PORT % fields))
    result = run(pod(app(ports=[theirs])), policies=policies)
    if clash:
        assert result.denial is not None and "host port 9100/" in result.denial
        assert "on the node" in result.denial
    else:
        assert result.denial is None


def test_two_policies_declaring_one_port_deny_naming_the_earlier_policy() -> None:
    policies = policies_from_yaml(policy("first", "priority: 1\n" + SIDECAR_PORT % ""),
                                  policy("second", "priority: 2\n" + (SIDECAR_PORT % "").replace("agent", "other")))
    result = run(pod(app()), policies=policies)
    assert result.denial is not None
    assert "policy second injects container 'other' with port 9000/TCP" in result.denial
    assert "container 'agent' (injected by policy first)" in result.denial
    assert any("port 9000/TCP is declared by sidecar 'agent' (policy first) and sidecar 'other' (policy second)"
               in w for w in lint(policies))


def test_a_shadow_policy_port_clash_is_a_warning_only() -> None:
    policies = policies_from_yaml(policy("agent", "mode: Shadow\n" + SIDECAR_PORT % ""))
    result = run(pod(app(ports=[{"containerPort": 9000}])), policies=policies)
    assert result.denial is None and result.patch == []
    assert any(w.startswith("shadow policy agent would deny this pod: ") and "port 9000/TCP" in w
               for w in result.warnings)


def test_injected_ports_carry_no_policy_fields() -> None:
    policies = policies_from_yaml(policy("agent", SIDECAR_PORT % ", onConflict: Skip, name: metrics"))
    sidecar = run(pod(app()), policies=policies).pod["spec"]["initContainers"][0]
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": 9000}]


@pytest.mark.parametrize(("port", "message"), [
    ("{containerPort: 9000, onConflict: Keep}", "onConflict"),
    ("{containerPort: 9000, onConflict: Replace}", "onConflict"),
    ("{containerPort: '9000'}", "containerPort"),
    ("{containerPort: 0}", "containerPort"),
    ("{containerPort: 70000}", "containerPort"),
    ("{containerPort: 9000, hostPort: true}", "hostPort"),
    ("{containerPort: 9000, name: '1234'}", "needs a letter"),
    ("{containerPort: 9000, name: a-very-long-port-name}", "name"),
    ("{containerPort: 9000, protocol: tcp}", "protocol"),
    ("{containerPort: 9000, hostPortt: 1}", "unknown field"),
    ("{containerPort: 9000, hostPort: 9000, hostIP: node-1}", "hostIP 'node-1' is not an IP address"),
])
def test_bad_ports_are_load_errors(port: str, message: str) -> None:
    body = f"inject:\n  sidecars:\n    - {{name: agent, image: a, ports: [{port}]}}\n"
    with pytest.raises(PolicyLoadError) as caught:
        policies_from_yaml(policy("agent", body))
    assert message in str(caught.value)


def test_a_port_declared_twice_in_one_container_is_a_load_error() -> None:
    body = "inject:\n  sidecars:\n    - {name: agent, image: a, ports: [{containerPort: 1}, {containerPort: 1}]}\n"
    with pytest.raises(PolicyLoadError, match="port 1/TCP is declared twice"):
        policies_from_yaml(policy("agent", body))


# --- requirements -----------------------------------------------------------------------

def test_opting_out_of_identity_skips_the_proxy_and_the_log_shipper() -> None:
    result = run(pod(app(), annotations=OPT_OUT_IDENTITY), policies=IDENTITY_OPTIONAL)
    assert result.denial is None and "initContainers" not in result.pod["spec"]
    assert result.applied == ()
    for dependent in ("traffic-proxy", "log-shipper"):
        assert outcome(result, dependent) == ('skipped: requires policy identity, which did not apply: pod opted '
                                              'out (runtime.platform.io/inject-identity: "false")')
    assert [s["policy"] for s in ledger(result)["skipped"]] == ["traffic-proxy", "log-shipper"]


def test_a_pod_supplied_identity_volume_is_not_mounted_into_the_proxy() -> None:
    """Before `requires`, the proxy kept the pod's own Secret as its identity-certs volume."""
    own = {"name": "identity-certs", "secret": {"secretName": "stolen"}}
    result = run(pod(app(), annotations=OPT_OUT_IDENTITY, volumes=[own]), policies=IDENTITY_OPTIONAL)
    assert result.denial is None and result.pod["spec"]["volumes"] == [own]
    assert "initContainers" not in result.pod["spec"]


REQUIRING = """
priority: 20
requires: [base]
%s
inject:
  labels: {dependent: 'yes'}
"""
BASE = "priority: 10\n%sinject:\n  labels: {base: 'yes'}\n"


def test_on_missing_requirement_deny_names_the_requirement_and_why() -> None:
    policies = policies_from_yaml(policy("base", BASE % "optIn: true\n"),
                                  policy("dependent", REQUIRING % "onMissingRequirement: Deny"))
    result = run(pod(app()), policies=policies)
    assert result.denial == ("policy dependent requires policy base, which did not apply to this pod: opt-in "
                             "policy; pod is not annotated runtime.platform.io/inject-base: \"true\"")
    opted_in = run(pod(app(), annotations={"runtime.platform.io/inject-base": "true"}), policies=policies)
    assert opted_in.denial is None and opted_in.applied == ("base", "dependent")


def test_a_dependent_that_does_not_match_is_not_denied_for_its_requirement() -> None:
    policies = policies_from_yaml(policy("base", BASE % "optIn: true\n"),
                                  policy("dependent", REQUIRING % "onMissingRequirement: Deny\nmatch: "
                                                                   "{namespaces: {include: [shop]}}"))
    result = run(pod(app()), policies=policies)
    assert result.denial is None and outcome(result, "dependent").startswith("namespace 'default' is not in")


def test_requirements_chain() -> None:
    policies = policies_from_yaml(policy("base", BASE % "optIn: true\n"), policy("dependent", REQUIRING % ""),
                                  policy("top", "priority: 30\nrequires: [dependent]\ninject: {labels: {top: 'y'}}"))
    result = run(pod(app()), policies=policies)
    assert result.applied == ()
    assert outcome(result, "top") == ("skipped: requires policy dependent, which did not apply: requires "
                                      "policy base, which did not apply: opt-in policy; pod is not annotated "
                                      "runtime.platform.io/inject-base: \"true\"")


@pytest.mark.parametrize(("base_mode", "dependent_mode", "applied", "reason"), [
    ("Shadow", "Enforce", (), "skipped: requires policy base, which did not apply: it is in Shadow mode"),
    ("Shadow", "Shadow", (), "1 label(s), 0 annotation(s)"),
    ("Enforce", "Shadow", ("base",), "1 label(s), 0 annotation(s)"),
])
def test_shadow_requirements(base_mode: str, dependent_mode: str, applied: tuple, reason: str) -> None:
    policies = policies_from_yaml(policy("base", BASE % f"mode: {base_mode}\n"),
                                  policy("dependent", REQUIRING % f"mode: {dependent_mode}"))
    result = run(pod(app()), policies=policies)
    assert result.applied == applied
    assert outcome(result, "dependent").startswith(reason)


@pytest.mark.parametrize(("documents", "message"), [
    ([policy("a", "requires: [nope]\ninject: {}")], "a/spec.requires: 'nope': no injection policy has that name"),
    ([policy("a", "requires: [a]\ninject: {}")], "a/spec.requires: a policy cannot require itself"),
    ([policy("a", "requires: [b]\ninject: {}"), policy("b", "requires: [a]\ninject: {}")],
     "a/spec.requires: requirements form a cycle: a -> b -> a"),
    ([policy("a", "priority: 1\nrequires: [c]\ninject: {}"), policy("b", "priority: 2\nrequires: [a]\ninject: {}"),
      policy("c", "priority: 3\nrequires: [b]\ninject: {}")], "requirements form a cycle: a -> c -> b -> a"),
    ([policy("a", "priority: 1\nrequires: [b]\ninject: {}"), policy("b", "priority: 2\ninject: {}")],
     "a/spec.requires: requires 'b', which runs after it (priority 2 against 1"),
    ([policy("a", "requires: [b]\ninject: {}"), policy("b", "inject: {}")],
     "requires 'b', which runs after it (priority 100 against 100; equal priorities run in name order)"),
    ([policy("a", "requires: [b, b]\ninject: {}"), policy("b", "inject: {}")], "b listed more than once"),
    ([policy("a", "requires: [v]\ninject: {}"),
      "apiVersion: runtime.platform.io/v1\nkind: ValidationPolicy\nmetadata: {name: v}\n"
      "spec: {action: Audit, rules: [{privileged: {}}]}\n"], "'v' is a ValidationPolicy"),
    ([policy("a", "onMissingRequirement: Warn\ninject: {}")], "onMissingRequirement"),
])
def test_bad_requirements_are_load_errors(documents: list[str], message: str) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        policies_from_yaml(*documents)
    assert message in str(caught.value)
    assert str(caught.value).count("cycle") <= 1


def test_equal_priorities_run_in_name_order_so_a_requirement_may_share_one() -> None:
    policies = policies_from_yaml(policy("a-base", "inject: {labels: {base: 'y'}}"),
                                  policy("b-dependent", "requires: [a-base]\ninject: {labels: {dep: 'y'}}"))
    assert run(pod(app()), policies=policies).applied == ("a-base", "b-dependent")


# --- what the pod keeps against a policy ------------------------------------------------

def test_a_kept_env_var_is_a_warning_with_both_values() -> None:
    result = run(pod(app(env=[{"name": "SERVICE_NAME", "value": "checkout-v2"}])))
    assert result.denial is None
    assert "container 'app' keeps its own env var SERVICE_NAME=\"checkout-v2\"; policy identity sets \"default.default\"" \
        in result.warnings
    again = inject(result.pod, namespace="default", policies=SHIPPED)
    assert again.patch == [] and again.warnings == result.warnings   # each call says it again


def test_a_kept_env_var_with_the_policys_value_is_no_warning() -> None:
    result = run(pod(app(env=[{"name": "SERVICE_NAME", "value": "default.default"}])))
    assert result.denial is None and result.warnings == []


def test_a_kept_mount_names_the_sidecar_that_reads_the_policys_volume() -> None:
    given = pod(app(volumeMounts=[{"name": "logs", "mountPath": "/var/log/app"}]),
                volumes=[{"name": "logs", "emptyDir": {}}])
    result = run(given)
    assert result.warnings == [
        "container 'app' keeps its own mount at /var/log/app (volume 'logs'); policy log-shipper mounts volume "
        "'app-logs' there, which 'log-shipper' reads: it will not see what is written there"]


ENV_DENY = """
inject:
  env: [{name: REGION, value: eu-1, onConflict: %s}]
  volumes: [{name: cache, source: {emptyDir: {}}, onConflict: %s}]
  labels: {tier: platform}
"""


def test_kept_volumes_and_labels_are_warnings_too() -> None:
    policies = policies_from_yaml(policy("region", ENV_DENY % ("Keep", "Keep")))
    given = pod(app(), labels={"tier": "web"}, volumes=[{"name": "cache", "hostPath": {"path": "/tmp"}}])
    result = run(given, policies=policies)
    assert result.warnings == [
        "the pod keeps its own volume 'cache' {\"hostPath\":{\"path\":\"/tmp\"}}; policy region declares "
        "{\"emptyDir\":{}}",
        "the pod keeps its own label tier=\"web\"; policy region sets \"platform\""]


@pytest.mark.parametrize(("value", "denied"), [("eu-1", False), ("us-2", True)])
def test_on_conflict_deny_denies_only_a_different_value(value: str, denied: bool) -> None:
    policies = policies_from_yaml(policy("region", ENV_DENY % ("Deny", "Deny")))
    result = run(pod(app(env=[{"name": "REGION", "value": value}])), policies=policies)
    assert (result.denial is not None) == denied
    if not denied:
        assert result.warnings == [] and result.pod["spec"]["containers"][0]["env"] == [
            {"name": "REGION", "value": "eu-1"}]


def test_warnings_cut_long_values_escape_control_characters_and_are_bounded() -> None:
    policies = policies_from_yaml(policy("many", "inject:\n  env:\n" + "".join(
        f"    - {{name: V{i}, value: platform}}\n" for i in range(MAX_WARNINGS + 5))))
    env = [{"name": f"V{i}", "value": "line\nbreak" + "x" * 500} for i in range(MAX_WARNINGS + 5)]
    result = run(pod(app(env=env)), policies=policies)
    assert len(result.warnings) == MAX_WARNINGS + 1
    assert result.warnings[-1].startswith("and 5 more item(s) the pod kept against a policy")
    first = result.warnings[0]
    assert "\n" not in first and '"line\\nbreak' in first and len(first) < 2 * MAX_VALUE_CHARS + 100


def test_a_policy_mounting_its_own_volume_elsewhere_is_no_warning_for_the_pod_keeping_the_same() -> None:
    given = pod(app(volumeMounts=[{"name": "app-logs", "mountPath": "/var/log/app", "readOnly": True}]))
    assert run(given).warnings == []


# --- startup order ----------------------------------------------------------------------

def test_the_proxy_has_a_startup_probe_on_a_port_it_declares() -> None:
    proxy = next(c for c in run(pod(app())).pod["spec"]["initContainers"] if c["name"] == "traffic-proxy")
    probe = proxy["startupProbe"]
    assert proxy["restartPolicy"] == "Always"
    assert probe["httpGet"]["port"] in {p["containerPort"] for p in proxy["ports"]}
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 30


# --- resources another admission plugin set -----------------------------------------------

VPA = {"requests": {"cpu": "300m", "memory": "200Mi"}, "limits": {"cpu": "2", "memory": "400Mi"}}


def _set_proxy_resources(patched: dict[str, Any], resources: Any, **fields: Any) -> dict[str, Any]:
    later = copy.deepcopy(patched)
    proxy = next(c for c in later["spec"]["initContainers"] if c["name"] == "traffic-proxy")
    proxy["resources"] = resources
    proxy.update(fields)
    return later


def test_reinvocation_keeps_the_resources_a_later_plugin_set() -> None:
    first = run(pod(app()))
    later = _set_proxy_resources(first.pod, VPA)
    again = inject(later, namespace="default", policies=SHIPPED)
    assert again.denial is None and again.patch == []
    assert "kept the resources another admission plugin set on traffic-proxy" in outcome(again, "traffic-proxy")


def test_a_new_policy_revision_renders_the_resources_again() -> None:
    first = run(pod(app()))
    later = _set_proxy_resources(first.pod, VPA)
    status = ledger(first)
    for record in status["policies"]:
        record["revision"] = "0ld0ld0ld0ld"
    later["metadata"]["annotations"][LEDGER_ANNOTATION] = json.dumps(status)
    again = inject(later, namespace="default", policies=SHIPPED)
    proxy = next(c for c in again.pod["spec"]["initContainers"] if c["name"] == "traffic-proxy")
    assert proxy["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}}


def test_only_resources_are_kept_whatever_the_ledger_claims() -> None:
    """The ledger is an annotation the pod's author can write: a container it names is
    re-rendered except for its resources."""
    first = run(pod(app()))
    forged = _set_proxy_resources(first.pod, VPA, image="evil.example.com/proxy:1", env=[{"name": "X", "value": "y"}])
    again = inject(forged, namespace="default", policies=SHIPPED)
    proxy = next(c for c in again.pod["spec"]["initContainers"] if c["name"] == "traffic-proxy")
    assert proxy["image"] == "registry.platform.internal/runtime/traffic-proxy:2.4.1" and "env" not in proxy
    assert proxy["resources"] == VPA
    assert jsonpatch.apply_patch(forged, again.patch) == again.pod


@pytest.mark.parametrize("resources", [None, "lots", ["cpu"]])
def test_resources_that_are_not_a_mapping_are_rendered_again(resources: Any) -> None:
    first = run(pod(app()))
    again = inject(_set_proxy_resources(first.pod, resources), namespace="default", policies=SHIPPED)
    proxy = next(c for c in again.pod["spec"]["initContainers"] if c["name"] == "traffic-proxy")
    assert proxy["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}


def test_resources_are_kept_only_for_the_policy_the_ledger_names() -> None:
    first = run(pod(app()))
    later = _set_proxy_resources(first.pod, VPA)
    status = ledger(first)
    for record in status["policies"]:
        record["containers"] = [c for c in record.get("containers", []) if c != "traffic-proxy"]
    status["policies"][0]["containers"].append("traffic-proxy")   # claimed by identity
    later["metadata"]["annotations"][LEDGER_ANNOTATION] = json.dumps(status)
    again = inject(later, namespace="default", policies=SHIPPED)
    proxy = next(c for c in again.pod["spec"]["initContainers"] if c["name"] == "traffic-proxy")
    assert proxy["resources"]["limits"] == {"cpu": "1", "memory": "256Mi"}


def test_two_sidecars_of_one_policy_declaring_one_port_is_a_load_error() -> None:
    body = ("inject:\n  sidecars:\n    - {name: a, image: a, ports: [{containerPort: 1}]}\n"
            "    - {name: b, image: b, native: false, ports: [{containerPort: 2, hostPort: 1}, {containerPort: 1}]}\n")
    with pytest.raises(PolicyLoadError, match="port 1/TCP is declared by sidecars 'a' and 'b', which run side by side"):
        policies_from_yaml(policy("agent", body))


def test_a_label_an_earlier_policy_set_is_no_warning_for_the_pod() -> None:
    policies = policies_from_yaml(policy("first", "priority: 1\ninject: {labels: {tier: one}}"),
                                  policy("second", "priority: 2\ninject: {labels: {tier: two}}"))
    result = run(pod(app()), policies=policies)
    assert result.pod["metadata"]["labels"]["tier"] == "one" and result.warnings == []


def test_an_init_container_clashing_with_a_sidecar_of_its_own_policy_says_so() -> None:
    policies = policies_from_yaml(policy("agent", SIDECAR_PORT % "" + "  initContainers:\n"
                                         "    - {name: setup, image: s, ports: [{containerPort: 9000}], "
                                         "after: [agent]}\n"))
    result = run(pod(app()), policies=policies)
    assert result.denial is not None and "(injected by this policy too)" in result.denial


def test_names_from_the_pod_are_cut_in_warnings_and_denials() -> None:
    long_name = "a" * 5000
    kept = run(pod(app(long_name, env=[{"name": "SERVICE_NAME", "value": "other"}])))
    assert kept.warnings and all(len(w) < 300 for w in kept.warnings)
    clash = run(pod(app(long_name, ports=[{"containerPort": 15021}])))
    assert clash.denial is not None and len(clash.denial) < 500 and "'aaa" in clash.denial


@pytest.mark.parametrize("field_ref", [{"fieldPath": "metadata.name"}, {"apiVersion": "v1", "fieldPath": "metadata.name"}])
def test_the_pods_own_downward_api_var_as_the_api_server_stores_it_is_no_warning(field_ref: dict) -> None:
    """A Deployment's template is stored with `apiVersion: v1` in each fieldRef, and its
    pods are created from it: the common POD_NAME entry of Helm charts is the same value."""
    result = run(pod(app(env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": field_ref}}])))
    assert result.denial is None and result.warnings == []
    other = run(pod(app(env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                                 "fieldPath": "spec.nodeName"}}}])))
    assert other.warnings == ["container 'app' keeps its own env var POD_NAME=fieldRef(spec.nodeName); policy "
                              "identity sets fieldRef(metadata.name)"]
    secret = run(pod(app(env=[{"name": "SERVICE_NAME", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])))
    assert secret.warnings == ["container 'app' keeps its own env var SERVICE_NAME=secretKeyRef(s/k); policy "
                               "identity sets \"default.default\""]


def test_a_shadow_policy_that_would_skip_itself_leaves_the_pod_and_its_ledger_alone() -> None:
    policies = policies_from_yaml(policy("base", BASE % "optIn: true\n"),
                                  policy("dependent", REQUIRING % "mode: Shadow"))
    result = run(pod(app()), policies=policies)
    assert result.patch == [] and result.warnings == []
    assert outcome(result, "dependent") == ("would skip itself: requires policy base, which did not apply: opt-in "
                                            "policy; pod is not annotated runtime.platform.io/inject-base: \"true\"")
    assert next(o for o in result.outcomes if o.policy == "dependent").shadow


# --- a property over random pods ----------------------------------------------------------

PROXY_PORTS = {15006, 15021}
_port = st.fixed_dictionaries(
    {"containerPort": st.sampled_from([15006, 15021, 8080, 9000])},
    optional={"protocol": st.sampled_from(["TCP", "UDP"]), "hostPort": st.sampled_from([15006, 15021, 80])})
_container = st.builds(lambda i, ports, native: {"name": f"c{i}", "image": "a", **({"ports": ports} if ports else {}),
                                                 **({"restartPolicy": "Always"} if native else {})},
                       st.integers(), st.lists(_port, max_size=3), st.booleans())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(apps=st.lists(_container, min_size=1, max_size=3), inits=st.lists(_container, max_size=2),
       opted_out=st.booleans())
def test_a_pod_is_denied_exactly_when_one_of_its_containers_declares_a_proxy_port(
        apps: list[dict], inits: list[dict], opted_out: bool) -> None:
    """The proxy starts before every container of the pod and runs to the end, so it
    clashes with any of them declaring 15006 or 15021 over TCP; nothing else clashes."""
    containers = [{**c, "name": f"app{i}"} for i, c in enumerate(apps)]
    for c in containers:
        c.pop("restartPolicy", None)
    init = [{**c, "name": f"init{i}"} for i, c in enumerate(inits)]
    given_pod = pod(*containers, init=init, annotations=OPT_OUT_IDENTITY if opted_out else None)
    clash = not opted_out and any(p["containerPort"] in PROXY_PORTS and p.get("protocol", "TCP") == "TCP"
                                  for c in (*containers, *init) for p in c.get("ports", ()))
    result = run(given_pod, policies=IDENTITY_OPTIONAL)   # also: the patch applies, a second pass adds nothing
    assert (result.denial is not None) == clash, (result.denial, given_pod)
    if clash:
        assert "traffic-proxy" in result.denial and "port 150" in result.denial


def test_a_secret_name_with_a_control_character_cannot_break_the_warning_line() -> None:
    ref = {"secretKeyRef": {"name": "s\nWarning: forged", "key": "k"}}
    result = run(pod(app(env=[{"name": "SERVICE_NAME", "valueFrom": ref}])))
    assert result.warnings == ["container 'app' keeps its own env var SERVICE_NAME=secretKeyRef(s\\nWarning: "
                               "forged/k); policy identity sets \"default.default\""]


def test_a_policy_revision_ignores_fields_left_at_their_defaults() -> None:
    """A field the schema gains must not change the revision of policies that do not use it."""
    bare = policies_from_yaml(policy("agent", SIDECAR_PORT % ""))
    spelled = policies_from_yaml(policy("agent", "requires: []\nonMissingRequirement: Skip\n" +
                                        SIDECAR_PORT % ", onConflict: Deny"))
    changed = policies_from_yaml(policy("agent", SIDECAR_PORT % ", onConflict: Skip"))
    assert bare.injectors[0].revision == spelled.injectors[0].revision != changed.injectors[0].revision
