"""Keep freed large buffers in the process instead of returning them to the OS (glibc malloc).

By default glibc serves allocations above 128 KiB-32 MiB with fresh mmap'd pages and unmaps them on
free, so every training step faults in its large buffers again (softmax, filtered channels,
gradients: 66 MB each for 12x21x257x257). Page faults cost about 2 us per 4 KiB page here and
serialize across threads: measured on 2 cores, DenseCRF forward + backward on a 12x21x257x257 batch
took 0.19-0.21 s without this and 0.13 s with it. The price: the process keeps its peak heap size.

:func:`keep_freed_memory` is called by the ``rloss`` command (``rloss.commands.main``) and the benchmarks,
not on import; library users call it themselves. ``RLOSS_KEEP_FREED_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LIMIT = 2**31 - 1  # the largest value mallopt takes (bytes)


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to 2 GiB; returns whether they were set."""
    if os.environ.get("RLOSS_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT)) and bool(mallopt(_M_TRIM_THRESHOLD, _LIMIT))
