"""``redi-stream --camera``: one clear line and exit 1 without a camera, a headless fake-sensor run recorded to
MP4, a video file played as a camera, and bad camera options as usage errors (exit 2)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from redi_stream.cli import EXIT_FAILED, EXIT_USAGE, main


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.path.exists("/dev/video0"),
                    reason="needs a Linux machine without /dev/video0")
def test_no_camera_is_one_line_and_exit_1(capsys):
    assert main(["--camera", "0"]) == EXIT_FAILED
    assert _stderr_lines(capsys) == ["redi-stream: error: camera 0: no such device (/dev/video0 does not exist)"]


def test_a_preview_with_no_display_and_no_output_is_refused(monkeypatch, capsys):
    """Nothing would be shown or written: before, the camera ran until Ctrl-C with nothing to show for it."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert main(["--camera", "fake:96x64@60", "--model", "classic"]) == EXIT_USAGE
    err = [ln for ln in _stderr_lines(capsys) if "error" in ln]
    assert err == ["redi-stream: error: no display for the preview window (DISPLAY is not set) and no --out: nothing "
                   "would be shown or written; give --out FILE.mp4 (or --out null to only measure)"]
    assert main(["--camera", "fake:96x64@60", "--model", "classic", "--out", "null", "--frames", "3", "-q"]) == 0


def _decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_headless_fake_camera_recorded(tmp_path, capsys):
    out = tmp_path / "live.mp4"
    code = main(["--camera", "fake:96x64@60", "--model", "classic", "--no-preview", "--frames", "20", "--out",
                 str(out), "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert "fake camera 96x64@60: 96x64 'RG12' 12-bit Bayer RGGB @ 60 fps" in err
    assert "live: " in err and "dropped" in err and "hand-off (no window) latency median" in err
    n = _decoded_frames(out)
    assert 1 <= n <= 20


def test_video_file_as_camera_with_remosaic_warning(tmp_path, capsys):
    import cv2

    clip = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (96, 64))
    for i in range(8):
        vw.write(np.full((64, 96, 3), (30, 90 + i, 160), np.uint8))
    vw.release()
    out = tmp_path / "o.mp4"
    assert main(["--camera", str(clip), "--model", "classic", "--no-preview", "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    remosaic = [line for line in err.splitlines() if "re-mosaicking" in line]
    assert len(remosaic) == 1  # one line, once
    assert _decoded_frames(out) >= 1


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--camera", "fake", "--fourcc", "TOOLONG"], "--fourcc"),
        (["--camera", "fake", "--reconnect", "-1"], "--reconnect"),
        (["--camera", "fake", "--frames", "0"], "--frames"),
        (["--camera", "fake", "--decode-workers", "4"], "--decode-workers applies to file sources"),
        (["--camera", "fake", "--raw-width", "640"], "--raw-height"),
        (["x", "--out", "o.mp4", "--fourcc", "pRAA"], "--camera only"),
        (["--camera", "fake:720p30:XXXX", "--model", "classic"], "fake camera format"),
    ],
)
def test_bad_camera_options_are_usage_errors(argv, needle, capsys):
    assert main(argv) == EXIT_USAGE
    lines = _stderr_lines(capsys)
    assert needle in lines[-1]
