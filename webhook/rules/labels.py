"""Required labels and annotations, each with an optional value pattern."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from webhook.core.jsonvalue import as_dict
from webhook.core.finding import Finding

__all__ = ["RequiredKey", "check_required_keys"]

# Kubernetes caps a label value at 63 characters; anything longer in a message is noise.
_SHOWN_VALUE = 63


@dataclass(frozen=True)
class RequiredKey:
    key: str
    pattern: re.Pattern[str] | None = None   # the whole value must match (fullmatch)


def check_required_keys(metadata: Mapping[str, Any], *, field: Literal["labels", "annotations"],
                        required: Sequence[RequiredKey]) -> list[Finding]:
    present = as_dict(metadata.get(field))
    noun = field[:-1]
    findings: list[Finding] = []
    for want in required:
        path = f"metadata.{field}[{want.key}]"
        value = present.get(want.key)
        if not isinstance(value, str):
            findings.append(Finding("missing", path, f'{noun} "{want.key}" is required'))
            continue
        if want.pattern is not None and want.pattern.fullmatch(value) is None:
            shown = value if len(value) <= _SHOWN_VALUE else value[:_SHOWN_VALUE] + "…"
            findings.append(Finding("value", path, f'{noun} "{want.key}" value "{shown}" does not '
                                    f"match {want.pattern.pattern}"))
    return findings
