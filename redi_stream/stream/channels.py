"""Bounded, thread-safe channels between pipeline stages, each with a written overflow policy.

A :class:`Channel` joins exactly one producer thread to one consumer thread (any thread may call
:meth:`Channel.close`, :meth:`Channel.cancel` and the read-only properties). Policies:

``Policy.BLOCK``
    File sources. :meth:`Channel.put` waits for space; no frame is ever lost. The wait ends early (``put`` returns
    ``False``) when the stop event is set, or the channel is closed or cancelled.
``Policy.DROP_OLDEST``
    Live cameras. ``put`` never waits: when full, the oldest queued item is dropped and counted in
    :attr:`Channel.dropped`, so the consumer always sees the newest frames and capture never falls behind the sensor.
``Policy.LATEST``
    Preview mailbox: capacity 1; ``put`` replaces the unread item (counted in ``dropped``).

End of stream is the :data:`END` sentinel: after :meth:`Channel.close` the consumer gets the remaining items, then
``END`` (forever). :meth:`Channel.cancel` is the consumer's "I am gone": it discards what is queued (counted in
:attr:`Channel.discarded`), makes every later ``put`` return ``False`` at once and ``get`` return ``END``.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from typing import Any, Final


class Policy(enum.StrEnum):
    """What :meth:`Channel.put` does when the channel is full."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    LATEST = "latest"


class _End:
    """Type of the :data:`END` sentinel (one instance; compare with ``is``)."""

    _instance: "_End | None" = None

    def __new__(cls) -> "_End":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"

    def __reduce__(self) -> str:
        return "END"


END: Final = _End()
"""End-of-stream sentinel returned by :meth:`Channel.get` after :meth:`Channel.close` (or cancel)."""


class Channel:
    """A bounded FIFO between one producer and one consumer thread.

    Args:
        name: for stats and messages (e.g. ``"capture->infer"``).
        capacity: maximum number of queued items (>= 1; forced to 1 for ``LATEST``).
        policy: overflow policy, see the module docstring.
        stop: optional pipeline stop event; a ``BLOCK`` ``put`` waiting for space gives up (returns ``False``) once
            it is set. ``get`` does not watch it: consumers drain until the producer closes the channel, which is
            how a stop reaches them in order.

    Items are any objects except :data:`END`. Ownership of an item passes to the consumer at ``get``.
    """

    def __init__(self, name: str, capacity: int, policy: Policy, *, stop: threading.Event | None = None) -> None:
        policy = Policy(policy)
        if policy is Policy.LATEST:
            capacity = 1
        if capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be >= 1, got {capacity}")
        self.name = name
        self.capacity = capacity
        self.policy = policy
        self._stop = stop
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._closed = False
        self._cancelled = False
        self._dropped = 0
        self._discarded = 0
        self._high_water = 0
        self._put_count = 0

    # -- producer side ---------------------------------------------------------------------------------------
    def put(self, item: Any, timeout_s: float | None = None) -> bool:
        """Queue ``item`` according to the policy.

        Returns:
            True if queued; False if it was not (channel closed or cancelled, or for ``BLOCK`` the stop event was
            set while waiting). The caller keeps ownership of an item that was not queued.

        Raises:
            TimeoutError: ``BLOCK`` only, no space within ``timeout_s`` seconds.
        """
        if item is END:
            raise ValueError("use close() to end a channel, not put(END)")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            if self._closed or self._cancelled:
                return False
            if self.policy is Policy.BLOCK:
                while len(self._items) >= self.capacity:
                    if self._stop is not None and self._stop.is_set():
                        return False
                    # Poll so a stop event set without notifying us is still seen within 50 ms.
                    wait_s = 0.05
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError(f"channel {self.name}: no space within {timeout_s} s")
                        wait_s = min(wait_s, left)
                    self._not_full.wait(wait_s)
                    if self._closed or self._cancelled:
                        return False
            else:
                while len(self._items) >= self.capacity:
                    self._items.popleft()
                    self._dropped += 1
            self._items.append(item)
            self._put_count += 1
            self._high_water = max(self._high_water, len(self._items))
            self._not_empty.notify()
            return True

    def close(self) -> None:
        """End of stream: the consumer gets what is queued, then :data:`END`. Idempotent; any thread."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    # -- consumer side ---------------------------------------------------------------------------------------
    def get(self, timeout_s: float | None = None) -> Any:
        """Next item in FIFO order, or :data:`END` once the channel is closed and empty (or cancelled).

        Raises:
            TimeoutError: nothing arrived within ``timeout_s`` seconds (the channel is still open).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            while not self._items:
                if self._closed or self._cancelled:
                    return END
                if deadline is None:
                    self._not_empty.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"channel {self.name}: nothing within {timeout_s} s")
                    self._not_empty.wait(left)
            item = self._items.popleft()
            self._not_full.notify()
            return item

    def cancel(self) -> int:
        """Consumer gone or run aborted: discard queued items, refuse further puts, wake everyone.

        Idempotent; any thread. Returns the number of items discarded by this call.
        """
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self._discarded += n
            self._cancelled = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
            return n

    # -- stats -----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed or self._cancelled

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def dropped(self) -> int:
        """Items dropped by the ``DROP_OLDEST``/``LATEST`` policy (never by ``BLOCK``)."""
        return self._dropped

    @property
    def discarded(self) -> int:
        """Items thrown away by :meth:`cancel`."""
        return self._discarded

    @property
    def high_water(self) -> int:
        """Largest number of items queued at once since construction."""
        return self._high_water

    @property
    def put_count(self) -> int:
        """Items accepted by :meth:`put`."""
        return self._put_count

    def __repr__(self) -> str:
        return (
            f"Channel({self.name!r}, {len(self)}/{self.capacity}, {self.policy.value}, "
            f"dropped={self._dropped}, high_water={self._high_water})"
        )
