"""Composition choices in app.run: what the enhancer and the sinks are told, given the run."""

from __future__ import annotations

import subprocess
import sys
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
    assert seen == {**want, "frames": 2, "net": None}  # and the run's length, for the thread tuner (no network)


@pytest.mark.parametrize(
    "out, extra, want",
    [
        ("o.mp4", {}, "uint8"),
        ("o.mkv", {"pix_fmt": "yuv444p"}, "uint8"),
        ("o.mp4", {"pix_fmt": "yuv420p10le"}, "uint16"),  # 10-bit video is made from 16-bit frames
        ("o.mov", {"codec": "prores_ks"}, "uint16"),  # ProRes defaults to 10-bit 4:2:2
        ("frames/", {}, "uint16"),
        ("frames/", {"bits": 8}, "uint8"),
    ],
)
def test_output_bit_depth_reaches_the_enhancer(tmp_path: Path, out: str, extra: dict, want: str) -> None:
    from contextlib import ExitStack

    cfg = RunConfig(source="x", out=tmp_path / out, model=ModelKind.CLASSIC, **extra)
    with ExitStack() as stack:
        enhancer = app.build_enhancer(cfg, stack, yuv420p=False, rgb=True)
        assert enhancer.out_dtype.name == want


def test_pix_fmt_is_checked() -> None:
    from redi_stream.errors import ConfigError

    with pytest.raises(ConfigError, match="invalid --pix-fmt 'yuv420p12le'; valid: yuv420p, yuv422p, yuv444p, "):
        RunConfig(source="x", out=Path("o.mp4"), pix_fmt="yuv420p12le")
    with pytest.raises(ConfigError, match="--pix-fmt applies to video output"):
        RunConfig(source="x", out=Path("frames/"), pix_fmt="yuv420p10le")
    assert RunConfig(source="x", out=Path("o.mov"), pix_fmt="yuv422p10le").pix_fmt_for("o.mov") == "yuv422p10le"
    # Unasked, each encoder gets the format it takes: 8-bit 4:2:0 where it can, else the mastering codecs' 10-bit 4:2:2.
    two = RunConfig(source="x", out=["o.mp4", "o.webm"])
    assert two.pix_fmt_for("o.mp4") == two.pix_fmt_for("o.webm") == "yuv420p" and two.bits_out == 8
    for codec in ("prores_ks", "dnxhd"):
        cfg = RunConfig(source="x", out="o.mov", codec=codec)
        assert cfg.pix_fmt_for("o.mov") == "yuv422p10le" and cfg.bits_out == 16


def test_crf_is_refused_for_encoders_it_does_not_set() -> None:
    from redi_stream.errors import ConfigError

    assert RunConfig(source="x", out="o.mov", codec="prores_ks").crf is None  # the default is not "given"
    with pytest.raises(ConfigError, match="--crf does not apply to prores_ks \\(its profile sets the quality\\)"):
        RunConfig(source="x", out="o.mov", codec="prores_ks", crf=10)
    assert RunConfig(source="x", out="o.mkv", codec="libx265", crf=10).crf == 10


def test_headerless_flags_without_white_take_the_sample_types_white(tmp_path: Path) -> None:
    import numpy as np

    from redi_stream.config import RawLayout

    raw = tmp_path / "f.raw"
    np.full((8, 12), 200, np.uint8).tofile(raw)
    cfg = RunConfig(source=str(raw), out=tmp_path / "o.mp4", raw=RawLayout(width=12, height=8, dtype="u1"))
    with app.open_source(cfg) as src:
        assert src.read(0).meta.white_level == 255  # 8-bit samples: not 65535, which made them 256x too dark


@pytest.mark.parametrize("n, max_frames, want", [(2, None, "cores"), (10, None, "auto"), (10, 3, "cores")])
def test_short_runs_skip_the_thread_probe(tmp_path: Path, monkeypatch, n: int, max_frames, want: str) -> None:
    import os

    import redi_stream.model as model

    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=n, size=(32, 48), fps=24.0, ratio=100)
    seen = {}
    real = model.TorchRunner

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(model, "TorchRunner", spy)
    cfg = RunConfig(source=str(clip), out=tmp_path / "o.mp4", device=Device.CPU, progress=False,
                    max_frames=max_frames)
    assert app.run(cfg) == 0
    assert seen["num_threads"] == ((os.cpu_count() or 1) if want == "cores" else "auto")


@pytest.mark.parametrize("cores, want", [(1, 2), (2, 2), (4, 2), (8, 4), (16, 8), (128, 8)])
def test_default_decode_workers_follow_the_cores(cores: int, want: int) -> None:
    from redi_stream.config import default_decode_workers

    assert default_decode_workers(cores) == want


