"""Each validation rule's edge cases, through the engine (no HTTP), table-driven.

Every case is (pod, expected violations as (check, path)); an empty list means allowed.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_validate_helpers import TEMPLATE_PATHS, container, controller, pod, policy, policy_set, run

DIGEST = "sha256:" + "a" * 64


def _found(rule: dict[str, Any], obj: dict[str, Any], **kwargs: Any) -> list[tuple[str, str]]:
    decision = run(policy_set(policy("p", [rule])), obj, **kwargs)
    assert decision.allowed == (not decision.violations)
    return [(v.check, v.path) for v in decision.violations]


def _image_pod(image: Any) -> dict[str, Any]:
    return pod(container("app", image))


IMAGE = "spec.containers[app].image"

# --- images ---------------------------------------------------------------------

LATEST_CASES = [
    ("nginx", [("latestTag", IMAGE)]),                               # no tag: pulls latest
    ("nginx:latest", [("latestTag", IMAGE)]),
    ("docker.io/library/nginx:latest", [("latestTag", IMAGE)]),
    ("nginx:1.25", []),
    ("nginx:Latest", []),                                            # tags are case-sensitive
    (f"nginx@{DIGEST}", []),                                         # pinned by digest
    (f"nginx:latest@{DIGEST}", []),                                  # runtimes pull by digest
    ("registry.local:5000/app", [("latestTag", IMAGE)]),             # the port is no tag
    ("registry.local:5000/app:1.0", []),
    ("localhost/app", [("latestTag", IMAGE)]),
    ("UPPER/app:1", [("invalidImage", IMAGE)]),
    ("nginx:bad tag", [("invalidImage", IMAGE)]),
    ("", [("invalidImage", IMAGE)]),
    (None, [("invalidImage", IMAGE)]),
    (42, [("invalidImage", IMAGE)]),
]


@pytest.mark.parametrize(("image", "expected"), LATEST_CASES, ids=[repr(c[0]) for c in LATEST_CASES])
def test_images_forbid_latest(image: Any, expected: list[tuple[str, str]]) -> None:
    assert _found({"images": {"forbidLatest": True}}, _image_pod(image)) == expected


REGISTRY_CASES = [
    (["registry.example.com"], "registry.example.com/team/app:1", []),
    (["registry.example.com"], "registry.example.com.evil.io/app:1", [("registry", IMAGE)]),
    (["registry.example.com"], "registry.example.com:443/app:1", [("registry", IMAGE)]),
    (["registry.example.com:443"], "registry.example.com:443/app:1", []),
    (["REGISTRY.example.com"], "registry.example.com/app:1", []),
    (["ghcr.io/myorg"], "ghcr.io/myorg/app:1", []),
    (["ghcr.io/myorg"], "ghcr.io/myorganisation/app:1", [("registry", IMAGE)]),
    (["docker.io/library"], "nginx:1", []),                          # bare name is docker.io/library
    (["docker.io/library"], "library/nginx:1", []),
    (["docker.io/library"], "index.docker.io/library/nginx:1", []),
    (["docker.io/library"], "someuser/app:1", [("registry", IMAGE)]),
    (["docker.io"], "someuser/app:1", []),
    (["quay.io", "ghcr.io"], "ghcr.io/x/y:1", []),
    (["quay.io"], f"nginx@{DIGEST}", [("registry", IMAGE)]),
]


@pytest.mark.parametrize(("allowed", "image", "expected"), REGISTRY_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in REGISTRY_CASES])
def test_images_allowed_registries(allowed: list[str], image: str, expected: list[tuple[str, str]]) -> None:
    assert _found({"images": {"allowedRegistries": allowed}}, _image_pod(image)) == expected


def test_images_require_digest_and_every_container_type() -> None:
    obj = pod(container("app", "app:1"), container("pinned", f"app@{DIGEST}"),
              initContainers=[container("init", "init:1")],
              ephemeralContainers=[container("debug", "busybox")])
    assert _found({"images": {"requireDigest": True}}, obj) == [
        ("digest", "spec.initContainers[init].image"),
        ("digest", "spec.containers[app].image"),
        ("digest", "spec.ephemeralContainers[debug].image"),
    ]


def test_images_message_names_container_and_image() -> None:
    decision = run(policy_set(policy("img", [{"images": {"forbidLatest": True}}])), _image_pod("nginx:latest"))
    assert decision.message == ('1 validation violation: img/images[latestTag]: spec.containers[app].image: '
                                'container "app" image "nginx:latest" uses the latest tag; pin a version '
                                "tag or a digest")


# --- resources ---------------------------------------------------------------------

def _res(requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if requests is not None:
        out["requests"] = requests
    if limits is not None:
        out["limits"] = limits
    return out


R = "spec.containers[app].resources"
REQUIRED = {"resources": {"containers": {"requests": ["cpu", "memory"], "limits": ["memory"]}}}

REQUIRED_CASES = [
    ("all set", _res({"cpu": "100m", "memory": "64Mi"}, {"memory": "128Mi"}), []),
    ("limits stand in for requests", _res(None, {"cpu": "1", "memory": "1Gi"}), []),
    ("nothing", {}, [("requests", f"{R}.requests.cpu"), ("requests", f"{R}.requests.memory"),
                     ("limits", f"{R}.limits.memory")]),
    ("no memory limit", _res({"cpu": "1", "memory": "1Gi"}, {"cpu": "1"}), [("limits", f"{R}.limits.memory")]),
    ("invalid quantity counts as set", _res({"cpu": "abc", "memory": "1Gi"}, {"memory": "1Gi"}),
     [("invalidQuantity", f"{R}.requests.cpu")]),
    ("garbage resources", "lots", [("requests", f"{R}.requests.cpu"), ("requests", f"{R}.requests.memory"),
                                   ("limits", f"{R}.limits.memory")]),
]


@pytest.mark.parametrize(("resources", "expected"), [c[1:] for c in REQUIRED_CASES],
                         ids=[c[0] for c in REQUIRED_CASES])
def test_resources_required(resources: Any, expected: list[tuple[str, str]]) -> None:
    assert _found(REQUIRED, pod(container("app", resources=resources))) == expected


def test_resources_required_per_container_type() -> None:
    rule = {"resources": {"initContainers": {"limits": ["cpu"]}, "sidecars": {"limits": ["memory"]}}}
    obj = pod(container("app"),
              initContainers=[container("init"), container("proxy", restartPolicy="Always")],
              ephemeralContainers=[container("debug")])
    assert _found(rule, obj) == [
        ("limits", "spec.initContainers[init].resources.limits.cpu"),
        ("limits", "spec.initContainers[proxy].resources.limits.memory"),  # a native sidecar
    ]


MAXIMUM_CASES = [
    ({"memory": "1Gi"}, []),
    ({"memory": "1024Mi"}, []),
    ({"memory": "1e9"}, []),                                   # 1e9 < 1Gi (1073741824)
    ({"memory": "1100M"}, [("maximum", f"{R}.limits.memory")]),
    ({"memory": "1.5Gi"}, [("maximum", f"{R}.limits.memory")]),
    ({"cpu": "2000m"}, []),
    ({"cpu": "2001m"}, [("maximum", f"{R}.limits.cpu")]),
    ({"cpu": 3}, [("maximum", f"{R}.limits.cpu")]),
    ({"cpu": 0.5}, []),
    ({"nvidia.com/gpu": "2"}, [("maximum", f"{R}.limits[nvidia.com/gpu]")]),
]


@pytest.mark.parametrize(("limits", "expected"), MAXIMUM_CASES, ids=[str(c[0]) for c in MAXIMUM_CASES])
def test_resources_maximum(limits: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    rule = {"resources": {"maximum": {"memory": "1Gi", "cpu": "2", "nvidia.com/gpu": 1}}}
    assert _found(rule, pod(container("app", resources=_res(None, limits)))) == expected


def test_resources_maximum_applies_to_requests_too() -> None:
    rule = {"resources": {"maximum": {"cpu": "500m"}}}
    obj = pod(container("app", resources=_res({"cpu": "600m"}, {"cpu": "700m"})))
    assert _found(rule, obj) == [("maximum", f"{R}.requests.cpu"), ("maximum", f"{R}.limits.cpu")]


RATIO_CASES = [
    ("at the cap", _res({"cpu": "100m"}, {"cpu": "400m"}), []),
    ("over the cap", _res({"cpu": "100m"}, {"cpu": "500m"}), [("limitRequestRatio", f"{R}.limits.cpu")]),
    ("limit only: request defaults to it", _res(None, {"cpu": "4"}), []),
    ("request only", _res({"cpu": "1"}, None), []),
    ("zero request is unbounded", _res({"cpu": "0"}, {"cpu": "1"}), [("limitRequestRatio", f"{R}.limits.cpu")]),
    ("binary and decimal units", _res({"memory": "1Gi"}, {"memory": "2147483648"}), []),
    ("memory over", _res({"memory": "1Gi"}, {"memory": "2049Mi"}), [("limitRequestRatio", f"{R}.limits.memory")]),
]


@pytest.mark.parametrize(("resources", "expected"), [c[1:] for c in RATIO_CASES], ids=[c[0] for c in RATIO_CASES])
def test_resources_limit_request_ratio(resources: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    rule = {"resources": {"maxLimitRequestRatio": {"cpu": 4, "memory": "2"}}}
    assert _found(rule, pod(container("app", resources=resources))) == expected


def test_resources_huge_exponents_are_violations_not_errors() -> None:
    # The API server accepts "1e10000000"; Python's default decimal context overflows on it,
    # which made the engine raise (a 500, and under failure policy Ignore an admitted pod).
    rule = {"resources": {"maximum": {"memory": "8Gi"}, "maxLimitRequestRatio": {"memory": 4}}}
    obj = pod(container("app", resources=_res({"memory": "1Mi"}, {"memory": "1e10000000"})))
    decision = run(policy_set(policy("p", [rule])), obj)
    assert [(v.check, v.path) for v in decision.violations] == [
        ("maximum", f"{R}.limits.memory"), ("limitRequestRatio", f"{R}.limits.memory")]
    assert "memory=1E+10000000 exceeds the maximum 8589934592" in decision.message
    assert len(decision.message) < 400


def test_resources_skip_ephemeral_containers() -> None:
    obj = pod(container("app", resources=_res({"cpu": "1", "memory": "1"}, {"memory": "1"})),
              ephemeralContainers=[container("debug")])
    assert _found(REQUIRED, obj) == []


# --- host access -----------------------------------------------------------------

@pytest.mark.parametrize("field", ["hostNetwork", "hostPID", "hostIPC"])
@pytest.mark.parametrize(("value", "violates"), [(True, True), (False, False), ("true", False), (None, False)])
def test_host_namespaces(field: str, value: Any, violates: bool) -> None:
    obj = pod(**{field: value})
    assert _found({field: {}}, obj) == ([(field, f"spec.{field}")] if violates else [])


def test_host_namespace_rules_are_separate() -> None:
    obj = pod(hostNetwork=True, hostPID=True)
    assert _found({"hostIPC": None}, obj) == []            # a bare key works like {}
    assert _found({"hostPID": {}}, obj) == [("hostPID", "spec.hostPID")]


def test_privileged_in_any_container_type() -> None:
    priv: dict[str, Any] = {"securityContext": {"privileged": True}}
    obj = pod(container("app"), container("side", securityContext={"privileged": False}),
              initContainers=[container("init", **priv)], ephemeralContainers=[container("dbg", **priv)])
    assert _found({"privileged": {}}, obj) == [
        ("privileged", "spec.initContainers[init].securityContext.privileged"),
        ("privileged", "spec.ephemeralContainers[dbg].securityContext.privileged"),
    ]


HOST_PORT_CASES = [
    ([], [{"containerPort": 80, "hostPort": 80}], [("hostPort", "spec.containers[app].ports[0].hostPort")]),
    ([], [{"name": "http", "containerPort": 80, "hostPort": 8080}],
     [("hostPort", "spec.containers[app].ports[http].hostPort")]),
    ([], [{"containerPort": 80}], []),
    ([], [{"containerPort": 80, "hostPort": 0}], []),
    ([80], [{"containerPort": 80, "hostPort": 80}], []),
    (["9000-9100"], [{"containerPort": 1, "hostPort": 9050}], []),
    (["9000-9100"], [{"containerPort": 1, "hostPort": 9101}], [("hostPort", "spec.containers[app].ports[0].hostPort")]),
    ([], "garbage", []),
]


@pytest.mark.parametrize(("allowed", "ports", "expected"), HOST_PORT_CASES)
def test_host_ports(allowed: list[Any], ports: Any, expected: list[tuple[str, str]]) -> None:
    assert _found({"hostPorts": {"allowed": allowed}}, pod(container("app", ports=ports))) == expected


@pytest.mark.parametrize("kind", ["Pod", "Deployment", "CronJob"])
def test_host_ports_with_host_network_are_the_container_ports(kind: str) -> None:
    # The API server defaults hostPort to containerPort under hostNetwork in a pod, not in a
    # template: a Deployment must not be admitted only to have every one of its pods denied.
    obj = pod(container("app", ports=[{"containerPort": 8080}, {"containerPort": 9100, "hostPort": 0}]),
              hostNetwork=True)
    if kind != "Pod":
        obj = controller(kind, obj)
    prefix = TEMPLATE_PATHS[kind] + "." if kind != "Pod" else ""
    assert _found({"hostPorts": {"allowed": [9100]}}, obj, kind=kind) == [
        ("hostPort", f"{prefix}spec.containers[app].ports[0].hostPort")]


def _host_path_pod(path: str, *, read_only: bool | None = None) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": "host", "mountPath": "/host"}
    if read_only is not None:
        mount["readOnly"] = read_only
    return pod(container("app", volumeMounts=[mount]), volumes=[{"name": "host", "hostPath": {"path": path}}])


V = "spec.volumes[host].hostPath"
HOST_PATH_CASES = [
    ([], "/var/log", None, [("hostPath", V)]),
    ([{"pathPrefix": "/var/log"}], "/var/log", None, []),
    ([{"pathPrefix": "/var/log"}], "/var/log/app", None, []),
    ([{"pathPrefix": "/var/log/"}], "/var/log/app", None, []),
    ([{"pathPrefix": "/var/log"}], "/var/logs", None, [("hostPath", V)]),
    ([{"pathPrefix": "/var/log"}], "/var/log/../../etc", None, [("hostPath", V)]),
    ([{"pathPrefix": "/var/log"}], "var/log", None, [("hostPath", V)]),
    # Linux reads "//var/log" as "/var/log"; POSIX's normpath keeps the leading "//".
    ([{"pathPrefix": "/var/log"}], "//var/log/app", None, []),
    ([{"pathPrefix": "/var/log", "readOnly": True}], "///var/log", None,
     [("hostPathReadOnly", "spec.containers[app].volumeMounts[0].readOnly")]),
    ([{"pathPrefix": "/var/log"}], "//etc", None, [("hostPath", V)]),
    ([{"pathPrefix": "/var/log", "readOnly": True}], "/var/log/app", True, []),
    ([{"pathPrefix": "/var/log", "readOnly": True}], "/var/log/app", None,
     [("hostPathReadOnly", "spec.containers[app].volumeMounts[0].readOnly")]),
    ([{"pathPrefix": "/var/log", "readOnly": True}], "/var/log/app", False,
     [("hostPathReadOnly", "spec.containers[app].volumeMounts[0].readOnly")]),
    # The most specific prefix decides, whatever the order of the list.
    ([{"pathPrefix": "/var/log"}, {"pathPrefix": "/var/log/audit", "readOnly": True}], "/var/log/audit/x", None,
     [("hostPathReadOnly", "spec.containers[app].volumeMounts[0].readOnly")]),
    ([{"pathPrefix": "/var/log/audit", "readOnly": True}, {"pathPrefix": "/var/log"}], "/var/log/audit/x", None,
     [("hostPathReadOnly", "spec.containers[app].volumeMounts[0].readOnly")]),
    ([{"pathPrefix": "/var/log", "readOnly": True}, {"pathPrefix": "/var/log/app"}], "/var/log/app", None, []),
    ([{"pathPrefix": "/var/log/app"}, {"pathPrefix": "/var/log", "readOnly": True}], "/var/log/app", None, []),
    ([{"pathPrefix": "/var/log"}, {"pathPrefix": "/var/log/", "readOnly": True}], "/var/log/app", None,
     [("hostPathReadOnly", "spec.containers[app].volumeMounts[0].readOnly")]),
]


@pytest.mark.parametrize(("allowed", "path", "read_only", "expected"), HOST_PATH_CASES)
def test_host_path(allowed: list[dict[str, Any]], path: str, read_only: bool | None,
                   expected: list[tuple[str, str]]) -> None:
    assert _found({"hostPath": {"allowed": allowed}}, _host_path_pod(path, read_only=read_only)) == expected


def test_host_path_ignores_other_volume_types() -> None:
    obj = pod(volumes=[{"name": "tmp", "emptyDir": {}}, "garbage", {"name": "n", "hostPath": None}])
    assert _found({"hostPath": {}}, obj) == []


# --- required labels and annotations ---------------------------------------------------

LABEL_CASES = [
    ({"app": "web", "team": "payments"}, []),
    ({"team": "payments"}, [("missing", "metadata.labels[app]")]),
    ({"app": "web", "team": "Payments"}, [("value", "metadata.labels[team]")]),
    ({"app": "web", "team": "payments2"}, [("value", "metadata.labels[team]")]),   # whole value must match
    ({"app": "", "team": "x"}, []),                                               # present, no pattern
    (None, [("missing", "metadata.labels[app]"), ("missing", "metadata.labels[team]")]),
]


@pytest.mark.parametrize(("labels", "expected"), LABEL_CASES)
def test_required_labels(labels: dict[str, str] | None, expected: list[tuple[str, str]]) -> None:
    rule = {"requiredLabels": [{"key": "app"}, {"key": "team", "pattern": "[a-z]+"}]}
    assert _found(rule, pod(labels=labels)) == expected


def test_required_annotations_and_garbage_metadata() -> None:
    rule = {"requiredAnnotations": [{"key": "example.com/owner", "pattern": ".+@example\\.com"}]}
    assert _found(rule, pod(annotations={"example.com/owner": "a@example.com"})) == []
    assert _found(rule, pod(annotations={"example.com/owner": "a@evil.com"})) == [
        ("value", "metadata.annotations[example.com/owner]")]
    garbage = pod()
    garbage["metadata"] = ["not", "a", "map"]
    assert _found(rule, garbage) == [("missing", "metadata.annotations[example.com/owner]")]


def test_required_labels_message() -> None:
    decision = run(policy_set(policy("labels", [{"requiredLabels": [{"key": "team", "pattern": "[a-z]+"}]}])),
                   pod(labels={"team": "Payments"}))
    assert decision.message == ('1 validation violation: labels/requiredLabels[value]: metadata.labels[team]: '
                                'label "team" value "Payments" does not match [a-z]+')


# --- CEL ----------------------------------------------------------------------------

def _cel(expression: str, message: str = "broken") -> dict[str, Any]:
    return {"cel": {"expression": expression, "message": message}}


CEL_CASES = [
    ("object.spec.containers.all(c, c.image.startsWith('registry.example.com/'))", []),
    ("object.spec.containers.size() > 1", [("", "")]),
    ("object.metadata.namespace == 'default'", []),                    # filled from the request
    ("request.operation == 'CREATE' && oldObject == null", []),
    ("request.userInfo.username == 'alice' && 'system:authenticated' in request.userInfo.groups", []),
    ("request.kind.kind == 'Pod' && object.kind == 'Pod'", []),
    ("object.metadata.name.lowerAscii() == 'web'", []),                # strings extension
    ("has(object.metadata.labels) ? object.metadata.labels.app == 'x' : true", []),
    ("object.spec.containers.all(c, has(c.resources.limits))", [("evaluationError", "")]),  # no such key
    ("object.spec.replicas > 1", [("evaluationError", "")]),
    ("1 / 0 == 1", [("evaluationError", "")]),
    ("object.metadata.name", [("evaluationError", "")]),               # not a bool
    ("object.spec.containers[5].name == 'x'", [("evaluationError", "")]),
    ("undefined_function(1)", [("evaluationError", "")]),
]


@pytest.mark.parametrize(("expression", "expected"), CEL_CASES, ids=[c[0] for c in CEL_CASES])
def test_cel(expression: str, expected: list[tuple[str, str]]) -> None:
    assert _found(_cel(expression), pod(name="web")) == expected


def test_cel_messages() -> None:
    policies = policy_set(policy("p", [
        {"name": "one-container", **_cel("object.spec.containers.size() == 1", "exactly one container")},
        {"name": "limits", **_cel("object.spec.containers.all(c, has(c.resources.limits))", "limits needed")},
        {"name": "not-bool", **_cel("object.spec.containers.size()", "size")},
    ]))
    decision = run(policies, pod(container("a"), container("b")))
    assert decision.message == (
        "3 validation violations: p/one-container: exactly one container; "
        "p/limits[evaluationError]: limits needed (CEL evaluation error: no such key: resources); "
        "p/not-bool[evaluationError]: size (CEL evaluation error: expression returned int 2, expected a bool)")


def test_cel_sees_a_controller_template_as_a_pod() -> None:
    rule = _cel("object.kind == 'Pod' && object.metadata.labels.app == 'web' && "
                "request.kind.kind == 'Deployment'", "template")
    assert _found(rule, controller("Deployment", pod(labels={"app": "web"})), kind="Deployment") == []
    found = _found(_cel("object.spec.containers.size() == 0", "no containers"),
                   controller("Deployment", pod()), kind="Deployment")
    assert found == [("", "spec.template")]


def test_cel_old_object_on_update() -> None:
    rule = _cel("oldObject == null || object.spec.containers[0].image == oldObject.spec.containers[0].image",
                "image is frozen")
    old = pod(container("app", "app:1"))
    assert _found(rule, pod(container("app", "app:2")), operation="UPDATE", old=old) == [("", "")]
    assert _found(rule, pod(container("app", "app:1"), activeDeadlineSeconds=5), operation="UPDATE",
                  old=old) == []


# --- reserved container names ----------------------------------------------------------

INJECTION = """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: mesh}
spec:
  inject:
    sidecars:
      - {name: traffic-proxy, image: "registry.example.com/proxy:2.0"}
      - {name: agent, image: "registry.example.com/agent:{{ namespace }}"}
      - {name: relaxed, image: "registry.example.com/relaxed:1", onConflict: Keep}
