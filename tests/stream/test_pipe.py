"""``--camera -``: headerless raw frames piped in by a capture program, read at the pipeline's pace, none lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from redi_stream.capture.camera import PipeDevice, pack_raw10
from redi_stream.errors import ConfigError

H, W = 64, 96


def _mosaics(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [(256 + rng.poisson(40 + 20 * k, (H, W))).clip(0, 4095).astype(np.uint16) for k in range(n)]


def _run(args: list[str], stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "redi_stream", *args, "--model", "classic", "--no-progress"],
                          input=stdin, capture_output=True, timeout=120)


def _pngs(folder: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))]


def test_piped_frames_equal_the_same_frames_from_a_file(tmp_path: Path) -> None:
    frames = _mosaics(12)
    dump = b"".join(f.astype("<u2").tobytes() for f in frames)
    (tmp_path / "dump.raw").write_bytes(dump)
    layout = ["--raw-width", str(W), "--raw-height", str(H), "--black", "256"]
    run = _run(["--camera", "-", *layout, "--fourcc", "RG12", "--out", f"{tmp_path}/piped/"], dump)
    assert run.returncode == 0, run.stderr.decode()
    assert "standard input: 96x64 'RG12' 12-bit Bayer RGGB, 12288 bytes a frame" in run.stderr.decode()
    run = _run([str(tmp_path / "dump.raw"), *layout, "--cfa", "RGGB", "--white", "4095",
                "--out", f"{tmp_path}/filed/"], b"")
    assert run.returncode == 0, run.stderr.decode()
    piped, filed = _pngs(tmp_path / "piped"), _pngs(tmp_path / "filed")
    assert len(piped) == len(filed) == 12  # every frame, although the pipe was written at once
    for a, b in zip(piped, filed):
        np.testing.assert_array_equal(a, b)


def test_packed_raw10_and_the_stated_rate(tmp_path: Path) -> None:
    frames = [(f >> 2).astype(np.uint16) for f in _mosaics(5)]  # 10-bit samples
    dump = b"".join(pack_raw10(f).tobytes() for f in frames)
    out = tmp_path / "o.mp4"
    run = _run(["--camera", "-", "--raw-width", str(W), "--raw-height", str(H), "--fourcc", "pRAA", "--black", "64",
                "--fps", "25", "--out", str(out)], dump)
    assert run.returncode == 0, run.stderr.decode()
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        pts = [float(f.pts * f.time_base) for f in c.decode(s)]
    assert pts == pytest.approx([k / 25 for k in range(5)], abs=1e-3)  # stamped k / fps, not as read


def test_a_stream_cut_inside_a_frame_keeps_the_whole_ones(tmp_path: Path) -> None:
    frames = _mosaics(4)
    dump = b"".join(f.astype("<u2").tobytes() for f in frames)[:-100]
    run = _run(["--camera", "-", "--raw-width", str(W), "--raw-height", str(H), "--cfa", "GBRG", "--white", "4095",
                "--out", f"{tmp_path}/f/"], dump)
    assert run.returncode == 0
    assert "standard input: the stream ended inside frame 3 (12188 of 12288 bytes); that part is dropped" \
        in run.stderr.decode()
    assert len(_pngs(tmp_path / "f")) == 3


def test_nothing_to_show_or_write_is_refused() -> None:
    run = _run(["--camera", "-", "--raw-width", "8", "--raw-height", "8", "--cfa", "RGGB"], b"\0" * 256)
    assert run.returncode == 2
    assert "standard input: no --out and no --preview: nothing would be shown or written" in run.stderr.decode()


@pytest.mark.parametrize("args, message", [
    ([], "--camera - reads headerless raw frames from standard input: give their size"),
    (["--raw-width", "8", "--raw-height", "8", "--fourcc", "MJPG"], "format 'MJPG' is not a raw Bayer layout"),
    (["--raw-width", "8", "--raw-height", "8", "--raw-dtype", ">u2"], "samples '>u2' are not read from a pipe"),
])
def test_bad_pipe_layouts_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    run = _run(["--camera", "-", *args, "--out", str(tmp_path / "o.mp4")], b"")
    assert run.returncode == 2 and message in run.stderr.decode()


def test_a_terminal_is_not_a_pipe(monkeypatch) -> None:
    import os

    monkeypatch.setattr(os, "isatty", lambda fd: True)
    with pytest.raises(ConfigError, match="standard input is a terminal; pipe raw frames into it"):
        PipeDevice(8, 8)
