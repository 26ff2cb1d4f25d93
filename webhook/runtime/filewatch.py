"""Change detection by polling content hashes.

Polling content (not mtimes or inotify) is what works for Kubernetes volumes: a
ConfigMap or Secret update swaps a `..data` symlink atomically, which inotify on
the visible file names never reports, and mtimes of symlinked files are unreliable.
Reading a few small files once a second is cheap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def fingerprint(paths: Iterable[Path]) -> str:
    """Hash of the names and contents of `paths`; a missing file hashes as missing."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.name).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"\0missing\0")
        digest.update(b"\0")
    return digest.hexdigest()


async def watch(compute: Callable[[], str], on_change: Callable[[], Awaitable[None]], *,
                interval: float, name: str, initial: str | None = None) -> None:
    """Call `on_change` whenever `compute()` returns something new; runs until cancelled.

    `initial` is the fingerprint of what is being served, taken before it was read:
    without it the first `compute()` is the baseline, and an edit made between the
    load and the watcher's start would never be seen.

    `compute` runs on the event loop: hashing a few small files from a tmpfs volume
    takes well under a millisecond, less than handing it to a thread would cost (and
    idle threads each keep a malloc arena of their own)."""
    last = initial if initial is not None else compute()
    while True:
        await asyncio.sleep(interval)
        try:
            current = compute()
        except Exception:  # a watcher must outlive a transient I/O error
            log.exception("watching %s failed; retrying", name)
            continue
        if current != last:
            last = current
            try:
                await on_change()
            except Exception:
                log.exception("reloading %s failed", name)
