"""SIGINT/SIGTERM in a real process: the output is finalised and holds exactly the frames reported encoded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _start(out: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(HERE / "sigint_child.py"), str(out), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_progress(p: subprocess.Popen, n: int, timeout_s: float = 60, also: str = "") -> list[str]:
    """Read the child's stdout until it has printed ``PROGRESS n`` (and the line ``also``, if given)."""
    lines = []
    done = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("PROGRESS"):
            done = max(done, int(line.split()[1]))
        if done >= n and (not also or also in lines):
            return lines
    p.kill()
    raise AssertionError(f"child made no progress: {lines} {p.stderr.read()}")


def _count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_finalises_output(tmp_path, sig, code):
    out = tmp_path / "int.mp4"
    p = _start(out)
    _wait_progress(p, 5)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == code, stderr
    encoded = int(next(ln for ln in stdout.splitlines() if ln.startswith("ENCODED")).split()[1])
    assert encoded >= 5
    assert _count(out) == encoded
    assert f"interrupted by {sig.name}" in stdout


def test_second_sigint_forces_exit_within_2s(tmp_path):
    out = tmp_path / "force.mp4"
    p = _start(out, "8")  # the enhancer hangs on frame 8: the first SIGINT cannot drain
    _wait_progress(p, 8, also="STUCK")  # frames 0..7 written, frame 8 held
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=10)
    assert time.monotonic() - t0 < 2.0
    assert p.returncode == 130, (stdout, stderr)
    assert _count(out) == 8  # frames 0..7 were encoded and the file was still finalised
