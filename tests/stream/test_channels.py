"""Channel overflow policies, END, cancel, timeouts, stop event."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from redi_stream.stream.channels import END, Channel, Policy


def test_block_keeps_every_item_in_order():
    ch = Channel("t", 2, Policy.BLOCK)
    got = []

    def consume():
        while (x := ch.get()) is not END:
            got.append(x)
            time.sleep(0.001)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(50):
        assert ch.put(i)
    ch.close()
    t.join(5)
    assert got == list(range(50))
    assert ch.dropped == 0 and ch.high_water == 2 and ch.put_count == 50


def test_block_put_times_out_when_full():
    ch = Channel("t", 1, Policy.BLOCK)
    assert ch.put(1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ch.put(2, timeout_s=0.1)
    assert 0.08 < time.monotonic() - t0 < 1.0


def test_block_put_gives_up_when_stop_is_set():
    stop = threading.Event()
    ch = Channel("t", 1, Policy.BLOCK, stop=stop)
    ch.put(1)
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert ch.put(2) is False
    assert time.monotonic() - t0 < 1.0
    assert ch.get() == 1


def test_drop_oldest_counts_drops_and_keeps_newest():
    ch = Channel("cam", 3, Policy.DROP_OLDEST)
    for i in range(10):
        assert ch.put(i)
    assert ch.dropped == 7
    ch.close()
    assert [ch.get() for _ in range(4)] == [7, 8, 9, END]


def test_latest_is_a_mailbox_of_one():
    ch = Channel("preview", 5, Policy.LATEST)
    assert ch.capacity == 1
    for i in range(4):
        ch.put(i)
    assert ch.get() == 3 and ch.dropped == 3
    with pytest.raises(TimeoutError):
        ch.get(timeout_s=0.05)


def test_end_after_close_repeats_and_puts_are_refused():
    ch = Channel("t", 2, Policy.BLOCK)
    ch.put("a")
    ch.close()
    ch.close()
    assert ch.put("b") is False
    assert ch.get() == "a"
    assert ch.get() is END and ch.get(timeout_s=0.01) is END


def test_cancel_discards_and_wakes_a_blocked_producer():
    ch = Channel("t", 1, Policy.BLOCK)
    ch.put(1)
    result = []
    t = threading.Thread(target=lambda: result.append(ch.put(2)))
    t.start()
    time.sleep(0.05)
    assert ch.cancel() == 1
    t.join(2)
    assert result == [False] and ch.discarded == 1 and ch.get() is END


def test_get_wakes_on_close_from_another_thread():
    ch = Channel("t", 1, Policy.BLOCK)
    threading.Timer(0.05, ch.close).start()
    assert ch.get(timeout_s=2) is END


def test_end_sentinel_is_unique_and_pickles_to_itself():
    assert pickle.loads(pickle.dumps(END)) is END
    with pytest.raises(ValueError):
        Channel("t", 1, Policy.BLOCK).put(END)


def test_bad_capacity_and_policy():
    with pytest.raises(ValueError):
        Channel("t", 0, Policy.BLOCK)
    with pytest.raises(ValueError):
        Channel("t", 1, "sometimes")
