"""Offline admission for the command line: read manifests, run them through the same
engine as the server (injection, then validation, as the API server orders them)
and report. Nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from webhook.core.decision import Decision
from webhook.engine.inject import InjectionResult, inject
from webhook.engine.namespaces import LabelsUnknown, NamespaceLabels
from webhook.engine.validate import validate
from webhook.engine.target import CONTROLLERS, at_path
from webhook.core.jsonvalue import as_dict, as_str, str_map
from webhook.policy.common import check_label_key, check_label_value
from webhook.policy.loader import PolicySet, SafeLoader
from webhook.core.request import make_request, object_kind

# Stand-ins for what a controller adds to the pods it creates, so that workload
# detection and templates see offline what they will see in the cluster.
_OFFLINE_HASH = "offline"
_CRONJOB_SUFFIX = "29000000"  # a scheduled-time suffix, in minutes since the epoch


# The scope of the second validation of a controller: the pod its template makes, injected.
POD_FROM_TEMPLATE = "Pod from its template"


class InputError(Exception):
    """A manifest that cannot be read: names the file and, when known, the line."""


@dataclass(frozen=True)
class Document:
    where: str                  # FILE:LINE of the document's start
    obj: dict[str, Any]

    @property
    def title(self) -> str:
        meta = as_dict(self.obj.get("metadata"))
        name = meta.get("name") or meta.get("generateName") or "(unnamed)"
        return f"{self.obj.get('kind', '?')}/{name}"


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def read_inputs(paths: Sequence[str], *, recursive: bool = False) -> list[Document]:
    """The objects of every `-f` as kubectl reads them: a file, `-` for standard input
    (once), or a directory's .yaml/.yml/.json files in name order (its subdirectories
    too with `recursive`). Hidden files and directories are skipped."""
    if list(paths).count("-") > 1:
        raise InputError("-: standard input can be read only once")
    docs: list[Document] = []
    for path in paths:
        if path != "-" and Path(path).is_dir():
            files = manifest_files(Path(path), recursive=recursive)
            if not files:
                hint = "" if recursive else " (subdirectories are read with -R)"
                raise InputError(f"{path}: no {', '.join(MANIFEST_SUFFIXES)} files in the directory{hint}")
            for file in files:
                docs += read_documents(str(file), allow_empty=True)
        else:
            docs += read_documents(path)
    if not docs:
        raise InputError(f"{', '.join(paths)}: no Kubernetes objects found")
    return docs


def manifest_files(directory: Path, *, recursive: bool) -> list[Path]:
    found: list[Path] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found += [Path(root, n) for n in names if n.endswith(MANIFEST_SUFFIXES) and not n.startswith(".")]
    return sorted(p for p in found if p.is_file())


def check_namespace(documents: Sequence[Document], namespace: str | None) -> None:
    """Refuse, as kubectl does, a --namespace that contradicts an object's own: the
    object would be admitted in a namespace it does not name."""
    for doc in documents:
        own = as_str(as_dict(doc.obj.get("metadata")).get("namespace"))
        if namespace and own and own != namespace:
            raise InputError(f'{doc.where}: {doc.title}: the namespace from the provided object "{own}" '
                             f'does not match the namespace "{namespace}". You must pass '
                             f"'--namespace={own}' to perform this operation.")


def read_documents(path: str, *, allow_empty: bool = False) -> list[Document]:
    """All mappings in a YAML or JSON file (`-` reads standard input)."""
    label = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{label}: cannot read: {exc}") from None
    docs: list[Document] = []
    loader = SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            obj = loader.construct_document(node)
            where = f"{label}:{node.start_mark.line + 1}"
            if obj is None:
                continue
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a Kubernetes object (a mapping)")
            if obj.get("kind") == "List" and isinstance(obj.get("items"), list):
                docs.extend(Document(where, item) for item in obj["items"] if isinstance(item, dict))
            else:
                docs.append(Document(where, obj))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise InputError(f"{label}{line}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except ValueError as exc:
        raise InputError(f"{label}:{loader.line + 1}: invalid value: {exc}") from None
    finally:
        loader.dispose()
    if not docs and not allow_empty:
        raise InputError(f"{label}: no Kubernetes objects found")
    return docs


# The API server sets this label on every namespace (since Kubernetes 1.21), so a
# selector may name a namespace by it; offline labels get it too.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
_NO_LABELS = ("give them with --namespace-labels key=value,... or include the Namespace object "
              "in the input")


def parse_namespace_labels(text: str) -> dict[str, str]:
    """`key=value,...` (empty: no labels); ValueError naming the bad entry."""
    labels: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if not sep:
            raise ValueError(f"{entry!r} is not key=value")
        check_label_key(key.strip())
        check_label_value(key.strip(), value.strip())
        labels[key.strip()] = value.strip()
    return labels


@dataclass(frozen=True)
class NamespaceLabelSource:
    """Namespace labels offline: a Namespace object in the input gives its own; the
    command line's --namespace-labels those of any other namespace; else unknown."""

    objects: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    given: Mapping[str, str] | None = None
    missing: str = _NO_LABELS   # how to give labels that are missing

    @classmethod
    def of(cls, documents: Sequence[Document], given: Mapping[str, str] | None = None) -> NamespaceLabelSource:
        objects = {}
        for doc in documents:
            if doc.obj.get("kind") == "Namespace" and doc.obj.get("apiVersion") == "v1":
                metadata = as_dict(doc.obj.get("metadata"))
                name = as_str(metadata.get("name"))
                if name:
                    objects[name] = str_map(metadata.get("labels"))
        return cls(objects, given)

    def __call__(self, namespace: str) -> NamespaceLabels:
        labels = self.objects.get(namespace, self.given)
        if labels is None:
            return LabelsUnknown(self.missing)
        return {**labels, NAMESPACE_NAME_LABEL: namespace}


