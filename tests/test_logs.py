"""Log lines hold what a request sent only within bounds: names, messages, lists, and as a
backstop the whole line."""

from __future__ import annotations

import json
import logging

import pytest

from webhook.runtime.logs import (ENTRY_SHOWN_MAX, LINE_MAX, LIST_SHOWN_MAX, MESSAGE_SHOWN_MAX, SHOWN_MAX, JsonFormatter,
                          cut_items, cut_message, shown)


@pytest.mark.parametrize(("value", "expected"), [
    ("web-1", "web-1"),
    ("a" * SHOWN_MAX, "a" * SHOWN_MAX),
    ("a" * (SHOWN_MAX + 1), "a" * SHOWN_MAX + "…"),
    ("x\ny", "x\\ny"),
    # Escaping may lengthen a name tenfold; the result is cut again.
    ("\x00" * SHOWN_MAX, ("\\x00" * SHOWN_MAX)[:SHOWN_MAX] + "…"),
    (["a"], "<list>"),
    (None, None),
])
def test_shown_cuts_and_escapes(value: object, expected: str | None) -> None:
    assert shown(value) == expected


def test_a_message_is_cut_saying_how_long_it_was() -> None:
    assert cut_message("short") == "short"
    cut = cut_message("m" * 100_000)
    assert cut == "m" * MESSAGE_SHOWN_MAX + "… (100000 characters in all)"


@pytest.mark.parametrize(("count", "total", "last"), [
    (3, None, None), (LIST_SHOWN_MAX, None, None), (LIST_SHOWN_MAX + 5, None, "… 5 more"),
    (LIST_SHOWN_MAX, 30_000, f"… {30_000 - LIST_SHOWN_MAX} more"),
])
def test_a_list_shows_its_first_entries_and_how_many_it_left_out(count: int, total: int | None,
                                                                   last: str | None) -> None:
    items = cut_items([f"v{i}" + "x" * 1000 for i in range(count)], total=total)
    shown_count = min(count, LIST_SHOWN_MAX)
    assert len(items) == shown_count + (last is not None)
    assert all(len(item) == ENTRY_SHOWN_MAX + 1 for item in items[:shown_count])
    if last is not None:
        assert items[-1] == last


def _format(**extra: object) -> str:
    record = logging.LogRecord("webhook.admission.server", logging.INFO, "", 0, "decided", None, None)
    record.__dict__.update(extra)
    return JsonFormatter().format(record)


def test_a_json_line_over_the_limit_is_written_with_its_fields_cut() -> None:
    line = _format(huge="h" * (LINE_MAX * 2), items=["i" * 5000] * 1000, count=3, nested={"a": "b" * 100_000})
    assert len(line.encode()) < LINE_MAX
    entry = json.loads(line)
    assert entry["msg"] == "decided" and entry["count"] == 3
    assert entry["huge"].startswith("h" * SHOWN_MAX + "… (")
    assert len(entry["items"]) == LIST_SHOWN_MAX + 1 and entry["items"][-1] == f"… {1000 - LIST_SHOWN_MAX} more"
    small = _format(podName="web-1")
    assert json.loads(small)["podName"] == "web-1"  # a line within the limit is written as it is
