"""Keep freed memory in the process, so a batch job reuses warm pages instead of asking the OS again.

Batch scoring allocates the same large buffers for every batch: Arrow tables, ~300 float32 feature
columns, the trees' float64 input. By default each is returned to the OS when freed (glibc ``munmap``s
blocks above its mmap threshold, mimalloc decommits after 10 ms), and the next batch faults every page
in again, zeroed by the kernel. On virtual machines that hand freed guest memory back to the host
(free page reporting, ballooning), such a fault costs microseconds per 4 KiB page, and the same copy
ran 0.5 to 5.8 us per row depending on whether its pages were new.

:func:`keep_freed_memory` makes Arrow allocate with the C library's ``malloc`` and tells glibc to serve
large blocks from its heap and never trim it, all threads sharing one arena. Memory then peaks at the
largest batch, as before, but is not given back until the process exits, which is what a batch job
wants. Values never change. Where the C library is not glibc only the Arrow pool is switched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -2, -3, -8
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
_TRIM_THRESHOLD = 2**31 - 1  # keep up to 2 GiB of free heap top (mallopt takes an int)
_TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> dict[str, bool]:
    """Switch this process to keeping freed memory (see the module doc); returns what was applied.

    Call it once, early, in a process that scores large batches (``predict.py``, ``evaluate.py``). It
    does not belong in a long-lived server that must shrink after a peak.
    """
    import pyarrow as pa

    done = {"arrow_system_pool": False, "glibc": False}
    try:
        pa.set_memory_pool(pa.system_memory_pool())
        done["arrow_system_pool"] = True
    except Exception:  # noqa: BLE001 - a speed setting: never fail a job on it
        log.debug("could not switch Arrow to the system memory pool", exc_info=True)
    libc = _glibc()
    if libc is not None:
        settings = [
            (_M_ARENA_MAX, 1),  # threads share the main arena, whose heap has no 64 MiB block limit
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
            (_M_TOP_PAD, _TOP_PAD),
        ]
        mallopt = libc.mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        ok = []
        for param, value in settings:
            ok.append(bool(mallopt(param, value)))
        done["glibc"] = all(ok)
        if not done["glibc"]:
            log.debug(
                "mallopt refused some settings: %s", dict(zip([p for p, _ in settings], ok, strict=True))
            )
    log.info("keeping freed memory in the process: %s", done)
    return done


def release_freed_memory() -> None:
    """Give this process's freed memory back to the OS: Arrow's pool and glibc's free heap pages.

    The opposite of :func:`keep_freed_memory`, for a training run between stages: a window loaded file
    by file leaves freed Arrow buffers and feature columns in the allocators (~200 MB a Dask worker after
    the export's train window), which count in the resident memory that Dask's memory limits and the
    machine see until the next stage happens to reuse them. Values never change; never raises.
    """
    try:
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    except Exception:  # noqa: BLE001 - a memory hint: never fail a job on it
        log.debug("could not release Arrow's unused memory", exc_info=True)
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
