"""The three PATCH formats kube-apiserver accepts for built-in kinds (apply is not served).

- JSON patch (RFC 6902), `application/json-patch+json`;
- JSON merge patch (RFC 7386), `application/merge-patch+json`: lists are replaced;
- strategic merge patch, `application/strategic-merge-patch+json`: as merge patch, except
  that lists with a patch merge key in the Kubernetes API types merge element by element on
  that key (containers by name, volumeMounts by mountPath, ...), an element with
  `$patch: delete` removes the element of that key, `$patch: replace` replaces the whole
  map or list, and `$setElementOrder/...` and `$retainKeys` directives are dropped
  (the order they would impose is what the elements' merge already gives here).
  The merge keys are those of k8s.io/api's `patchMergeKey` tags for the fields a
  controller patches; any other list is replaced, as for a list without a merge key.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

# Field name -> patchMergeKey in k8s.io/api (core/v1 PodSpec and Container, meta/v1,
# apps/v1 status conditions). A list field not named here has no merge key: replaced.
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "ports": "containerPort", "imagePullSecrets": "name", "hostAliases": "ip",
    "ownerReferences": "uid", "conditions": "type", "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name", "schedulingGates": "name",
}


class PatchError(Exception):
    """A patch the API server refuses: `code` 400, 415 or 422 with the server's reason."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
        elif isinstance(value, list):
            result[key] = [strategic_merge_patch(None, v) if isinstance(v, dict) else copy.deepcopy(v)
                           for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    result = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(422, "Invalid", f"map: {item!r} does not contain declared merge key: {key}")
        position = next((i for i, old in enumerate(result)
                         if isinstance(old, dict) and old.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(strategic_merge_patch(None, item))
        else:
            result[position] = strategic_merge_patch(result[position], item)
    return result


def apply_patch(current: dict[str, Any], body: bytes, content_type: str) -> dict[str, Any]:
    """The object `current` becomes under this PATCH request; PatchError when refused."""
    if content_type not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH):
        raise PatchError(415, "UnsupportedMediaType",
                         f"the body of the request was in an unknown format - accepted media types include: "
                         f"{JSON_PATCH}, {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH} (the fake API server does not "
                         f"implement {content_type})")
    try:
        patch = json.loads(body)
    except ValueError as exc:
        raise PatchError(400, "BadRequest", f"invalid JSON patch body: {exc}") from None
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise PatchError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        try:
            result = jsonpatch.apply_patch(current, patch)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise PatchError(422, "Invalid", f"the server rejected our request due to an error in our "
                             f"request: testing value failed: {exc}") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise PatchError(422, "Invalid", f"the server rejected our request: {exc}") from None
    elif not isinstance(patch, dict):
        raise PatchError(400, "BadRequest", "a merge patch must be a JSON object")
    elif content_type == MERGE_PATCH:
        result = merge_patch(current, patch)
    else:
        result = strategic_merge_patch(current, patch)
    if not isinstance(result, dict):
        raise PatchError(422, "Invalid", "the patch does not leave an object")
    return result
