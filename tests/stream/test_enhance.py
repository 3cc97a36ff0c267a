"""Enhancers: colour order through OpenCV's demosaic, shapes for every CFA, gain handling, REDI with a tiny net."""

from __future__ import annotations

import numpy as np
import pytest

from redi_stream import kernels
from redi_stream.errors import ConfigError
from redi_stream.frames import CFA, RawFrame, RawMeta
from redi_stream.stream.enhance import ClassicEnhancer, RediEnhancer, opencv_bayer_code

BLACK, WHITE = 64.0, 1023.0


def _mosaic_of(rgb_lin: np.ndarray, cfa: CFA) -> np.ndarray:
    """Linear camera RGB in [0, 1] -> uint16 raw DN mosaic with pattern ``cfa``."""
    m = kernels.mosaic_rgb(rgb_lin.astype(np.float32), cfa, np.empty(rgb_lin.shape[:2], np.float32))
    return np.round(BLACK + m * (WHITE - BLACK)).astype(np.uint16)


def _frame(data: np.ndarray, cfa: CFA, index: int = 0, **meta) -> RawFrame:
    return RawFrame(data=data, meta=RawMeta(cfa=cfa, black_level=(BLACK,) * 4, white_level=WHITE, **meta),
                    index=index, t_ns=0, name=f"x{index}.dng")


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("colour", [0, 1, 2])
def test_classic_keeps_primaries_in_place(cfa, colour):
    lin = np.zeros((32, 48, 3), np.float32)
    lin[..., colour] = 0.5
    enh = ClassicEnhancer(gain=1.0, smoothing_frames=0)
    out = enh.process(_frame(_mosaic_of(lin, cfa), cfa))
    assert out.rgb.shape == (32, 48, 3) and out.rgb.dtype == np.uint8
    centre = out.rgb[4:-4, 4:-4].reshape(-1, 3).mean(0)
    assert centre[colour] > 150, (cfa, centre)
    assert all(centre[c] < 10 for c in range(3) if c != colour), (cfa, centre)


def test_opencv_code_for_rggb_is_bayerbg():
    import cv2

    assert opencv_bayer_code(CFA.RGGB) == cv2.COLOR_BayerBG2RGB_EA


