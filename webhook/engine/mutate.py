"""The mutating decision: only pod CREATE (no subresource) is injected; all else passes."""

from __future__ import annotations

from webhook.core import decision
from webhook.core.decision import Decision
from webhook.engine.bounds import DEFAULT_LIMITS, MAX_MESSAGE_CHARS, Limits, bounded_warnings, clip
from webhook.engine.inject import inject
from webhook.engine.namespaces import NOT_GIVEN, NamespaceLabels
from webhook.policy.loader import PolicySet
from webhook.core.request import AdmissionRequest


def is_pod_create(request: AdmissionRequest) -> bool:
    resource = request.resource
    return pod_create(request.operation, request.sub_resource, resource.group, resource.resource, request.object)


def pod_create(operation: object, sub_resource: object, group: object, resource: object, obj: object) -> bool:
    """The rule of `is_pod_create` on bare values: the memo applies it to the request as sent."""
    return (operation == "CREATE" and not sub_resource and resource == "pods" and not group
            and isinstance(obj, dict))


def mutate(request: AdmissionRequest, policies: PolicySet, *, limits: Limits = DEFAULT_LIMITS,
           deadline: float | None = None, namespace_labels: NamespaceLabels = NOT_GIVEN) -> Decision:
    """`deadline`: a `time.perf_counter()` time; past it, DeadlineExceeded (engine/bounds.py)."""
    # dryRun needs nothing special: computing a patch has no side effects.
    if not is_pod_create(request) or not policies.injectors:
        return decision.allowed()
    result = inject(request.object or {}, namespace=request.namespace, policies=policies, limits=limits,
                    deadline=deadline, namespace_labels=namespace_labels)
    # Warnings and messages may quote the pod (an annotation's value): bounded like the patch.
    warnings = bounded_warnings(result.warnings) if result.warnings else ()
    if result.denial is not None:
        return decision.denied(clip(result.denial, MAX_MESSAGE_CHARS), warnings=warnings,
                               applied_policies=result.applied)
    return decision.patched(result.patch, warnings=warnings, applied_policies=result.applied,
                            shadow_policies=result.shadowed)
