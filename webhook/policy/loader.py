"""Read a policy directory into an immutable PolicySet, or report every error with file and line.

Loading is all-or-nothing: a directory with any error yields no PolicySet, so a
bad edit can never partially replace the policies already serving.
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import datetime, timezone
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from webhook.policy.compiled import CompiledInjection, compile_injection
from webhook.policy.errors import PolicyDirectoryError, PolicyError, PolicyLoadError
from webhook.policy.ordering import init_container_order
from webhook.policy.requires import requirement_errors
from webhook.policy.validation import ValidationPolicy, expired_exceptions
from webhook.policy.model import API_VERSION, DOCUMENT_KINDS, PolicyDocument
from webhook.policy.injection import InjectionPolicy

POLICY_SUFFIXES = (".yaml", ".yml")
# Aliases let a file of a few hundred bytes stand for billions of values (a "billion
# laughs"), which would hang every replica's reload. The shipped policies hold 30 to 190
# values each.
MAX_EXPANDED_NODES = 100_000
# libyaml's loader when PyYAML was built with it; same behaviour, much faster.
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class PolicySet:
    revision: str
    injection: tuple[InjectionPolicy, ...] = ()
    validation: tuple[ValidationPolicy, ...] = ()
    # policy name -> file it came from, for messages that point an admin at the file
    sources: Mapping[str, str] = field(default_factory=dict)
    # injected init container / native sidecar name -> its rank in the start order
    init_order: Mapping[str, int] = field(default_factory=dict)
    # the injection policies in priority order, prepared for the request path
    injectors: tuple[CompiledInjection, ...] = ()
    # problems that do not stop the load (expired exceptions), for logs and `policies check`
    warnings: tuple[str, ...] = ()

    @property
    def policy_count(self) -> int:
        return len(self.injection) + len(self.validation)


EMPTY = PolicySet(revision="empty")


# A policy document's own `kind:` line, at the top level of a YAML document.
_POLICY_KIND_LINE = re.compile(rb"^kind:[ \t]*[\"']?(InjectionPolicy|ValidationPolicy)[\"']?[ \t]*(#.*)?$",
                               re.MULTILINE)


def policy_files(directory: Path) -> list[Path]:
    """The policy files in `directory`, sorted; hidden entries are skipped because a
    mounted ConfigMap keeps its real files under `..data` and timestamped folders."""
    return sorted(p for p in directory.iterdir()
                  if not p.name.startswith(".") and p.name.endswith(POLICY_SUFFIXES) and p.is_file())


# Subdirectories looked into for misplaced policies. The watcher repeats the walk every
# second: a --policies pointed at a large tree (a home directory, /) must not turn that
# into a crawl, and is reported instead.
MAX_SUBDIRECTORIES = 100


def nested_files(directory: Path) -> tuple[list[Path], bool]:
    """The .yaml/.yml files in the (non-hidden) subdirectories of `directory`, sorted,
    and whether the walk stopped at MAX_SUBDIRECTORIES.

    Only the top level is read; these are looked at so that a policy put in a
    subdirectory is reported instead of silently never applying (policy tests and
    their fixtures live there too, and are left alone)."""
    found: list[Path] = []
    for visited, (root, dirs, names) in enumerate(os.walk(directory)):
        if visited > MAX_SUBDIRECTORIES:
            return sorted(found), True
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))   # a ConfigMap's ..data and the like
        if visited:
            found += [Path(root, n) for n in names if n.endswith(POLICY_SUFFIXES) and not n.startswith(".")]
    return sorted(p for p in found if p.is_file()), False


def watched_files(directory: Path) -> list[Path]:
    """What a reload depends on: the policy files and the files whose content could be
    reported as a policy in a subdirectory."""
    return policy_files(directory) + nested_files(directory)[0]


def _nested_policy_errors(directory: Path) -> list[PolicyError]:
    errors: list[PolicyError] = []
    paths, truncated = nested_files(directory)
    if truncated:
        errors.append(PolicyError(str(directory), None, f"more than {MAX_SUBDIRECTORIES} subdirectories: policies "
                                  "are read from the top level of the policy directory only; give the "
                                  "directory that holds the policy files"))
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError as exc:
            errors.append(PolicyError(str(path), None, f"cannot read: {exc.strerror}"))
            continue
        for match in _POLICY_KIND_LINE.finditer(content):
            line = content.count(b"\n", 0, match.start()) + 1
            errors.append(PolicyError(str(path), line, f"kind {match.group(1).decode()} in a subdirectory is "
                                      f"not read: policies are read from the top level of {directory} only; "
                                      "move the file there"))
    return errors


def load_policy_dir(directory: Path) -> PolicySet:
    """The directory's policies; raises PolicyLoadError when it cannot be read, when any
    file has an error, or when it holds no policy at all."""
    try:
        if not directory.is_dir():
            raise PolicyDirectoryError([PolicyError(
                str(directory), None, "not a directory; give the directory that holds the policy files"
                if directory.exists() else f"policy directory not found (looked for {directory.absolute()})")])
        paths = policy_files(directory)
        nested = _nested_policy_errors(directory)
    except OSError as exc:   # e.g. a directory the server may not list
        raise PolicyDirectoryError([PolicyError(str(directory), None,
                                                f"cannot read the policy directory: {exc.strerror}")]) from None
    files: dict[str, bytes] = {}
    errors: list[PolicyError] = []
    for path in paths:
        try:
            files[str(path)] = path.read_bytes()
        except OSError as exc:
            errors.append(PolicyError(str(path), None, f"cannot read: {exc.strerror}"))
    if errors:
        raise PolicyLoadError(errors + nested)
    try:
        policy_set = load_policy_sources(files)
    except PolicyLoadError as exc:
        raise PolicyLoadError(exc.errors + nested) from None
    if nested:
        raise PolicyLoadError(nested)
    if not policy_set.policy_count:
        # Most likely a mount gone wrong (an empty or missing ConfigMap): serving no
        # policies would silently stop every injection and every validation.
        raise PolicyLoadError([PolicyError(str(directory), None,
                                           f"no policies in {' or '.join(POLICY_SUFFIXES)} files; "
                                           "an empty policy set is refused")])
    return policy_set


def load_policy_sources(files: Mapping[str, bytes]) -> PolicySet:
    """Build a PolicySet from file name -> content; raises PolicyLoadError listing every error."""
    errors: list[PolicyError] = []
    injection: list[InjectionPolicy] = []
    validation: list[ValidationPolicy] = []
    sources: dict[str, str] = {}
    for name in sorted(files):
        for policy, line in _read_documents(name, files[name], errors):
            previous = sources.get(policy.metadata.name)
            if previous is not None:
                errors.append(PolicyError(name, line, f"duplicate policy name (also in {previous})",
                                          policy=policy.metadata.name))
                continue
            sources[policy.metadata.name] = name
            if isinstance(policy, InjectionPolicy):
                injection.append(policy)
            else:
                validation.append(policy)
    injection.sort(key=lambda p: (p.spec.priority, p.metadata.name))
    init_order: dict[str, int] = {}
    if not errors:  # ordering is checked across policies once every file parsed
        init_order = init_container_order(injection, sources, errors)
        errors += requirement_errors(injection, {p.metadata.name for p in validation}, sources)
    if errors:
        raise PolicyLoadError(errors)
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(Path(name).name.encode() + b"\0" + files[name] + b"\0")
    validation.sort(key=lambda p: p.metadata.name)
    today = datetime.now(timezone.utc).date()
    warnings = [f"{sources[p.metadata.name]}: {message}" for p in validation
                for message in expired_exceptions(p, today)]
    return PolicySet(revision=digest.hexdigest()[:12], injection=tuple(injection),
                     validation=tuple(validation), sources=sources, init_order=init_order,
                     injectors=tuple(compile_injection(p) for p in injection), warnings=tuple(warnings))


def _read_documents(name: str, content: bytes,
                    errors: list[PolicyError]) -> list[tuple[PolicyDocument, int]]:
    out: list[tuple[PolicyDocument, int]] = []
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.append(PolicyError(name, None, f"not UTF-8 text: {exc.reason}"))
        return out
    loader = SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            line = node.start_mark.line + 1
            repeated = _repeated_keys(node)
            if repeated:
                errors.extend(PolicyError(name, at, f"duplicate key {key!r} (first on line {first}); "
                                          "YAML would silently keep the last one")
                              for key, at, first in repeated)
                continue
            size = _expanded_size(node)
            if size is None or size > MAX_EXPANDED_NODES:
                errors.append(PolicyError(name, line, "an alias refers to a node that contains it" if size is None
                                          else f"aliases expand this document to more than "
                                               f"{MAX_EXPANDED_NODES:,} values"))
                continue
            doc = loader.construct_document(node)
            if doc is None:
                continue  # an empty document between '---' separators
            policy = _parse_document(name, line, node, doc, errors)
            if policy is not None:
                out.append((policy, line))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        errors.append(PolicyError(name, mark.line + 1 if mark else None, f"invalid YAML: {problem}"))
    except ValueError as exc:
        # PyYAML's constructors raise plain ValueError for values such as the
        # impossible date 2026-02-30; the line is where the reader stopped.
        errors.append(PolicyError(name, loader.line + 1, f"invalid value: {exc}"))
    finally:
        loader.dispose()
    return out


def _repeated_keys(root: yaml.Node) -> list[tuple[str, int, int]]:
    """Keys given twice in one mapping, as (key, line, line of the first). YAML loaders keep
    the last without a word, so a reviewer reading `action: Enforce` would not see the
    `action: Audit` further down that wins. Merge keys (`<<: *anchor`) may be overridden."""
    repeated: list[tuple[str, int, int]] = []
    seen: set[int] = set()   # an alias repeats a node: walk each node once
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(_children(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, str], int] = {}
            for key, _value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line, ident = key.start_mark.line + 1, (key.tag, key.value)
                if ident in first:
                    repeated.append((key.value, line, first[ident]))
                else:
                    first[ident] = line
    return sorted(repeated, key=lambda r: r[1])


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _expanded_size(root: yaml.Node) -> int | None:
    """How many values the document holds once its aliases are expanded, or None when an
    alias refers to a node that contains it. The graph is walked once, not expanded."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()   # on the current path: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
        elif id(node) in open_nodes:
            return None
        elif id(node) not in sizes:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return sizes[id(root)]


