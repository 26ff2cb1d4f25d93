"""Logging setup: one JSON object per line (for log pipelines) or plain text."""

from __future__ import annotations

import logging
import reprlib
import sys
import time
from collections.abc import Sequence
from typing import Any, overload

import orjson

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# Names taken from a request are logged: a client may send anything there (a mutating
# webhook sees pods before the API server validates their names). Kubernetes names are
# at most 253 characters.
SHOWN_MAX = 253
# A list in a log line (a decision's violations) shows this many entries, then how many
# it left out; each entry at most ENTRY_SHOWN_MAX characters (a violation's field path
# holds container names).
LIST_SHOWN_MAX = 16
ENTRY_SHOWN_MAX = 400
# A message (a denial's text, which quotes the pod) at most this many characters.
MESSAGE_SHOWN_MAX = 2048
# The longest line either format writes, in bytes (a backstop: the bounds above keep a
# decision line well under it). A longer one is written with its fields cut.
LINE_MAX = 64 * 1024
_reprs = reprlib.Repr()   # keyword arguments only from Python 3.12
_reprs.maxlevel, _reprs.maxstring, _reprs.maxother = 2, SHOWN_MAX, SHOWN_MAX


@overload
def shown(value: str, limit: int = SHOWN_MAX) -> str: ...
@overload
def shown(value: Any, limit: int = SHOWN_MAX) -> str | None: ...
def shown(value: Any, limit: int = SHOWN_MAX) -> str | None:
    """`value` as one safe piece of a log line: at most `limit` characters (and "…" when
    cut), control characters escaped (so no line can be forged in the text format), a
    non-string as its type's name; None stays None."""
    if value is None:
        return None
    if value.__class__ is not str:
        return f"<{type(value).__name__}>"
    cut = len(value) > limit
    if cut:
        value = value[:limit]
    if not value.isprintable():
        value = value.encode("unicode_escape").decode("ascii")
        if len(value) > limit:  # an escape is up to 10 characters
            value, cut = value[:limit], True
    return value + "…" if cut else value


# The helpers below only cut: they are for JSON fields, which the JSON format escapes
# (the text format writes the message alone, whose names go through `shown`).


def cut_message(value: str | None) -> str | None:
    """A message for a JSON log field: cut to MESSAGE_SHOWN_MAX characters, saying how long it was."""
    if value is None or len(value) <= MESSAGE_SHOWN_MAX:
        return value
    return f"{value[:MESSAGE_SHOWN_MAX]}… ({len(value)} characters in all)"


def cut_items(values: Sequence[str], *, total: int | None = None) -> list[str]:
    """The first LIST_SHOWN_MAX of `values` for a JSON log field, each cut to ENTRY_SHOWN_MAX
    characters, and then, if any were left out, an entry saying how many. `total`: how many
    there are when `values` holds only the first of them (so that the rest need not be built)."""
    items = [v if len(v) <= ENTRY_SHOWN_MAX else v[:ENTRY_SHOWN_MAX] + "…" for v in values[:LIST_SHOWN_MAX]]
    left_out = (len(values) if total is None else total) - len(items)
    if left_out > 0:
        items.append(f"… {left_out} more")
    return items


def _cut_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """`entry` with every text cut to SHOWN_MAX characters and lists summarised: what a line
    too long to write keeps."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if value is None or isinstance(value, (int, float, bool)):
            out[key] = value
        elif key == "exception" and isinstance(value, str):
            out[key] = value[-MESSAGE_SHOWN_MAX:]  # a traceback's end says what failed
        elif isinstance(value, str):
            out[key] = value if len(value) <= SHOWN_MAX else f"{value[:SHOWN_MAX]}… ({len(value)} characters in all)"
        elif isinstance(value, (list, tuple)):
            out[key] = [_reprs.repr(v) if not isinstance(v, str) else shown(v) for v in value[:LIST_SHOWN_MAX]]
            if len(value) > LIST_SHOWN_MAX:
                out[key].append(f"… {len(value) - LIST_SHOWN_MAX} more")
        else:
            out[key] = _reprs.repr(value)
    return out


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one strftime per second, not per line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "time": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            line = orjson.dumps(entry, default=str)
        except (orjson.JSONEncodeError, RecursionError):
            # A value orjson refuses (nested too deep): the line is still written, with
            # such values summarised, rather than lost to a "Logging error" dump.
            line = orjson.dumps({k: v if v is None or isinstance(v, (str, int, float, bool)) else _reprs.repr(v)
                                 for k, v in entry.items()})
        if len(line) > LINE_MAX:
            line = orjson.dumps(_cut_fields(entry), default=str)
        return line.decode()


def configure(*, level: str, fmt: str) -> None:
    # A decision line is written for every request at the default level. Neither format
    # shows the caller's file and line, thread or process, so the logging module need not
    # look them up (the logging HOWTO's "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our decision log on every request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