def no_namespace_labels(_namespace: str) -> NamespaceLabels:
    return LabelsUnknown(_NO_LABELS)


def _template_location(obj: dict[str, Any]) -> tuple[str, ...] | None:
    group, kind = object_kind(obj)
    controller = CONTROLLERS.get((group, kind))
    return controller[0] if controller else None


def _owner_for(obj: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The ownerReference (and extra labels) a controller's pods carry."""
    kind = obj.get("kind")
    labels: dict[str, str] = {}
    if kind == "Deployment":
        labels["pod-template-hash"] = _OFFLINE_HASH
        kind, name = "ReplicaSet", f"{name}-{_OFFLINE_HASH}"
    elif kind == "CronJob":
        kind, name = "Job", f"{name}-{_CRONJOB_SUFFIX}"
    return {"apiVersion": "v1", "kind": kind, "name": name, "uid": "offline", "controller": True}, labels


def pod_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The Pod a document is or whose template it holds; None for other kinds."""
    if obj.get("kind") == "Pod":
        return obj
    where = _template_location(obj)
    if where is None:
        return None
    template = at_path(obj, where)
    name = str((obj.get("metadata") or {}).get("name") or "workload")
    owner, extra_labels = _owner_for(obj, name)
    metadata = copy.deepcopy(template.get("metadata") or {})
    metadata["generateName"] = f"{owner['name']}-"
    metadata["ownerReferences"] = [owner]
    if extra_labels:
        metadata["labels"] = {**(metadata.get("labels") or {}), **extra_labels}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": copy.deepcopy(template.get("spec") or {})}


def with_injected_template(obj: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """The controller with its template replaced by the injected pod (minus what the
    controller itself would add to its pods)."""
    where = _template_location(obj)
    assert where is not None
    result = copy.deepcopy(obj)
    metadata = dict(pod.get("metadata") or {})
    for key in ("generateName", "ownerReferences"):
        metadata.pop(key, None)
    labels = dict(metadata.get("labels") or {})
    if labels.get("pod-template-hash") == _OFFLINE_HASH:
        del labels["pod-template-hash"]
    if labels:
        metadata["labels"] = labels
    else:
        metadata.pop("labels", None)
    parent = result
    for key in where[:-1]:
        parent = parent.setdefault(key, {})
    parent[where[-1]] = {"metadata": metadata, "spec": pod.get("spec") or {}}
    return result


@dataclass
class Admission:
    """What the API server would do with one object: mutate (pods), then validate."""

    document: Document
    namespace: str
    injection: InjectionResult | None = None
    mutated: dict[str, Any] | None = None            # the object after injection
    checks: list[str] = field(default_factory=list)  # engine self-check failures
    validations: list[tuple[str, Decision]] = field(default_factory=list)

    @property
    def denied(self) -> bool:
        return bool(self.injection and self.injection.denial) or any(not d.allowed for _, d in self.validations)


def admit(document: Document, *, policies: PolicySet, namespace: str | None = None,
          username: str = "offline", groups: tuple[str, ...] = (),
          namespace_labels: Callable[[str], NamespaceLabels] = no_namespace_labels) -> Admission:
    """Raises NamespaceLabelsUnavailable when a namespaceSelector needs labels that
    `namespace_labels` does not give."""
    obj = document.obj
    ns = namespace or as_str(as_dict(obj.get("metadata")).get("namespace")) or "default"
    result = Admission(document=document, namespace=ns)
    labels = namespace_labels(ns)
    pod = pod_of(obj)
    if pod is None:
        result.mutated = obj
    else:
        injection = inject(pod, namespace=ns, policies=policies, namespace_labels=labels)
        result.injection = injection
        if injection.denial:
            return result
        result.checks = _self_check(pod, injection, namespace=ns, policies=policies, namespace_labels=labels)
        result.mutated = injection.pod if obj is pod else with_injected_template(obj, injection.pod)
    # Only pods are mutated in the cluster: a controller is validated as submitted,
    # and the pods it will create are validated after injection.
    request = make_request(result.mutated if obj is pod else obj, namespace=ns, username=username,
                           groups=groups)
    result.validations.append((str(obj.get("kind", "object")),
                               validate(request, policies, namespace_labels=labels)))
    if pod is not None and obj is not pod and result.injection is not None:
        pod_request = make_request(result.injection.pod, namespace=ns, username=username, groups=groups)
        result.validations.append((POD_FROM_TEMPLATE,
                                    validate(pod_request, policies, namespace_labels=labels)))
    return result


def _self_check(pod: dict[str, Any], injection: InjectionResult, *, namespace: str,
                policies: PolicySet, namespace_labels: NamespaceLabels) -> list[str]:
    """The patch applies strictly and a second pass adds nothing."""
    problems = []
    try:
        applied = jsonpatch.apply_patch(pod, injection.patch, in_place=False)
        if applied != injection.pod:
            problems.append("the patch does not produce the injected pod")
    except jsonpatch.JsonPatchException as exc:
        problems.append(f"the patch does not apply: {exc}")
        return problems
    again = inject(applied, namespace=namespace, policies=policies, namespace_labels=namespace_labels)
    if again.patch:
        problems.append(f"not a fixed point: a second pass adds {len(again.patch)} operation(s)")
    return problems
