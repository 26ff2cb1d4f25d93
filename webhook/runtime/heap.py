"""Process memory settings for the serving process: allocator, TLS read buffers, garbage collector.

All are about the long run: a webhook lives for weeks and sees pods of every size.
"""

from __future__ import annotations

import asyncio.sslproto
import ctypes
import gc

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks at least this large get their own mapping, returned to the system when freed,
# and every page of it faulted in again on its next use. Below it must stay the
# per-request buffers: asyncio's TLS read (256 KiB unless limit_tls_read_buffer ran;
# at a 128 KiB threshold strace counted two mmap, two munmap and one mremap per request,
# about 50 µs of CPU) and orjson's parse buffer, about 12 times the body (524 KiB for
# the 44 KB 50-container pod, 2.4 MB for the 200 KiB pod: at a 512 KiB threshold both
# were mapped and unmapped on every request, and the 200 KiB pod cost about 180 µs more).
# 4 MiB holds that buffer for bodies up to about 340 KB; larger ones are rare.
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
# Free memory at the heap's top is returned to the system past this much. Too low costs
# dearly: at 128 KiB the heap was shrunk and regrown around nearly every request (about
# a third more CPU per request on the benchmark). At the mmap threshold, the largest
# block the heap serves can be freed and reused without a trim in between.
TRIM_THRESHOLD_BYTES = 4 * 1024 * 1024
# asyncio gives every TLS connection a zero-filled read buffer of this size (256 KiB by
# default) and reads up to this much per event-loop turn. Each read is also copied into
# the connection's incoming OpenSSL memory buffer, which keeps its largest size (about
# 4/3 of the largest read) for the connection's life. 32 KiB holds every body up to 32
# KiB in one read (the corpus's largest real pod is 12 KB); with 32 connections a worker
# peaks about 2.5 MiB lower than at 64 KiB. Larger bodies take one more loop turn per
# 32 KiB: 2 to 5 % more CPU for the 44 KB and 200 KiB pods, and on the corpus mix about
# 10 % more p99 (the 200 KiB pod's own latency: seven reads, others served between).
TLS_READ_BUFFER_BYTES = 32 * 1024


def tune_allocator() -> bool:
    """Keep the largest buffers (bodies over 4 MiB, the parse of a body over 340 KB) out of the heap.

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


def limit_tls_read_buffer() -> bool:
    """Shrink asyncio's per-connection TLS read buffer (see TLS_READ_BUFFER_BYTES).
    Returns False, changing nothing, where asyncio keeps no such setting."""
    protocol = getattr(asyncio.sslproto, "SSLProtocol", None)
    if not isinstance(getattr(protocol, "max_size", None), int):
        return False
    protocol.max_size = TLS_READ_BUFFER_BYTES
    return True


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
