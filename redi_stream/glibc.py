"""Process-wide glibc malloc settings for the CPU network (no torch here: the CLI calls it before heavy imports).

Two measured effects on the 2-core development machine (1088x1920 forward, docs/PERF_NOTES.md):

* Every CPU forward allocates tens of MB of activations (torch's CPU allocator does not cache). With glibc's
  defaults each allocation over 128 KiB is a fresh ``mmap``, zero-filled page by page on first touch and
  ``munmap``-ed on free: ~25% of the forward's time (217 -> 161 ms). :func:`keep_freed_memory` keeps freed memory
  in the heap instead.
* glibc gives threads their own arenas, whose heaps are capped at 64 MiB and shrink on free, so activations made on
  the pipeline's infer thread were faulted in afresh on every forward: ~12,000 page faults, +15-20 ms per forward.
  One arena for the whole process avoids it, but glibc fixes the arena limit the first time a second thread
  allocates; ``mallopt(M_ARENA_MAX, 1)`` after that changes nothing. :func:`limit_arenas` must therefore run before
  any thread starts: ``redi_stream.cli.main`` calls it first thing.

Every function returns False and does nothing where the C library is not glibc (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: glibc's documented defaults, restored by ``keep_freed_memory(False)``.
_DEFAULT_MMAP_THRESHOLD = _DEFAULT_TRIM_THRESHOLD = 128 * 1024
_KEEP_MMAP_THRESHOLD = 1 << 30
_KEEP_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: the largest, i.e. never trim


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def limit_arenas(n: int = 1) -> bool:
    """``mallopt(M_ARENA_MAX, n)``: all threads share ``n`` malloc arenas. Effective only if called before a
    second thread first allocates (see the module docstring)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, int(n)))


def keep_freed_memory(enable: bool = True, *, single_arena: bool = True) -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of handing it back to the OS (process-wide).

    Enabled: allocations below 1 GiB come from the heap and freed memory is never trimmed (the process keeps its
    peak footprint, ~0.3 GB at 1080p, ~1.2 GB at 4K); with ``single_arena`` also :func:`limit_arenas` (1), which
    only helps threads started after the first call of either function in the process.

    ``enable=False`` restores glibc's default thresholds and returns the kept memory (``malloc_trim``); the arena
    limit stays (arenas cannot be removed). Any thread may call it; it affects the whole process (like
    ``torch.set_num_threads``), so the caller that owns the process decides (``TorchRunner(reuse_memory=...)``).
    """
    libc = _libc()
    if libc is None:
        return False
    if enable:
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_MMAP_THRESHOLD)
              and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM_THRESHOLD))
        if single_arena:
            ok = ok and limit_arenas(1)
        return bool(ok)
    ok = (libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
          and libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD))
    libc.malloc_trim(0)
    return bool(ok)
