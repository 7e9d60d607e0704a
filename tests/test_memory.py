"""ltv.memory.keep_freed_memory: Arrow on malloc, and glibc keeping freed blocks for reuse."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, numpy as np, pyarrow as pa
    from ltv.memory import keep_freed_memory

    def faults(n_bytes):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones(n_bytes // 8)
        del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    on = {on}
    done = keep_freed_memory() if on else {{}}
    faults(96 << 20)  # first use of the block: its pages fault in either way
    print(done.get("glibc", False), done.get("arrow_system_pool", False), pa.default_memory_pool().backend_name,
          faults(96 << 20))
    """
)


def _run(on: bool) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(on=on)], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_blocks_are_reused_without_page_faults():
    glibc, arrow, pool, faults = _run(True)
    assert glibc == "True" and arrow == "True" and pool == "system"
    assert int(faults) < 100  # a 96 MiB block comes back from the heap: no new pages (24,576 of 4 KiB)
    *_, faults_off = _run(False)
    assert int(faults_off) > 10 * max(int(faults), 1)  # by default it is unmapped and faulted in again


RELEASE = textwrap.dedent(
    """
    import psutil, numpy as np, pyarrow as pa
    from ltv.memory import release_freed_memory

    rss = lambda: psutil.Process().memory_info().rss / 2**20
    # 300 MiB of 64 KiB arrays (glibc's heap, not mmap) interleaved with kept ones: freeing every other one
    # leaves holes that glibc does not trim by itself; 200 MiB of Arrow buffers freed into Arrow's pool
    blocks = [np.ones(8192) for _ in range(4800)]
    arrow = [pa.array(np.ones(1 << 20)) for _ in range(25)]
    del blocks[::2], arrow
    before = rss()
    release_freed_memory()
    print(before, rss())
    """
)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_freed_memory_gives_freed_heap_and_arrow_pages_back():
    out = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert before - after > 100, (before, after)  # of the ~150 MiB of heap holes (+ Arrow's freed pool)