def test_decode_workers_reach_the_pipeline(tmp_path: Path, monkeypatch) -> None:
    import redi_stream.stream as stream
    from redi_stream.config import default_decode_workers

    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=2, size=(32, 48), fps=24.0, ratio=100)
    seen = []
    real = stream.Pipeline

    def spy(source, enhancer, sinks, config, **kw):
        seen.append(config.decode_workers)
        return real(source, enhancer, sinks, config, **kw)

    monkeypatch.setattr(stream, "Pipeline", spy)
    for given in (None, 3):
        cfg = RunConfig(source=str(clip), out=tmp_path / "o.mp4", model=ModelKind.CLASSIC, progress=False,
                        decode_workers=given)
        assert app.run(cfg) == 0
    assert seen == [default_decode_workers(), 3]


@pytest.mark.parametrize("amx", [True, False])
def test_auto_precision_on_the_cpu_is_bf16_only_with_amx_and_8_bit_output(monkeypatch, amx: bool) -> None:
    from redi_stream.config import Precision
    from redi_stream.model import runner

    monkeypatch.setattr(runner, "cpu_has_amx_bf16", lambda: amx)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    for out in ("o.mp4", "null", None):  # null (only measuring) and a preview alone are 8-bit too
        cfg = RunConfig(source="x", out=out, preview=out is None)
        assert cfg.bits_out == 8 and app.resolve_device(cfg) == ("cpu", "bf16" if amx else "fp32")
    for out, extra in [("frames/", {}), ("o.mp4", {"pix_fmt": "yuv420p10le"})]:  # bf16 has 8 significant bits
        assert app.resolve_device(RunConfig(source="x", out=out, **extra)) == ("cpu", "fp32")
    assert app.resolve_device(RunConfig(source="x", out="o.mp4", precision=Precision.FP32)) == ("cpu", "fp32")


def test_amx_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    from redi_stream.model.runner import cpu_has_amx_bf16

    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx512f {}\n"
    (tmp_path / "amx").write_text(flags.format("amx_bf16 amx_tile amx_int8"))
    (tmp_path / "plain").write_text(flags.format("avx512_bf16"))  # bf16 instructions, no AMX: not measured faster
    assert cpu_has_amx_bf16(str(tmp_path / "amx")) is True
    assert cpu_has_amx_bf16(str(tmp_path / "plain")) is False
    assert cpu_has_amx_bf16(str(tmp_path / "missing")) is False


def test_a_classic_run_does_not_import_torch(tmp_path: Path) -> None:
    # The classic model is for weak machines: its runs (and their start-up) do without torch, guard included.
    make_dng(None, tmp_path / "clip", n_frames=2, size=(32, 48), fps=24.0, ratio=100)
    code = ("import sys\nfrom redi_stream.cli import main\n"
            f"rc = main([{str(tmp_path / 'clip')!r}, '--model', 'classic', '--out', {str(tmp_path / 'o.mp4')!r}, "
            "'-q'])\nprint(rc, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stderr


def test_hot_pixels_are_replaced_before_the_network_sees_them(tmp_path: Path, caplog) -> None:
    """--hot-pixels on a DNG clip whose sensor has three hot pixels: the frames come out as the clean clip's do,
    while without it each hot pixel is a blot."""
    import logging

    import cv2
    import numpy as np

    from redi_stream.capture import RawFileSource, write_dng

    clean, hot = tmp_path / "clean", tmp_path / "hot"
    make_dng(None, clean, n_frames=3, size=(128, 192), fps=24.0, ratio=100)
    hot.mkdir()
    spots = [(40, 50), (64, 101), (90, 150)]
    for i, frame in enumerate(RawFileSource(clean)):
        data = frame.data.copy()
        for y, x in spots:
            data[y, x] = int(frame.meta.white_level * 0.6)
        write_dng(hot / f"f{i}.dng", data, frame.meta)

    def run(src: Path, out: str, *extra_hot: bool) -> list[np.ndarray]:
        cfg = RunConfig(source=str(src), out=tmp_path / out, device=Device.CPU, progress=False, gain=100.0,
                        gain_smoothing_frames=0.0, hot_pixels=bool(extra_hot))
        assert app.run(cfg) == 0
        return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.int64) >> 8
                for p in sorted((tmp_path / out).glob("*.png"))]

    base = run(clean, "base/")
    blotted = run(hot, "blot/")
    with caplog.at_level(logging.INFO, logger="redi_stream"):
        fixed = run(hot, "fixed/", True)
    assert "hot pixels: 9 replaced in 3 frames" in caplog.text
    for b, bad, good in zip(base, blotted, fixed):
        # (With amplified inputs clipped at 1 each blot is 30-90 pixels; measured 84-260 per frame, spots 9-79 codes.)
        assert (np.abs(bad - b).max(axis=2) > 8).sum() > 50
        assert max(np.abs(bad - b)[y - 3 : y + 4, x - 3 : x + 4].max() for y, x in spots) >= 25
        assert (np.abs(good - b).max(axis=2) > 8).sum() <= 5  # a sample's interpolation, nothing more
        assert max(np.abs(good - b)[y - 3 : y + 4, x - 3 : x + 4].max() for y, x in spots) <= 12
