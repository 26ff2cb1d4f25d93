"""The structural rules checked on an injected pod (webhook/engine/pod_rules.py): each breach
named once, odd JSON read as absent, and only what injection introduced held against it."""

from __future__ import annotations

from typing import Any

from tests.engine_helpers import policies_from_yaml, run
from tests.test_inject_policies import pod, policy
from webhook.engine.pod_rules import pod_problems


def _spec(**parts: Any) -> dict[str, Any]:
    return {"containers": [{"name": "app", "image": "a"}], **parts}


def test_a_sound_spec_has_no_problems() -> None:
    spec = _spec(initContainers=[{"name": "init", "image": "i", "restartPolicy": "Always",
                                  "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                 containers=[{"name": "app", "image": "a", "volumeMounts": [{"name": "v", "mountPath": "/v"},
                                                                          {"name": "v", "mountPath": "/w"}]}],
                 volumes=[{"name": "v", "emptyDir": {}}])
    assert pod_problems(spec) == set()


def test_each_breach_is_named() -> None:
    spec = _spec(initContainers=[{"name": "app", "image": "i", "volumeMounts": [{"name": "gone", "mountPath": "/g"}]}],
                 containers=[{"name": "app", "image": "a", "restartPolicy": "Always",
                              "volumeMounts": [{"name": "v", "mountPath": "/m"}, {"name": "v", "mountPath": "/m"}]}],
                 volumes=[{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}])
    assert pod_problems(spec) == {
        "container name 'app' is used 2 times",
        "volume name 'v' is used 2 times",
        "spec.initContainers[app] mounts volume 'gone', which the pod does not define",
        "spec.containers[app] mounts '/m' 2 times",
        "spec.containers[app] sets restartPolicy, which only init containers may set",
    }


def test_json_of_the_wrong_shape_is_read_as_absent() -> None:
    spec = _spec(containers=[{"name": "app", "image": "a", "volumeMounts": ["x", 5, {"name": 7, "mountPath": "/a"},
                                                                          {"name": "v", "mountPath": ["/b"]}]},
                             {"name": "b", "image": "b", "volumeMounts": {"name": "v"}}, "not a container"],
                 volumes=[{"name": "v", "emptyDir": {}}])
    assert pod_problems(spec) == {"spec.containers[app] mounts volume 7, which the pod does not define"}
    assert pod_problems("not a spec") == set()


def test_injection_is_denied_only_for_problems_it_introduced() -> None:
    # The pod's own breach (a mount of a volume it lacks) is the API server's to refuse; a
    # policy that mounts a volume nobody defines is refused here, naming the volume.
    own = {"name": "app", "image": "a", "volumeMounts": [{"name": "theirs", "mountPath": "/t"}]}
    labels = policies_from_yaml(policy("l", "inject:\n  labels: {injected: 'yes'}\n"))
    assert run(pod(own), policies=labels).denial is None
    mounts = policies_from_yaml(policy("m", "inject:\n  volumeMounts: [{name: missing, mountPath: /m}]\n"))
    denial = run(pod(own), policies=mounts).denial
    assert denial == ("injection would make the pod invalid: spec.containers[app] mounts volume 'missing', "
                      "which the pod does not define")
