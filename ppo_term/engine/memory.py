"""How the process's C heap hands memory back, tuned for training (glibc only).

glibc's malloc serves a request below its mmap threshold from the heap, and that threshold
rises after each large free up to 32 MB, so after loading a model almost every tensor of a
training pass (activations of 0.4-40 MB) comes from the heap. Their sizes change from
generation to training passes, the freed chunks do not fit the next requests, and the heap
grows: at the peak of a full fine-tuning step on the default model 680 MB of it was free but
resident (`mallinfo2`). A fixed 1 MB threshold gives each tensor of 1 MB or more its own
mapping, returned to the system when freed: peak RSS 2245 MiB against 2385 for the same work.
Twice the page faults, no slower there (alternating steps in one process; bench/README.md). The
engine does it for full fine-tuning only: on the LoRA work the same alternation measured 4x the
page faults and 21.6 s against 18.6 s a training pass, for memory LoRA does not need.

Tensors under the threshold still share the heap, and what one phase frees there stays resident
through the next: full fine-tuning also trims the heap (`trim`) after generating and after the
update. With bf16 weights that took the generation phase's peak from 2486-2598 to 2287 MiB
(bench/README.md, "bf16 weights with fp32 arithmetic"); a lower threshold (256 KB) took the whole
step's to 2340 MiB but its training passes to 1.6x the time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20


@functools.lru_cache(maxsize=1)
def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def tune_malloc() -> bool:
    """Fix the mmap threshold at 1 MB and use one arena; False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = _libc()
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        libc.mallopt(M_ARENA_MAX, 1)  # arenas of other threads hold free memory of their own
    except (OSError, AttributeError):
        return False
    return ok


def trim() -> bool:
    """Hand the heap's free pages back to the system (glibc's malloc_trim), False where it cannot.

    Tensors under the mmap threshold (a layer's attention scores, a small weight's cast) come
    from the heap, and what one phase of a step frees there (generating, then training) stays
    resident through the next, whose requests have other sizes. The engine trims between phases.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True