"""
LEDGER = '{"version":1,"policies":[{"name":"mesh","revision":"x","containers":["traffic-proxy","agent"]}]}'


def _reserved(obj: dict[str, Any], rule: dict[str, Any] | None = None, **kwargs: Any) -> list[tuple[str, str]]:
    policies = policy_set(policy("names", [{"reservedContainerNames": rule or {}}]),
                          extra_files={"inject.yaml": INJECTION})
    return [(v.check, v.path) for v in run(policies, obj, **kwargs).violations]


def test_user_container_with_an_injected_name_is_reported() -> None:
    obj = pod(container("app"), initContainers=[container("traffic-proxy", "my/proxy:1")])
    assert _reserved(obj) == [("reservedName", "spec.initContainers[traffic-proxy].name")]
    policies = policy_set(policy("names", [{"reservedContainerNames": {}}]), extra_files={"inject.yaml": INJECTION})
    message = run(policies, obj).message or ""
    assert 'container name "traffic-proxy" is reserved for the container that injection policy "mesh" injects' \
        in message


def test_injected_containers_pass_when_they_are_what_the_policy_renders() -> None:
    sidecars = [container("traffic-proxy", "registry.example.com/proxy:2.0", restartPolicy="Always"),
                container("agent", "registry.example.com/agent:default", restartPolicy="Always")]
    # Judged by what they are, ledger or not: the templated image is rendered for this pod.
    assert _reserved(pod(container("app"), annotations={"runtime.platform.io/status": LEDGER},
                         initContainers=sidecars)) == []
    assert _reserved(pod(container("app"), initContainers=sidecars)) == []
    assert _reserved(pod(container("app"), annotations={"runtime.platform.io/status": "{"},
                         initContainers=sidecars)) == []
    # Rendered for another namespace, the agent is not what the policy injects here.
    assert _reserved(pod(container("app"), initContainers=sidecars), namespace="shop") == [
        ("reservedName", "spec.initContainers[agent].name")]


@pytest.mark.parametrize(("change", "why"), [
    ({"image": "evil.example.com/proxy:2.0"}, "its image is 'evil.example.com/proxy:2.0', not"),
    ({"command": ["/bin/sh", "-c", "curl evil"]}, "its command is ['/bin/sh', '-c', 'curl evil'], not None"),
    ({"restartPolicy": None}, "its restartPolicy is None, not 'Always'"),
])
def test_a_ledger_cannot_vouch_for_a_container_that_is_not_the_injected_one(change: dict[str, Any],
                                                                             why: str) -> None:
    proxy = {k: v for k, v in {**container("traffic-proxy", "registry.example.com/proxy:2.0",
                                           restartPolicy="Always"), **change}.items() if v is not None}
    obj = pod(container("app"), annotations={"runtime.platform.io/status": LEDGER}, initContainers=[proxy])
    assert _reserved(obj) == [("reservedName", "spec.initContainers[traffic-proxy].name")]
    policies = policy_set(policy("names", [{"reservedContainerNames": {}}]), extra_files={"inject.yaml": INJECTION})
    assert f"not what policy mesh injects: {why}" in (run(policies, obj).message or "")


def test_a_native_sidecar_moved_into_the_app_containers_is_not_the_injected_one() -> None:
    obj = pod(container("app"), container("traffic-proxy", "registry.example.com/proxy:2.0", restartPolicy="Always"))
    assert _reserved(obj) == [("reservedName", "spec.containers[traffic-proxy].name")]


def test_what_defaulting_and_other_webhooks_add_to_an_injected_container_passes() -> None:
    policies = policy_set(policy("names", [{"reservedContainerNames": {}}]), extra_files={"inject.yaml": """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: agent}