def _parse_document(name: str, line: int, node: yaml.Node, doc: Any,
                    errors: list[PolicyError]) -> PolicyDocument | None:
    if not isinstance(doc, dict):
        errors.append(PolicyError(name, line, "a policy document must be a mapping"))
        return None
    policy_name = _name_of(doc)
    if doc.get("apiVersion") != API_VERSION:
        errors.append(PolicyError(name, line, f"apiVersion must be {API_VERSION!r}, got "
                                  f"{doc.get('apiVersion')!r}", policy=policy_name))
        return None
    model = DOCUMENT_KINDS.get(doc.get("kind"))  # type: ignore[arg-type]
    if model is None:
        errors.append(PolicyError(name, line, f"kind must be one of {', '.join(DOCUMENT_KINDS)}, "
                                  f"got {doc.get('kind')!r}", policy=policy_name))
        return None
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        found = [PolicyError(name, _line_of(node, tuple(err["loc"])) or line, _message(err),
                             policy=policy_name, field=_dotted(tuple(err["loc"]))) for err in exc.errors()]
        errors.extend(sorted(found, key=lambda e: e.line or 0))   # in the order a reader meets them
        return None


def _name_of(doc: dict[str, Any]) -> str | None:
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    return str(err["msg"]).removeprefix("Value error, ")


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_of(node: yaml.Node, loc: tuple[Any, ...]) -> int | None:
    """Line of the YAML node at `loc` (a pydantic error location), or of its nearest parent."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
