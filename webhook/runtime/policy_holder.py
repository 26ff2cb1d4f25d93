"""The current PolicySet, swapped atomically on reload.

The aiohttp app is frozen after start, so reloadable state lives here. A swap is a
single attribute assignment: a request that already read `current` finishes on
the old set, the next one sees the new set. A failed load never replaces it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from webhook.runtime import metrics
from webhook.runtime.filewatch import fingerprint
from webhook.policy.loader import PolicyLoadError, PolicySet, load_policy_dir, watched_files

log = logging.getLogger(__name__)


class PolicyHolder:
    def __init__(self, directory: Path, initial: PolicySet, loaded_fingerprint: str | None = None) -> None:
        self.directory = directory
        self.current = initial
        self.last_error: str | None = None
        self.last_success = time.time()
        # the directory's fingerprint when `initial` was read (None: not known), the
        # baseline for the watcher that reloads on change
        self.loaded_fingerprint = loaded_fingerprint
        metrics.POLICY_LAST_RELOAD_SUCCESS.set(self.last_success)
        metrics.POLICY_INFO.labels(revision=initial.revision).set(1)
        _log_warnings(initial)

    @classmethod
    def load(cls, directory: Path) -> PolicyHolder:
        """Load the directory or raise PolicyLoadError: the server refuses to start on errors."""
        # Taken before reading, so that an edit made while loading shows as a change.
        loaded_from = _fingerprint(directory)
        return cls(directory, load_policy_dir(directory), loaded_from)

    def fingerprint(self) -> str:
        return _fingerprint(self.directory)

    def reload(self) -> bool:
        try:
            new = load_policy_dir(self.directory)
        except PolicyLoadError as exc:
            self.last_error = str(exc)
            metrics.POLICY_RELOADS.labels(result="error").inc()
            log.error("policy reload failed; still serving revision %s:\n%s",
                      self.current.revision, exc,
                      extra={"event": "policy_reload", "result": "error",
                             "revision": self.current.revision})
            return False
        old = self.current
        self.current = new
        self.last_error = None
        self.last_success = time.time()
        metrics.POLICY_RELOADS.labels(result="success").inc()
        metrics.POLICY_LAST_RELOAD_SUCCESS.set(self.last_success)
        if old.revision != new.revision:
            # set(0), not remove(): removal does nothing in multiprocess mode.
            metrics.POLICY_INFO.labels(revision=old.revision).set(0)
        metrics.POLICY_INFO.labels(revision=new.revision).set(1)
        _log_warnings(new)
        log.info("policies reloaded: revision %s -> %s (%d policies)", old.revision,
                 new.revision, new.policy_count,
                 extra={"event": "policy_reload", "result": "success", "revision": new.revision})
        return True


def _fingerprint(directory: Path) -> str:
    try:
        return fingerprint(watched_files(directory))
    except OSError:
        return "unreadable"


def _log_warnings(policy_set: PolicySet) -> None:
    for warning in policy_set.warnings:
        log.warning("policy warning: %s", warning, extra={"event": "policy_warning",
                                                          "revision": policy_set.revision})
