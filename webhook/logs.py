"""Logging setup: one JSON object per line (for log pipelines) or plain text."""

from __future__ import annotations

import logging
import reprlib
import sys
import time
from typing import Any, overload

import orjson

# Attributes every LogRecord has; anything else was passed through `extra=` and is logged.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# Names taken from a request are logged: a client may send anything there (a mutating
# webhook sees pods before the API server validates their names). Kubernetes names are
# at most 253 characters.
SHOWN_MAX = 253
_reprs = reprlib.Repr()   # keyword arguments only from Python 3.12
_reprs.maxlevel, _reprs.maxstring, _reprs.maxother = 2, SHOWN_MAX, SHOWN_MAX


@overload
def shown(value: str) -> str: ...
@overload
def shown(value: Any) -> str | None: ...
def shown(value: Any) -> str | None:
    """`value` as one safe piece of a log line: at most SHOWN_MAX characters, control
    characters escaped (so no line can be forged in the text format), a non-string as
    its type's name; None stays None."""
    if value is None:
        return None
    if value.__class__ is not str:
        return f"<{type(value).__name__}>"
    if len(value) > SHOWN_MAX:
        value = value[:SHOWN_MAX] + "…"
    return value if value.isprintable() else value.encode("unicode_escape").decode("ascii")


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
            return orjson.dumps(entry, default=str).decode()
        except (orjson.JSONEncodeError, RecursionError):
            # A value orjson refuses (nested too deep): the line is still written, with
            # such values summarised, rather than lost to a "Logging error" dump.
            return orjson.dumps({k: v if v is None or isinstance(v, (str, int, float, bool)) else _reprs.repr(v)
                                 for k, v in entry.items()}).decode()


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