spec:
  inject:
    sidecars:
      - name: agent
        image: registry.example.com/agent:1
        args: [run]
        env: [{name: MODE, value: strict}, {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        readinessProbe: {httpGet: {path: /ready, port: 9000}}
        resources: {limits: {memory: 64Mi}}
"""})
    agent = container("agent", "registry.example.com/agent:1", args=["run"], restartPolicy="Always",
                      imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log",
                      env=[{"name": "MODE", "value": "strict"}, {"name": "TRACE", "value": "1"},
                           {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                      "fieldPath": "metadata.name"}}}],
                      readinessProbe={"httpGet": {"path": "/ready", "port": 9000, "scheme": "HTTP"},
                                      "timeoutSeconds": 1, "periodSeconds": 10},
                      resources={"limits": {"memory": "128Mi"}})   # a vertical autoscaler's
    assert run(policies, pod(container("app"), initContainers=[agent])).violations == ()
    agent["env"][0]["value"] = "lax"
    decision = run(policies, pod(container("app"), initContainers=[agent]))
    assert [v.path for v in decision.violations] == ["spec.initContainers[agent].name"]
    assert "its env differs" in (decision.message or "")


def test_a_name_is_reserved_only_where_the_injecting_policy_applies() -> None:
    scoped = INJECTION.replace("spec:\n  inject:", "spec:\n  match: {namespaces: {include: [payments-*]}}\n  inject:")
    policies = policy_set(policy("names", [{"reservedContainerNames": {}}]), extra_files={"inject.yaml": scoped})
    own = pod(container("app"), container("traffic-proxy", "my/proxy:1"))
    assert run(policies, own, namespace="shop").violations == ()
    assert [v.path for v in run(policies, own, namespace="payments-eu").violations] == [
        "spec.containers[traffic-proxy].name"]
    template = controller("Deployment", own)
    assert run(policies, template, kind="Deployment", namespace="shop").violations == ()
    assert run(policies, template, kind="Deployment", namespace="payments-eu").violations != ()


def test_a_pod_opted_out_of_a_policy_that_allows_it_may_use_its_names() -> None:
    own = pod(container("app"), container("traffic-proxy", "my/proxy:1"),
              annotations={"runtime.platform.io/inject-mesh": "false"})
    assert _reserved(own) == []


def test_injected_volume_names_are_reserved() -> None:
    policies = policy_set(policy("names", [{"reservedContainerNames": {}}]), extra_files={"inject.yaml": """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: logs}
spec:
  match: {workloads: [Deployment]}
  inject:
    volumes:
      - {name: app-logs, source: {emptyDir: {sizeLimit: 1Gi}}}
      - {name: scratch, source: {emptyDir: {}}, onConflict: Keep}
"""})
    own = pod(container("app"), volumes=[{"name": "app-logs", "configMap": {"name": "mine"}},
                                         {"name": "scratch", "emptyDir": {}}])
    decision = run(policies, controller("Deployment", own), kind="Deployment")
    assert [(v.check, v.path) for v in decision.violations] == [
        ("reservedVolumeName", "spec.template.spec.volumes[0].name")]
    assert 'volume name "app-logs" is reserved for the volume that injection policy "logs" injects; ' \
           "rename this volume and its mounts" in (decision.message or "")
    # Not reserved for a StatefulSet, which the policy does not match.
    assert run(policies, controller("StatefulSet", own), kind="StatefulSet").violations == ()
    # In a Deployment's pod, the injected volume passes; the pod's own does not.
    owner = {"kind": "ReplicaSet", "name": "web-5d8f", "controller": True}
    injected = pod(container("app"), volumes=[{"name": "app-logs", "emptyDir": {"sizeLimit": "1Gi"}}],
                   labels={"pod-template-hash": "5d8f"})
    injected["metadata"]["ownerReferences"] = [owner]
    assert run(policies, injected).violations == ()
    own["metadata"] = {**injected["metadata"]}
    assert [v.check for v in run(policies, own).violations] == ["reservedVolumeName"]


def test_conflict_rule_keep_does_not_reserve_the_name() -> None:
    assert _reserved(pod(container("relaxed", "mine:1"))) == []


def test_template_reserved_name_is_always_the_users() -> None:
    template = pod(container("app"), container("traffic-proxy", "registry.example.com/proxy:2.0"),
                   annotations={"runtime.platform.io/status": LEDGER})
    assert _reserved(controller("Deployment", template), kind="Deployment") == [
        ("reservedName", "spec.template.spec.containers[traffic-proxy].name")]


def test_explicit_reserved_names_and_opting_out_of_injection_names() -> None:
    obj = pod(container("traffic-proxy", "x:1"), container("vault-agent", "y:1"))
    rule = {"names": ["vault-agent"], "fromInjectionPolicies": False}
    assert _reserved(obj, rule) == [("reservedName", "spec.containers[vault-agent].name")]


def test_what_depends_on_the_pods_name_is_not_compared() -> None:
    """The API server names a generateName pod after the mutating webhooks ran, and the
    decision memo answers /validate without the name: a rendering that reads it (podName, a
    bare pod's workload.name) cannot be compared, the rest still is."""
    policies = policy_set(policy("names", [{"reservedContainerNames": {}}]), extra_files={"inject.yaml": """
apiVersion: runtime.platform.io/v1
kind: InjectionPolicy
metadata: {name: agent}
spec:
  inject:
    sidecars:
      - {name: agent, image: "registry.example.com/agent:1", args: ["--pod={{ podName }}", "--ns={{ namespace }}"]}
"""})
    # Mutated while it had only a generateName; validated under the name it was given.
    injected = container("agent", "registry.example.com/agent:1", args=["--pod=", "--ns=default"],
                         restartPolicy="Always")
    obj = pod(container("app"), initContainers=[injected], name="web-x7k2p")
    obj["metadata"]["generateName"] = "web-"
    assert run(policies, obj).violations == ()
    for change in ({"args": ["--pod=web-x7k2p", "--ns=shop"]}, {"args": ["--pod="]},
                   {"image": "evil.example.com/agent:1"}):
        changed = {**injected, **change}
        obj["spec"]["initContainers"] = [changed]
        assert [v.path for v in run(policies, obj).violations] == ["spec.initContainers[agent].name"], change
    obj["spec"]["initContainers"] = [{**injected, "args": ["--pod=web-x7k2p", "--ns=default"]}]
    assert run(policies, obj).violations == ()
