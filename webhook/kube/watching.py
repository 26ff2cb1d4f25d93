"""What every list + watch on the synchronous `kubernetes` client shares: the stream's
lines, its end, its expiry (410 Gone), and a failure as one line naming what was read.
Used by the namespace label cache and by the controller's watches."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from webhook.kube.client import ClusterError

# The API server ends a watch after this; the watch resumes from its resourceVersion.
# (kube-apiserver picks 30-60 minutes when the client names none; shorter is cheap.)
WATCH_TIMEOUT_SECONDS = 300
CONNECT_TIMEOUT_SECONDS = 5.0


class Gone(Exception):
    """410: the resourceVersion is older than the API server still keeps; list again."""


class WatchEnded(Exception):
    """The watch stream stopped without an error event (timeout, idle, dropped)."""


def watch_lines(response: Any) -> Iterator[str]:
    from kubernetes.watch.watch import iter_resp_lines
    return iter_resp_lines(response)


def is_idle_timeout(exc: BaseException) -> bool:
    """A read that timed out: the watch was silent too long, not broken."""
    from urllib3.exceptions import ProtocolError, ReadTimeoutError
    if isinstance(exc, ReadTimeoutError):
        return True
    return isinstance(exc, ProtocolError) and any(isinstance(a, ReadTimeoutError) or "timed out" in str(a)
                                                  for a in exc.args)


def describe(what: str, exc: BaseException) -> str:
    """A list or watch failure as one line: `<what>: 403 Forbidden: <message>`."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import MaxRetryError
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or b"{}").get("message")
        except (ValueError, AttributeError):
            message = None
        return f"{what}: {exc.status} {exc.reason}{': ' + message if message else ''}"
    if isinstance(exc, MaxRetryError):
        return f"cannot reach the API server: {exc.reason}"
    if isinstance(exc, ClusterError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
