"""Composition choices in app.run: what the enhancer and the sinks are told, given the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from redi_stream import app
from redi_stream.capture import make_dng
from redi_stream.config import Device, ModelKind, RunConfig


def test_encoder_threads_one_when_the_network_holds_the_cpu() -> None:
    assert app.encoder_threads(RunConfig(source="x", out=Path("o.mp4"), device=Device.CPU)) == 1
    cfg = RunConfig(source="x", out=Path("o.mp4"), device=Device.CPU, model=ModelKind.CLASSIC)
    assert app.encoder_threads(cfg) == 0


@pytest.mark.parametrize(
    "out, preview, want",
    [
        ("o.mp4", None, {"yuv420p": True, "rgb": False}),  # the video sink alone: planes only
        ("o.mp4", True, {"yuv420p": True, "rgb": True}),  # a preview shows the RGB image
        ("frames/", None, {"yuv420p": False, "rgb": True}),  # PNG frames are RGB
    ],
)
def test_enhancer_makes_yuv_planes_only_for_a_yuv420p_video(tmp_path: Path, monkeypatch, out: str, preview,
                                                           want: dict) -> None:
    import redi_stream.stream as stream

    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=2, size=(32, 48), fps=24.0, ratio=100)
    seen = {}
    real = app.build_enhancer

    def spy(cfg, stack, **kw):
        seen.update(kw)
        return real(cfg, stack, **kw)

    monkeypatch.setattr(app, "build_enhancer", spy)
    monkeypatch.setattr(stream, "make_preview", lambda enabled, **kw: stream.NullPreview())  # no window in tests
    target = tmp_path / out
    cfg = RunConfig(source=str(clip), out=target, model=ModelKind.CLASSIC, progress=False, preview=preview)
    assert app.run(cfg) == 0
    assert seen == want
