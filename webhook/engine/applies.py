"""Whether an injection policy applies to a pod: the pod's opt-in and opt-out choices
(as far as the policy's `optOut` lets it choose), then the policy's `match`.

Injection and validation's reserved names both ask here, so a name is reserved
exactly for the pods the policy would inject it into.
"""

from __future__ import annotations

from collections.abc import Mapping

from webhook.engine.match import mismatch
from webhook.engine.pod import WORKLOAD_LABEL, PodFacts
from webhook.policy.common import ANNOTATION_PREFIX, OptOut
from webhook.policy.compiled import CompiledInjection

INJECT_ANNOTATION = f"{ANNOTATION_PREFIX}/inject"


def policy_annotation(policy: str) -> str:
    """Per-policy opt-in / opt-out annotation: `runtime.platform.io/inject-NAME: "true"|"false"`."""
    return f"{INJECT_ANNOTATION}-{policy}"


def skip_reason(policy: CompiledInjection, facts: PodFacts) -> str | None:
    """None when the policy applies to the pod, otherwise why not (for explain)."""
    if policy.opt_out is OptOut.FORBIDDEN:
        # Mandatory runtime: what the pod's author writes cannot turn it off, and the
        # workload profile comes from the ownerReferences the controllers set.
        return mismatch(policy.match, facts.from_owners())
    if facts.annotations.get(INJECT_ANNOTATION) == "false":
        return f"pod opted out ({INJECT_ANNOTATION}: \"false\")"
    choice = facts.annotations.get(policy_annotation(policy.name))
    if choice == "false":
        return f"pod opted out ({policy_annotation(policy.name)}: \"false\")"
    if policy.opt_in and choice != "true":
        return f"opt-in policy; pod is not annotated {policy_annotation(policy.name)}: \"true\""
    return mismatch(policy.match, facts)


def ignored_choices(policy: CompiledInjection, facts: PodFacts) -> list[str]:
    """For a policy the pod cannot opt out of and that applies to it: what the pod wrote to
    avoid it, each as a warning for its author (kubectl prints them)."""
    if policy.opt_out is not OptOut.FORBIDDEN:
        return []
    warnings = [f"annotation {key}: \"false\" is ignored for policy {policy.name}, which pods cannot "
                "opt out of (optOut: Forbidden)"
                for key in (INJECT_ANNOTATION, policy_annotation(policy.name))
                if facts.annotations.get(key) == "false"]
    if facts.workload_kind is not facts.owner_profile:
        # The label holds a profile name here; the owner kind is the pod's to write, so it is cut.
        warnings.append(f"label {WORKLOAD_LABEL}: {facts.workload_kind.value!r} is ignored for policy "
                        f"{policy.name} (optOut: Forbidden), which takes the workload from the pod's "
                        f"ownerReferences ({_cut(facts.owner_kind)})")
    return warnings


def _cut(text: str, limit: int = 63) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def opted_out_of_all(annotations: Mapping[str, str], policies: tuple[CompiledInjection, ...]) -> bool:
    """The pod opted out of injection as a whole and every policy lets it."""
    return annotations.get(INJECT_ANNOTATION) == "false" and all(p.opt_out is OptOut.ALLOWED for p in policies)
