"""Comparing recorded answers with the golden files, and saying how they differ in a form a
reviewer can read: per case, a unified diff of the answer and its patch as indented JSON."""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence

from tests.golden.cli import split_transcripts

# Enough to see what changed without burying the test report.
MAX_CASES_SHOWN = 8
MAX_LINES_PER_CASE = 80


def _readable(line: str) -> list[str]:
    record = json.loads(line)
    out = [f"status {record['status']} ({record['contentType']}), request {record['request']}"]
    if "body" in record:
        out.append(record["body"])
    else:
        out += json.dumps(record["response"], indent=1, ensure_ascii=False).splitlines()
    if "patch" in record:
        out.append("patch:")
        out += json.dumps(record["patch"], indent=1, ensure_ascii=False).splitlines()
    return out


def _by_case(lines: Sequence[str]) -> dict[str, str]:
    return {json.loads(line)["case"]: line for line in lines if line.strip()}


def _diff(expected: list[str], actual: list[str], name: str) -> list[str]:
    diff = list(difflib.unified_diff(expected, actual, f"golden {name}", f"now {name}", lineterm="", n=2))
    if len(diff) > MAX_LINES_PER_CASE:
        diff = diff[:MAX_LINES_PER_CASE] + [f"... {len(diff) - MAX_LINES_PER_CASE} more diff lines"]
    return diff


def _report(sections: list[list[str]], missing: list[str], extra: list[str], file: str) -> str:
    if not (sections or missing or extra):
        return ""
    out = [f"{file}: {len(sections)} case(s) changed, {len(missing)} gone, {len(extra)} new"]
    out += [f"gone: {case}" for case in missing] + [f"new: {case}" for case in extra]
    for section in sections[:MAX_CASES_SHOWN]:
        out += section
    if len(sections) > MAX_CASES_SHOWN:
        out.append(f"... and {len(sections) - MAX_CASES_SHOWN} more changed cases")
    out.append("If the change is intended, run `make golden` and review the diff of tests/golden/.")
    return "\n".join(out)


def diff_answers(golden_text: str, actual_lines: Sequence[str], *, file: str) -> str:
    """'' when the answers are the golden ones, else a readable account of the differences."""
    golden, actual = _by_case(golden_text.splitlines()), _by_case(actual_lines)
    sections = []
    for case in (c for c in actual if c in golden and golden[c] != actual[c]):
        diff = _diff(_readable(golden[case]), _readable(actual[case]), case)
        if not diff:   # equal once indented: the bytes differ in spacing or escaping
            diff = _diff([golden[case]], [actual[case]], case)
        sections.append(diff)
    order_changed = [c for c in golden if c in actual] != [c for c in actual if c in golden]
    if order_changed and not sections:
        sections.append([f"{file}: the same answers in another order"])
    return _report(sections, [c for c in golden if c not in actual], [c for c in actual if c not in golden], file)


def diff_transcripts(golden_text: str, actual_text: str, *, file: str) -> str:
    """'' when the CLI transcripts are the golden ones, else a diff per changed invocation."""
    golden, actual = split_transcripts(golden_text), split_transcripts(actual_text)
    sections = [_diff(golden[c].splitlines(), actual[c].splitlines(), c)
                for c in actual if c in golden and golden[c] != actual[c]]
    if not sections and golden_text != actual_text and list(golden) == list(actual):
        sections.append(_diff(golden_text.splitlines(), actual_text.splitlines(), file))
    return _report(sections, [c for c in golden if c not in actual], [c for c in actual if c not in golden], file)