@pytest.mark.parametrize("shape", [(63, 95), (64, 96), (31, 2)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_classic_any_size_and_dtype(shape, dtype):
    rng = np.random.default_rng(0)
    raw = rng.integers(64, 200, shape, dtype=np.uint16)
    enh = ClassicEnhancer(out_dtype=dtype, denoise=True)
    enh.warm_up(shape, _frame(raw, CFA.GBRG).meta)
    out = enh.process(_frame(raw, CFA.GBRG, index=3))
    assert out.rgb.shape == (*shape, 3) and out.rgb.dtype == dtype
    assert out.index == 3 and out.name == "x3.dng" and out.gain >= 1.0
    assert {"gain", "pack", "infer", "isp", "denoise"} <= set(out.timings_ns)


def test_fixed_gain_and_multiplier():
    raw = np.full((16, 16), 100, np.uint16)
    out = ClassicEnhancer(gain=4.0, gain_multiplier=2.5).process(_frame(raw, CFA.RGGB))
    assert out.gain == pytest.approx(10.0)


def test_auto_gain_is_smoothed():
    dim = np.full((16, 16), 70, np.uint16)
    bright = np.full((16, 16), 300, np.uint16)
    enh = ClassicEnhancer(smoothing_frames=8)
    g0 = enh.process(_frame(dim, CFA.RGGB)).gain
    g1 = enh.process(_frame(np.where(np.arange(16) % 2, dim, bright).astype(np.uint16), CFA.RGGB)).gain
    raw_estimate = kernels.estimate_gain(np.where(np.arange(16) % 2, dim, bright).astype(np.uint16),
                                         np.full(4, BLACK, np.float32), WHITE, target=enh._gain.target)
    assert g0 != g1 and min(g0, raw_estimate) < g1 < max(g0, raw_estimate) + 1e-6


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        ClassicEnhancer(out_dtype=np.float32)
    with pytest.raises(ConfigError):
        ClassicEnhancer(denoise="wavelet")
    with pytest.raises(ConfigError):
        ClassicEnhancer(gain=-1.0)


class _TorchCpuRunner:
    """Minimal stand-in for model.TorchRunner: NCHW numpy in, NHWC numpy out."""

    def __init__(self, net):
        import torch

        self.net = net.eval()
        self.torch = torch
        self.calls = []

    def run(self, x):
        self.calls.append(x.shape)
        with self.torch.inference_mode():
            y = self.net(self.torch.from_numpy(x))
        return y.permute(0, 2, 3, 1).contiguous().numpy()


def _runner(net):
    try:
        from redi_stream.model import TorchRunner
    except ImportError:
        return _TorchCpuRunner(net)
    return TorchRunner(net, device="cpu", precision="fp32", streams=False, cuda_graph=False)


@pytest.mark.parametrize("output, cfa", [("linear_camera_rgb", CFA.BGGR), ("srgb", CFA.RGGB)])
def test_redi_enhancer_tiny_random_net_shapes(output, cfa):
    torch = pytest.importorskip("torch")
    from redi_stream.model import RediNet, WeightsMeta

    torch.manual_seed(0)
    net = RediNet()
    meta = WeightsMeta(output=output, gain_target=0.01)
    raw = np.random.default_rng(1).integers(64, 120, (64, 96), dtype=np.uint16)
    frame = _frame(raw, cfa, index=7, wb_gains=(2.0, 1.0, 1.5))
    enh = RediEnhancer(_runner(net), meta, out_dtype=np.uint8)
    enh.warm_up(frame.shape, frame.meta)
    out = enh.process(frame)
    assert out.rgb.shape == (64, 96, 3) and out.rgb.dtype == np.uint8
    assert out.index == 7 and 1.0 <= out.gain <= 300.0
    assert {"gain", "pack", "infer", "isp"} <= set(out.timings_ns)
    # Room for one prepended row and column (any phase), then padding to 32: 64x96 -> 96x128.
    expect = kernels.padded_shape(64, 96, cfa)
    if isinstance(enh.runner, _TorchCpuRunner):
        assert enh.runner.calls[-1] == (1, 1, *expect)
    enh.close()
    enh.close()


def test_redi_enhancer_uses_weights_defaults():
    from types import SimpleNamespace

    meta = SimpleNamespace(output="srgb", gain_target=0.02, gain_multiplier_default=5.0)

    class Flat:
        def run(self, x):
            return np.full((x.shape[0], x.shape[2], x.shape[3], 3), 0.5, np.float32)

    raw = np.full((32, 32), 80, np.uint16)
    out = RediEnhancer(Flat(), meta, gain=2.0, out_dtype=np.uint16).process(_frame(raw, CFA.RGGB))
    assert out.gain == pytest.approx(2.0)  # a fixed gain is the whole amplification: no default multiplier
    assert out.rgb.dtype == np.uint16 and np.all(out.rgb == 32768)  # sRGB model: quantise only
    out = RediEnhancer(Flat(), meta, gain=2.0, gain_multiplier=3.0).process(_frame(raw, CFA.RGGB))
    assert out.gain == pytest.approx(6.0)  # an explicit multiplier (or the preview's +/- keys) still applies
    auto = RediEnhancer(Flat(), meta, smoothing_frames=0)
    expected = kernels.estimate_gain(raw, np.full(4, BLACK, np.float32), WHITE, target=0.02) * 5.0
    assert auto.process(_frame(raw, CFA.RGGB)).gain == pytest.approx(expected)  # automatic: x the weights' 5


@pytest.mark.parametrize("shape, want_planes", [((32, 64), True), ((31, 64), False)])
def test_redi_enhancer_yuv420p_planes_equal_the_sinks_conversion(shape, want_planes):
    """With yuv420p=True the frame carries the planes rgb_to_yuv420p would make from its rgb (even sizes only),
    and rgb is unchanged."""
    from types import SimpleNamespace

    meta = SimpleNamespace(output="linear_camera_rgb", gain_target=0.01)

    class Ramp:
        def run(self, x):
            n, _, hp, wp = x.shape
            ramp = np.linspace(0.0, 1.2, hp * wp * 3, dtype=np.float32).reshape(1, hp, wp, 3)
            return np.repeat(ramp, n, axis=0)

    raw = np.full(shape, 80, np.uint16)
    frame = _frame(raw, CFA.GRBG, wb_gains=(2.0, 1.0, 1.5))
    plain = RediEnhancer(Ramp(), meta, gain=4.0).process(frame)
    fused = RediEnhancer(Ramp(), meta, gain=4.0, yuv420p=True).process(frame)
    assert plain.yuv420p is None
    np.testing.assert_array_equal(fused.rgb, plain.rgb)
    if not want_planes:
        assert fused.yuv420p is None
        return
    h, w = shape
    want = kernels.rgb_to_yuv420p(plain.rgb, np.empty((h, w), np.uint8), np.empty((h // 2, w // 2), np.uint8),
                                  np.empty((h // 2, w // 2), np.uint8))
    for got, exp in zip(fused.yuv420p, want):
        np.testing.assert_array_equal(got, exp)
    # rgb=False: the same planes, and rgb a read-only zero view of the right shape (no image stored)
    only = RediEnhancer(Ramp(), meta, gain=4.0, yuv420p=True, rgb=False).process(frame)
    for got, exp in zip(only.yuv420p, want):
        np.testing.assert_array_equal(got, exp)
    assert only.rgb.shape == (h, w, 3) and only.rgb.dtype == np.uint8 and not only.rgb.any()
    assert not only.rgb.flags.writeable and only.rgb.strides[:2] == (0, 0)


def test_redi_enhancer_without_planes_still_makes_rgb_when_rgb_false():
    """rgb=False only drops the RGB image where the planes replace it: odd sizes and uint16 keep their RGB."""
    from types import SimpleNamespace

    meta = SimpleNamespace(output="linear_camera_rgb", gain_target=0.01)

    class Half:
        def run(self, x):
            n, _, hp, wp = x.shape
            return np.full((n, hp, wp, 3), 0.5, np.float32)

    frame = _frame(np.full((31, 64), 80, np.uint16), CFA.RGGB, wb_gains=(1.0, 1.0, 1.0))
    out = RediEnhancer(Half(), meta, gain=4.0, yuv420p=True, rgb=False).process(frame)
    assert out.yuv420p is None and out.rgb.flags.writeable and out.rgb.min() == out.rgb.max() > 0


def test_redi_enhancer_temporal_denoise_steadies_a_still_scene():
    """--temporal-denoise: a still scene whose network output carries fresh noise every frame comes out steadier,
    although the runner (like TorchRunner) overwrites one output buffer on every call."""
    from types import SimpleNamespace

    meta = SimpleNamespace(output="linear_camera_rgb", gain_target=0.01)

    class NoisyStill:
        def __init__(self) -> None:
            self.rng = np.random.default_rng(5)
            self.buf: np.ndarray | None = None

        def run(self, x):
            n, _, hp, wp = x.shape
            if self.buf is None:
                self.buf = np.empty((n, hp, wp, 3), np.float32)
            yy, xx = np.mgrid[0:hp, 0:wp]
            clean = 0.05 + 0.3 * (0.5 + 0.5 * np.sin(xx / 9.0 + yy / 13.0))
            self.buf[...] = (clean + 0.02 * np.sqrt(clean) * self.rng.standard_normal((hp, wp)))[None, ..., None]
            return self.buf

    frame = _frame(np.full((48, 64), 80, np.uint16), CFA.RGGB, wb_gains=(1.0, 1.0, 1.0))
    stds = {}
    for frames in (0.0, 4.0):
        enh = RediEnhancer(NoisyStill(), meta, gain=4.0, temporal_frames=frames)
        outs = [enh.process(frame) for _ in range(30)]
        stds[frames] = np.stack([o.rgb.astype(np.float32) for o in outs[8:]]).std(axis=0).mean()
        assert ("denoise" in outs[-1].timings_ns) == bool(frames)
    assert stds[4.0] < 0.6 * stds[0.0], stds
    for bad in (0.5, float("nan"), -1.0):
        with pytest.raises(ConfigError, match="temporal_frames"):
            RediEnhancer(NoisyStill(), meta, temporal_frames=bad)


@pytest.mark.gpu
def test_redi_on_cuda_in_the_pipeline_runs_on_the_infer_thread():
    torch = pytest.importorskip("torch")
    from redi_stream.capture import SyntheticSource
    from redi_stream.model import RediNet, TorchRunner, WeightsMeta
    from redi_stream.stream import NullSink, Pipeline, PipelineConfig

    torch.manual_seed(0)
    source = SyntheticSource(n_frames=6, size=(64, 96), ratio=100.0, seed=0)
    sink = NullSink(keep_last=True)
    with TorchRunner(RediNet(), device="cuda", precision="fp16", streams=True, cuda_graph=True) as runner:
        enh = RediEnhancer(runner, WeightsMeta(output="linear_camera_rgb"))
        summary = Pipeline(source, enh, [sink], PipelineConfig(), progress=False).run()
    assert summary.frames_out == 6 and sink.last.rgb.shape == (64, 96, 3)


def test_look_ahead_puts_a_cut_on_its_own_frame_and_estimates_each_frame_once(monkeypatch):
    """A file source's frames are told one ahead (``Pipeline`` calls ``look_ahead``): at an exposure step the
    step's first frame gets the new gain (before: the old one, a one-frame exposure jump at every hard cut)."""
    levels = [8] * 12 + [2] * 6  # the scene gets 4x darker at frame 12 (gains ~1.2, then ~4.8)
    frames = [_frame(np.full((32, 32), BLACK + v, np.uint16), CFA.RGGB, index=i) for i, v in enumerate(levels)]
    calls = []
    real = kernels.estimate_gain
    monkeypatch.setattr(kernels, "estimate_gain", lambda *a, **k: calls.append(1) or real(*a, **k))

    def gains(ahead: bool) -> list[float]:
        calls.clear()
        enh = ClassicEnhancer(smoothing_frames=8)
        out = []
        for i, f in enumerate(frames):
            if ahead and i + 1 < len(frames):
                enh.look_ahead(frames[i + 1])
            done = enh.process(f)
            out.append(done.gain)
            # An estimate made ahead still counts in its own frame's "gain" time.
            assert (enh._gain.ahead_ns > 0) == (ahead and i > 0)
            assert done.timings_ns["gain"] >= enh._gain.ahead_ns
        assert len(calls) == len(frames)  # each frame estimated once, ahead or not
        return out

    late, ahead = gains(False), gains(True)
    assert late[12] == pytest.approx(late[11], rel=0.2) and late[13] == pytest.approx(4 * late[11], rel=0.05)
    assert ahead[12] == pytest.approx(ahead[13]) == pytest.approx(4 * ahead[11], rel=0.05)
    assert ahead[:12] == late[:12]
