"""CPU runner settings: the thread tuner (num_threads='auto'), warm_up, and the malloc setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from redi_stream.errors import ConfigError
from redi_stream.model import RediNet, TorchRunner
from redi_stream.model.runner import ThreadTuner, keep_freed_memory


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def drive(tuner: ThreadTuner, cost: dict[int, float], n: int) -> list[int]:
    """Run ``n`` fake forwards whose time depends on the thread count; return the counts used."""
    used = []
    for _ in range(n):
        t = tuner.begin()
        assert torch.get_num_threads() == t
        used.append(t)
        tuner.end(cost[t])
    return used


def test_tuner_probes_each_candidate_twice_then_keeps_the_fastest():
    tuner = ThreadTuner((1, 2), reprobe_every=1000)
    used = drive(tuner, {1: 0.3, 2: 1.0}, 10)
    assert used[:5] == [1, 1, 2, 1, 2]  # first call (allocation) not counted, then two rounds
    assert used[5:] == [1] * 5 and tuner.chosen == 1
    assert tuner.probed_s == {1: 0.3, 2: 1.0}


def test_tuner_reprobes_periodically_and_on_drift():
    tuner = ThreadTuner((1, 2), reprobe_every=4)
    used = drive(tuner, {1: 1.0, 2: 0.5}, 5 + 4 + 2 + 1)
    assert tuner.chosen == 2
    assert used[5:9] == [2] * 4 and used[9:11] == [1, 2]  # the periodic re-probe: each candidate once
    tuner = ThreadTuner((1, 2), reprobe_every=1000)
    drive(tuner, {1: 1.0, 2: 0.5}, 5)
    used = drive(tuner, {1: 1.0, 2: 2.0}, 3 + 2 + 3)  # the machine got busy: 2 threads now slower
    assert used[3:5] == [1, 2] and tuner.chosen == 1 and used[5:] == [1, 1, 1]


def test_tuner_reset_and_validation():
    tuner = ThreadTuner((1, 2))
    drive(tuner, {1: 1.0, 2: 0.5}, 5)
    tuner.reset()
    assert drive(tuner, {1: 0.1, 2: 0.5}, 6)[-1] == 1
    with pytest.raises(ConfigError, match="positive integers"):
        ThreadTuner((0, 2))
    assert ThreadTuner().candidates[0] == 1


def test_runner_auto_threads_warm_up_chooses():
    torch.manual_seed(0)
    with TorchRunner(RediNet(weight_norm=False), num_threads="auto") as runner:
        runner.warm_up((32, 64))
        assert runner.num_threads in runner._tuner.candidates
        assert not runner._tuner._queue  # probing finished during warm-up
        out = runner.run(np.zeros((1, 1, 32, 64), np.float32))
        assert out.shape == (1, 32, 64, 3)
    with pytest.raises(ConfigError, match="'auto'"):
        TorchRunner(RediNet(weight_norm=False), num_threads="many")


def test_keep_freed_memory_toggles():
    try:
        assert keep_freed_memory(True) in (True, False)  # False only where libc is not glibc
        torch.manual_seed(0)
        with TorchRunner(RediNet(weight_norm=False), reuse_memory=True) as runner:
            runner.warm_up((1, 1, 32, 32))
    finally:
        keep_freed_memory(False)


def test_tuner_prefers_fewer_threads_unless_clearly_faster():
    tuner = ThreadTuner((1, 2), reprobe_every=1000)
    drive(tuner, {1: 1.1, 2: 1.0}, 5)
    assert tuner.chosen == 1  # 2 threads only 10% faster: not worth the risk
    tuner = ThreadTuner((1, 2), reprobe_every=1000)
    drive(tuner, {1: 1.7, 2: 1.0}, 5)
    assert tuner.chosen == 2


SERIAL_THREAD_PROBE = """
import json, os, threading, time
import torch
from redi_stream.model.runner import serial_thread

def os_threads():
    return len(os.listdir("/proc/self/task"))

def settled_threads():
    # A thread just joined (serial_thread's short-lived helper) can still be listed for a moment after join().
    n = os_threads()
    for _ in range(100):
        time.sleep(0.01)
        m = os_threads()
        if m == n:
            return n
        n = m
    return n

x = torch.rand(64, 256, 256)
w = torch.rand(32, 64, 3, 3)
out = {"cores": torch.get_num_threads()}
with serial_thread():
    before = settled_threads()
    torch.nn.functional.conv2d(x, w, padding=1).sum()  # large ops: a team of worker threads if allowed
    (x * 2).sum()
    out["main_inside"] = torch.get_num_threads()
    out["new_threads_from_main_ops"] = os_threads() - before

    def other():
        out["other"] = torch.get_num_threads()
        torch.nn.functional.conv2d(x, w, padding=1).sum()
        out["new_threads_from_other_ops"] = os_threads() - before

    t = threading.Thread(target=other)
    t.start()
    t.join()
out["main_after"] = torch.get_num_threads()
print(json.dumps(out))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"),
                    reason="needs 2+ cores and Linux's /proc to see OpenMP's worker threads")
def test_serial_thread_keeps_its_thread_out_of_openmp_teams_and_others_in():
    # A fresh process: the test runner's main thread may own a team already, which cannot be undone.
    done = subprocess.run([sys.executable, "-c", SERIAL_THREAD_PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["main_inside"] == 1
    assert out["new_threads_from_main_ops"] == 0  # the main thread started no OpenMP workers
    assert out["other"] == out["cores"]  # a thread started inside gets the process-wide count...
    assert out["new_threads_from_other_ops"] >= 1  # ... and uses it
    assert out["main_after"] == out["cores"]  # the caller's count is back afterwards
