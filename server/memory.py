"""Large buffers go back to the system when they are freed, so a worker's memory returns to
where it was when a request for a large image ends.

glibc gives an allocation of 128 KiB or more its own mapping and unmaps it when freed, but
after each such free it raises that size (its "dynamic mmap threshold", up to 32 MiB), and
later buffers under the new size come from the heap, which glibc shrinks only from its top.
One worker, after one batch of blank 3000x3000 RGBA PNGs, kept 58 MB of freed memory for good
(100 -> 158 MB). A fixed threshold, which also ends the raising: 101 -> 106 MB. At 4 MiB,
every buffer of a small request (a 28x28 digit, a 280x280 canvas) still comes from the heap,
as before; only images of a megapixel or more get mappings of their own. Fixing it also fixes
the heap's trim threshold, at 128 KiB unless set: a canvas's buffers were then handed back and
taken again on every request (preprocessing a 280x280 canvas 4.7-5.7 -> 6.3-9.3 ms on this busy
machine, two runs of 600); at 8 MiB, 4.6-6.1 ms.

What stays is freed memory inside the heap, below chunks still in use: glibc hands it back
only when asked (`malloc_trim`), which the ASGI bridge does once a worker has been idle for a
moment after work (server/asgi.py). After `wrk` loads of digits, canvases and photos and five
256-image batches, a server's processes held 189-192 MB (PSS) at rest instead of 200-203; a
call takes 0.15-0.35 ms.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
MMAP_FROM = 4 * 2**20
TRIM_FROM = 8 * 2**20


@functools.cache
def _libc(name: str, *argtypes):
    """The C library's function `name` (returning an int), or None where it has none."""
    try:
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = list(argtypes), ctypes.c_int
    return fn


def return_large_buffers() -> bool:
    """Fixes glibc's mmap and trim thresholds for this process (and the processes it forks
    afterwards). False where the C library has no mallopt or refuses it (not glibc)."""
    mallopt = _libc("mallopt", ctypes.c_int, ctypes.c_int)
    return (
        mallopt is not None
        and mallopt(M_MMAP_THRESHOLD, MMAP_FROM) == 1
        and mallopt(M_TRIM_THRESHOLD, TRIM_FROM) == 1
    )


def trim() -> bool:
    """Hands the free memory of every malloc arena back to the system (glibc's malloc_trim).
    True when some was; False when none was, or the C library has no malloc_trim."""
    malloc_trim = _libc("malloc_trim", ctypes.c_size_t)
    return malloc_trim is not None and malloc_trim(0) == 1
