"""Keep the pipeline's own CPU work out of the network's all-core CPU forward, and schedule it beside the ISP.

Why: the CPU network runs as OpenMP parallel regions over every core, separated by barriers. When a decode or
encode thread takes a core in the middle of a forward, the network thread on that core stops, and every other
network thread waits for it at the next barrier, spinning. So each millisecond of decode/encode that lands inside
a forward costs the forward a full millisecond of wall time on *all* cores, instead of half of one on two. Measured
on the 2-core development machine (1080p DNG -> MP4, docs/PERF_NOTES.md): the forward took 141 ms alone and
160-200 ms inside the pipeline, about its own time plus all of decode + encode.

:class:`CpuGate` is a writer-preferring readers-writer lock over "the CPU" with three additions:

* **exclusive forwards**: an all-core forward (``forward(exclusive=True)``) stops new decode/encode chunks
  (``shared()``) from starting and waits for the running ones to finish (one chunk: a frame's decode or encode);
* **shrinking instead of waiting** (``forward(True, shrink=True)``, for a forward that can change its thread count
  between its ops: ``TorchRunner`` with ``FastRediNet.between_ops``): the forward does not wait for the running
  chunks; it starts at once on ``threads(n)`` = n minus the running chunks (at least 1) and grows back to n at the
  first op boundary after they end. The waiting core is no longer idle: a forward that waited for a 21 ms encode
  now runs its first ops on one thread beside it (1080p on 2 cores, docs/PERF_NOTES.md "third round");
* **encode one forward behind**: every forward (exclusive or not) advances ``epoch``. The pipeline tags each
  enhanced frame with the epoch that made it, and its encode chunk (``shared(after_epoch=e)``) starts only once the
  *next* forward has started (and, if exclusive, ended), or the infer thread is waiting for work (``waiting()``).
  Without this, a frame's encode starts the moment its ISP ends, and the next forward then waits for that whole
  encode: per frame ``forward + ISP + encode``. With it, frame i is encoded while the infer thread runs the ISP of
  frame i + 1: per frame ``forward + max(ISP, encode)``, or with shrinking about ``forward + (ISP + encode) / 2``.

Only an all-core forward is exclusive (``TorchRunner`` asks with the thread count it is about to use): a forward on
fewer threads leaves cores free, and decode/encode run beside it. The one-behind rule applies only once an
exclusive forward has happened.

Deadlock freedom: no thread holds the gate while it waits on a channel or on anything but the gate; a chunk and a
forward always end; the one-behind wait ends when the infer thread starts a forward, waits on a channel
(``waiting()``: it may be waiting for this very encode to free a slot) or ends (``waiting()`` at exit). If the
infer thread is stuck inside a forward (a stall), :meth:`disable` lets every waiter through so the frames already
enhanced are still encoded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class CpuGate:
    """Exclusive (network forward) / shared (decode, encode) access to the CPU; see the module docstring.

    Attributes:
        epoch: forwards started so far (read by the infer thread after a frame is enhanced).
        exclusive_count: forwards that held the CPU alone.
        exclusive_wait_s: total time those forwards waited for running chunks to finish.
        shrunk_count: shrinking forwards that started beside a running chunk.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._shared = 0
        self._exclusive = False
        self._waiting_exclusive = 0
        self._infer_waiting = False
        self._disabled = False
        self.epoch = 0
        self.exclusive_count = 0
        self.exclusive_wait_s = 0.0
        self.shrunk_count = 0

    @contextmanager
    def forward(self, exclusive: bool, shrink: bool = False) -> Iterator[None]:
        """One network forward: advances ``epoch``; with ``exclusive`` holds the CPU alone for its duration (no
        chunk starts during it). With ``shrink`` as well, it does not wait for the chunks already running: the
        caller asks :meth:`threads` between its ops how many threads it may use."""
        t0 = time.perf_counter()
        with self._cond:
            self.epoch += 1
            self._cond.notify_all()
            if exclusive and not self._disabled:
                self._waiting_exclusive += 1
                try:
                    while (self._exclusive or (self._shared and not shrink)) and not self._disabled:
                        self._cond.wait()
                finally:
                    self._waiting_exclusive -= 1
                self._exclusive = True
                self.exclusive_count += 1
                self.shrunk_count += bool(self._shared)
                self.exclusive_wait_s += time.perf_counter() - t0
            else:
                exclusive = False
        try:
            yield
        finally:
            if exclusive:
                with self._cond:
                    self._exclusive = False
                    self._cond.notify_all()

    def threads(self, n: int) -> int:
        """How many of ``n`` threads a shrinking forward may use now: one fewer per running chunk, at least 1 (and
        ``n`` once the gate is disabled). Lock-free read: a stale answer only lasts until the next op boundary."""
        if self._disabled:
            return n
        return max(1, n - self._shared)

    def exclusive(self):
        """``forward(exclusive=True)``."""
        return self.forward(True)

    def _must_wait(self, after_epoch: int | None) -> bool:
        if self._disabled:
            return False
        if self._exclusive or self._waiting_exclusive:
            return True
        return (after_epoch is not None and self.exclusive_count > 0 and self.epoch <= after_epoch
                and not self._infer_waiting)

    @contextmanager
    def shared(self, after_epoch: int | None = None) -> Iterator[None]:
        """One chunk of decode/encode work: waits while a forward holds or wants the CPU, and (``after_epoch``,
        for encoding a frame made in that epoch) until the next forward has started or the infer thread waits."""
        with self._cond:
            while self._must_wait(after_epoch):
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """The infer thread waits on a channel (or has ended): encodes need not wait for its next forward."""
        self._set_infer_waiting(True)
        try:
            yield
        finally:
            self._set_infer_waiting(False)

    def infer_done(self) -> None:
        """The infer thread has ended: no forward will come."""
        self._set_infer_waiting(True)

    def _set_infer_waiting(self, value: bool) -> None:
        with self._cond:
            self._infer_waiting = value
            self._cond.notify_all()

    def disable(self) -> None:
        """Let every present and future waiter through (a stage stalled; the frames already made must still be
        written). Irreversible."""
        with self._cond:
            self._disabled = True
            self._cond.notify_all()
