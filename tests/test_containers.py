"""The one container walker and its rule for malformed entries (fail closed), table-driven,
without HTTP: the walker itself, every rule that walks containers, and both endpoints'
engines (the server's answer is in test_validate_server.py and test_server_mutate.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.test_validate_helpers import (
    TEMPLATE_PATHS,
    container,
    controller,
    good_container,
    pod,
    policy,
    policy_set,
    request,
    run,
)
from webhook.core.finding import Finding
from webhook.engine.inject import inject
from webhook.engine.mutate import mutate
from webhook.policy.loader import load_policy_sources
from webhook.rules.containers import iter_containers, malformed_containers
from webhook.rules.host_access import check_host_ports, check_privileged
from webhook.rules.images import check_images
from webhook.rules.pod_security import check_pod_spec
from webhook.rules.resources import Requirement, check_resources

# --- the walker ------------------------------------------------------------------------

WALKS: list[tuple[str, dict[str, Any], list[tuple[str, str, str, str, bool]]]] = [
    ("order: init, regular, ephemeral", {
        "ephemeralContainers": [{"name": "debug"}], "containers": [{"name": "app"}],
        "initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}]},
     [("initContainers", "initContainers", "setup", "spec.initContainers[setup]", False),
      ("initContainers", "sidecars", "proxy", "spec.initContainers[proxy]", False),
      ("containers", "containers", "app", "spec.containers[app]", False),
      ("ephemeralContainers", "ephemeralContainers", "debug", "spec.ephemeralContainers[debug]", False)]),
    ("a nameless entry is named by its index", {"containers": [{"image": "x"}, {"name": 5}]},
     [("containers", "containers", "", "spec.containers[0]", False),
      ("containers", "containers", "", "spec.containers[1]", False)]),
    ("non-object entries are walked, never skipped", {"containers": [{"name": "a"}, "nginx", None, 3, ["x"]]},
     [("containers", "containers", "a", "spec.containers[a]", False),
      ("containers", "containers", "", "spec.containers[1]", True),
      ("containers", "containers", "", "spec.containers[2]", True),
      ("containers", "containers", "", "spec.containers[3]", True),
      ("containers", "containers", "", "spec.containers[4]", True)]),
    ("a malformed init entry is never a sidecar", {"initContainers": ["Always"]},
     [("initContainers", "initContainers", "", "spec.initContainers[0]", True)]),
    ("a field that is not a list has no entries", {"containers": {"name": "a"}, "initContainers": "x"}, []),
    ("absent and null fields", {"containers": None}, []),
]


@pytest.mark.parametrize(("spec", "expected"), [(s, e) for _, s, e in WALKS], ids=[n for n, _, _ in WALKS])
def test_walker(spec: dict[str, Any], expected: list[tuple[str, str, str, str, bool]]) -> None:
    refs = list(iter_containers(spec))
    assert [(r.field, r.type, r.name, r.path, r.malformed) for r in refs] == expected
    for ref in refs:
        if ref.malformed:
            assert dict(ref.raw) == {} and ref.label == ref.path
            with pytest.raises(TypeError):
                ref.raw["name"] = "x"  # type: ignore[index]  # shared: must be read-only


MALFORMED: list[tuple[str, dict[str, Any], list[str]]] = [
    ("well formed", {"containers": [{"name": "a"}], "initContainers": [], "ephemeralContainers": None}, []),
    ("no containers at all", {}, []),
    ("string entry", {"containers": [{"name": "a"}, "nginx"]},
     ["spec.containers[1] is a JSON string, not a container object"]),
    ("every kind of entry", {"initContainers": [None], "containers": [3, True], "ephemeralContainers": [[]]},
     ["spec.initContainers[0] is a JSON null, not a container object",
      "spec.containers[0] is a JSON number, not a container object",
      "spec.containers[1] is a JSON boolean, not a container object",
      "spec.ephemeralContainers[0] is a JSON array, not a container object"]),
    ("a field that is an object", {"containers": {"name": "a", "securityContext": {"privileged": True}}},
     ["spec.containers is a JSON object, not a list of containers"]),
    ("a field that is a string", {"initContainers": "x"},
     ["spec.initContainers is a JSON string, not a list of containers"]),
]


@pytest.mark.parametrize(("spec", "expected"), [(s, e) for _, s, e in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_containers(spec: dict[str, Any], expected: list[str]) -> None:
    assert malformed_containers(spec) == expected


# --- every rule that walks containers checks a malformed entry as an empty container ------

GARBAGE_SPEC: dict[str, Any] = {"containers": [good_container("app"), "nginx"]}
EMPTY_AT = "spec.containers[1]"

RULES: list[tuple[str, Callable[[dict[str, Any]], list[Finding]], set[tuple[str, str]]]] = [
    ("images", lambda spec: check_images(spec), {("invalidImage", f"{EMPTY_AT}.image")}),
    ("resources", lambda spec: check_resources(spec, required={"containers": Requirement(requests=("cpu",))},
                                               maximum={}, max_ratio={}),
     {("requests", f"{EMPTY_AT}.resources.requests.cpu")}),
    ("podSecurity restricted", lambda spec: check_pod_spec({}, spec, level="restricted"),
     {("allowPrivilegeEscalation", f"{EMPTY_AT}.securityContext.allowPrivilegeEscalation"),
      ("runAsNonRoot", f"{EMPTY_AT}.securityContext.runAsNonRoot"),
      ("seccompProfile_restricted", f"{EMPTY_AT}.securityContext.seccompProfile.type"),
      ("capabilities_restricted", f"{EMPTY_AT}.securityContext.capabilities.drop")}),
    # An empty container breaks no baseline check, nor these: what denies the pod is the engine.
    ("podSecurity baseline", lambda spec: check_pod_spec({}, spec, level="baseline"), set()),
    ("privileged", check_privileged, set()),
    ("hostPorts", lambda spec: check_host_ports(spec), set()),
]


@pytest.mark.parametrize(("check", "expected"), [(c, e) for _, c, e in RULES], ids=[n for n, _, _ in RULES])
def test_rules_check_a_malformed_entry_as_an_empty_container(
        check: Callable[[dict[str, Any]], list[Finding]], expected: set[tuple[str, str]]) -> None:
    findings = check(GARBAGE_SPEC)
    assert {(f.check, f.path) for f in findings} == expected
    # The well-formed container beside it is as good as ever.
    assert not any(f.path.startswith("spec.containers[app]") for f in findings)


# --- both engines deny a pod with a malformed container list, before any policy runs ---------

# A policy that the pod would pass: without the rule above, the garbage would be admitted.
LENIENT = policy_set(policy("host", [{"hostNetwork": {}}]))
NO_POLICIES = policy_set(policy("elsewhere", [{"hostPID": {}}], match={"namespaces": {"include": ["none"]}}))

DENIED: list[tuple[str, dict[str, Any], str]] = [
    ("string container", pod(container("app"), "nginx"),  # type: ignore[arg-type]
     "malformed pod: spec.containers[1] is a JSON string, not a container object"),
    ("null init container", pod(container("app"), initContainers=[None]),
     "malformed pod: spec.initContainers[0] is a JSON null, not a container object"),
    ("ephemeral list of lists", pod(container("app"), ephemeralContainers=[["x"]]),
     "malformed pod: spec.ephemeralContainers[0] is a JSON array, not a container object"),
    ("containers as an object", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"},
                                 "spec": {"containers": {"name": "app", "image": "x"}}},
     "malformed pod: spec.containers is a JSON object, not a list of containers"),
    ("many entries, three shown", pod(container("app"), 1, 2, 3, 4, 5),  # type: ignore[arg-type]
     "malformed pod: spec.containers[1] is a JSON number, not a container object; spec.containers[2] is a "
     "JSON number, not a container object; spec.containers[3] is a JSON number, not a container object; "
     "and 2 more"),
]


@pytest.mark.parametrize("policies", [LENIENT, NO_POLICIES], ids=["lenient policy", "no matching policy"])
@pytest.mark.parametrize(("obj", "message"), [(o, m) for _, o, m in DENIED], ids=[n for n, _, _ in DENIED])
def test_validate_denies_malformed_containers(policies: Any, obj: dict[str, Any], message: str) -> None:
    decision = run(policies, obj)
    assert not decision.allowed and decision.code == 403
    assert decision.message == f"{message} (every container must be a JSON object)"
    assert decision.violations == ()


@pytest.mark.parametrize("kind", ["Deployment", "CronJob"])
def test_validate_denies_a_malformed_template_naming_its_path(kind: str) -> None:
    decision = run(LENIENT, controller(kind, pod(container("app"), "nginx")), kind=kind)  # type: ignore[arg-type]
    assert not decision.allowed
    assert decision.message == (f"malformed pod: {TEMPLATE_PATHS[kind]}.spec.containers[1] is a JSON string, "
                                "not a container object (every container must be a JSON object)")


def test_validate_still_admits_an_unchanged_update() -> None:
    # An UPDATE that leaves the spec as it was is admitted without evaluation, as before.
    obj = pod(container("app"), "nginx")  # type: ignore[arg-type]
    assert run(LENIENT, obj, operation="UPDATE", old=obj).allowed


def test_well_formed_pods_are_untouched_by_the_rule() -> None:
    assert run(LENIENT, pod(good_container("app"))).allowed


INJECTOR = load_policy_sources({"inject.yaml": b"apiVersion: runtime.platform.io/v1\nkind: InjectionPolicy\n"
                                               b"metadata: {name: proxy}\n"
                                               b"spec: {inject: {sidecars: [{name: proxy, image: 'p:1'}]}}\n"})


@pytest.mark.parametrize(("obj", "message"), [(o, m) for _, o, m in DENIED], ids=[n for n, _, _ in DENIED])
def test_mutate_denies_malformed_containers(obj: dict[str, Any], message: str) -> None:
    decision = mutate(request(obj), INJECTOR)
    assert not decision.allowed and decision.code == 403 and decision.patch is None
    assert decision.message == f"{message} (every container must be a JSON object)"
    result = inject(obj, namespace="default", policies=INJECTOR)
    assert [(o.policy, o.applied, o.reason) for o in result.outcomes] == [("proxy", False, "the pod is malformed")]
