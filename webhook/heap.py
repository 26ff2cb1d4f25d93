"""Process memory settings for the serving process: allocator and garbage collector.

Both are about the long run: a webhook lives for weeks and sees pods of every size.
"""

from __future__ import annotations

import ctypes
import gc
import logging

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks at least this large get their own mapping, returned to the system when freed.
# It must stay above 256 KiB: asyncio's TLS transport reads into a fresh 256 KiB bytes
# object on every read. At 128 KiB strace counted two mmap, two munmap and one mremap
# per request, about 50 µs of CPU: a third of the no-op baseline's whole cost per request.
MMAP_THRESHOLD_BYTES = 512 * 1024
# Free memory at the heap's top is returned to the system past this much. Too low costs
# dearly: at 128 KiB the heap was shrunk and regrown around nearly every request (about
# a third more CPU per request on the benchmark); at 1 MiB that cost is gone.
TRIM_THRESHOLD_BYTES = 1024 * 1024


def tune_allocator() -> bool:
    """Keep the largest buffers (bodies over 512 KiB, a large pod's JSON) out of the heap.

    glibc raises its mmap threshold each time a mapped block is freed, up to 32 MiB, so
    after the first large request later ones are served from the heap, which grows and
    rarely shrinks. Setting the threshold fixes it (and stops glibc adjusting the trim
    threshold, so that is set too). Returns False, changing nothing, off glibc."""
    try:
        # The C library this process already runs on (find_library would spawn ldconfig).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def settle(*, refreeze: bool = False) -> None:
    """Hide what lives for the whole run (modules, the serving policy set) from the garbage
    collector. Otherwise each full collection walks it all again, and those pauses are
    what the slowest answers wait for (p99 on the benchmark's corpus mix fell from about
    2x the baseline's to below it). After a reload the old set is unfrozen first, so
    that it can be collected."""
    if refreeze:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
