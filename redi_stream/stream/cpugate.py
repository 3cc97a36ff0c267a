"""Keep the pipeline's own CPU work out of the network's all-core CPU forward.

Why: the CPU network runs as OpenMP parallel regions over every core, separated by barriers. When a decode or
encode thread takes a core in the middle of a forward, the network thread on that core stops, and every other
network thread waits for it at the next barrier, spinning. So each millisecond of decode/encode that lands inside
a forward costs the forward a full millisecond of wall time on *all* cores, instead of half of one on two. Measured
on the 2-core development machine (1080p DNG -> MP4, docs/PERF_NOTES.md): the forward took 141 ms alone and
160-200 ms inside the pipeline, about its own time plus all of decode + encode.

:class:`CpuGate` is a writer-preferring readers-writer lock over "the CPU": the forward is the exclusive side
(``exclusive()``), decode reads and sink writes are the shared side (``shared()``). A forward that wants the gate
stops new decode/encode chunks from starting and waits for the ones running to finish (one chunk: a frame's decode
or encode, a few ms to ~20 ms); decode and encode then run together while the infer thread does its own per-frame
work (gain, pack, ISP). Per frame the pipeline then costs about ``forward + max(encode, ISP)`` instead of
``forward + decode + encode + ISP``.

Only an all-core forward takes the gate (``TorchRunner`` asks with the thread count it is about to use): a forward
on fewer threads leaves cores free and then decode/encode should run beside it. No lock is held while a thread
waits on a channel or on I/O outside a chunk, so the gate cannot deadlock the pipeline: a chunk always finishes,
and the forward always finishes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CpuGate:
    """Exclusive (network forward) / shared (decode, encode) access to the CPU, writer-preferring.

    Any number of threads may hold the shared side at once; the exclusive side is held by one thread with no shared
    holder. A thread waiting for the exclusive side blocks new shared holders. Not re-entrant.

    Attributes:
        exclusive_count: forwards that took the gate (for tests and the summary).
        exclusive_wait_s: total time forwards waited for running chunks to finish.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0
        self.exclusive_count = 0
        self.exclusive_wait_s = 0.0

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the CPU alone: waits for running shared chunks, blocks new ones until the block ends."""
        t0 = time.perf_counter()
        with self._cond:
            self._waiting_exclusive += 1
            try:
                while self._exclusive or self._shared:
                    self._cond.wait()
            finally:
                self._waiting_exclusive -= 1
            self._exclusive = True
            self.exclusive_count += 1
            self.exclusive_wait_s += time.perf_counter() - t0
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    @contextmanager
    def shared(self) -> Iterator[None]:
        """One chunk of decode/encode work: waits while a forward holds or wants the CPU."""
        with self._cond:
            while self._exclusive or self._waiting_exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()
