"""Keep the memory of freed tensors in the process, so that a training step reuses it instead of asking the
kernel for fresh pages.

A training step allocates and frees the same activations every step (at the demo's batch of ~1,900
windows, ~200 MB). glibc's ``malloc`` serves blocks above its mmap threshold (128 KiB, raised on the fly
to at most 32 MiB) with a fresh ``mmap`` and returns them to the kernel on free, and trims the top of its
heap when more than twice that is free. So every step page-faults its activations in again: ~50,000 minor
faults and ~110 ms of kernel time a step on the demo's batch, ~15% of the step (``docs/performance.md``).
Raising both thresholds to 256 MiB keeps that memory mapped: the demo's epoch is ~1.2x faster. The cost
is a resident set that does not shrink between steps (it stays near the step's peak anyway) and some
fragmentation: the production-size CPU run's peak went from 8.27 to 8.59 GiB. With 1 GiB it went to
11.4 GiB, over that run's 12 GB budget, for no gain in speed.

Only glibc has these knobs; elsewhere (macOS, Windows, musl) this does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 256 << 20  # blocks up to 256 MiB come from the heap; 256 MiB of free heap is kept, not trimmed


def keep_freed_memory(keep_bytes: int = KEEP_BYTES) -> bool:
    """Set glibc's mmap and trim thresholds to ``keep_bytes``; True when they were set (glibc only).

    Process-wide and lasting: blocks allocated after the call and freed are kept for reuse. Setting either
    threshold also turns off glibc's own adjustment of them, which is why both are set.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    mallopt = ctypes.CDLL(name).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on error (a value out of range); both are tried either way.
    mmap_set = mallopt(M_MMAP_THRESHOLD, keep_bytes)
    trim_set = mallopt(M_TRIM_THRESHOLD, keep_bytes)
    return bool(mmap_set and trim_set)
