"""Out of device memory -> the frame is retried in overlapping tiles (same gain, seamless), or a clear error naming
the memory needed; ``--tile`` by hand. Simulated on the CPU: a runner that raises ``torch.cuda.OutOfMemoryError``
(constructible on CPU-only torch; it is ``torch.OutOfMemoryError``, a RuntimeError) above a number of pixels."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from redi_stream.capture import SyntheticSource, write_dng
from redi_stream.cli import EXIT_FAILED, EXIT_USAGE, main
from redi_stream.errors import ConfigError, PipelineError
from redi_stream.frames import CFA
from redi_stream.model import RediNet, TorchRunner, WeightsMeta, save_weights
from redi_stream.model.tiling import (
    DEFAULT_OVERLAP,
    DeviceMemoryError,
    TiledRunner,
    estimate_memory_bytes,
    is_out_of_memory,
    run_tiled,
    run_tiled_host,
    tiling_work,
)
from redi_stream.stream import NullSink, Pipeline, PipelineConfig, RediEnhancer

FP16_HALF_ULP_AT_1 = 2.0**-11  # fp16 rounding at 1.0 (outputs are in [0, 1])
META = WeightsMeta(output="linear_camera_rgb", gain_target=0.05, version="random")


class OomRunner:
    """A real runner that fails like a too-small GPU: CUDA OOM for inputs above ``limit_px`` pixels."""

    def __init__(self, runner, limit_px: int) -> None:
        self.runner, self.limit_px = runner, limit_px
        self.precision = getattr(runner, "precision", None)
        self.shapes: list[tuple[int, ...]] = []
        self.ooms = 0

    def run(self, x: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        if x.shape[-2] * x.shape[-1] > self.limit_px:
            self.ooms += 1
            gib = estimate_memory_bytes(x.shape[-2], x.shape[-1], 2) / 2**30
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {gib:.2f} GiB. GPU 0 has a total capacity of 0.50 GiB\n"
                "of which 0 bytes is free.")
        return self.runner.run(x)


@pytest.fixture(scope="module")
def net() -> RediNet:
    torch.manual_seed(0)
    return RediNet().eval()


@pytest.fixture(scope="module")
def runner(net):
    with TorchRunner(net, num_threads=1) as r:
        yield r


def _dark_input(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A noisy, amplified dark raw (what the network really sees), (1, 1, h, w) float32."""
    rng = np.random.default_rng(seed)
    return (rng.poisson(3.0, (1, 1, h, w)) * 0.1).astype(np.float32)


def test_cuda_oom_error_is_recognised_through_chains():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB"))
    try:  # an OOM inside a CUDA-graph capture resurfaces as the capture's own error
        try:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        except RuntimeError:
            raise RuntimeError("operation failed due to a previous error during capture")
    except RuntimeError as exc:
        assert is_out_of_memory(exc)
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime errors speak for the allocator


def test_host_tiling_equals_torch_tiling_and_stays_within_fp16_rounding(runner, net):
    x = _dark_input(1024, 2048)
    ref = runner.run(x).copy()
    got = run_tiled_host(runner.run, x, (1024, 1024), DEFAULT_OVERLAP)
    assert np.abs(got - ref).max() < FP16_HALF_ULP_AT_1  # measured 8.8e-6 (random weights, default overlap)
    with torch.inference_mode():  # the same spans as the torch version (plain NCHW forward)
        want = run_tiled(net.folded_copy(), torch.from_numpy(x), (1024, 1024), DEFAULT_OVERLAP)
    np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-4)
    assert tiling_work(1024, 2048, (1024, 1024), DEFAULT_OVERLAP) == pytest.approx(2.5)


def test_oom_retries_in_tiles_with_the_whole_frame_gain(runner, caplog):
    """A 1000x2040 GBRG frame (padded 1024x2048) on a 'GPU' that fits 1 Mpx: warm-up OOMs, 1440 tiles OOM,
    1024 tiles fit; both frames come out equal (within 1 code value) to the untiled enhancer, with the same gain."""
    src = SyntheticSource(None, n_frames=2, size=(1000, 2040), ratio=120.0, seed=3, cfa=CFA.GBRG)
    oom = OomRunner(runner, limit_px=1024 * 1024)
    tiled = RediEnhancer(oom, META, smoothing_frames=0)
    plain = RediEnhancer(runner, META, smoothing_frames=0)
    frame0 = src.read(0)
    with caplog.at_level(logging.WARNING, logger="redi_stream.model.tiling"):
        tiled.warm_up(frame0.shape, frame0.meta)
    assert oom.ooms == 2 and tiled._net.tile_for(1024, 2048) == (1024, 1024)
    assert [r.getMessage() for r in caplog.records][0].startswith("out of memory running the network on a 2048x1024")
    plain.warm_up(frame0.shape, frame0.meta)
    for i in range(2):
        frame = src.read(i)
        n_before = len(oom.shapes)
        a, b = tiled.process(frame), plain.process(frame)
        assert a.gain == b.gain  # amplification from the whole frame, not per tile
        assert set(oom.shapes[n_before:]) == {(1, 1, 1024, 1024)}  # straight to tiles: no OOM per frame
        diff = np.abs(a.rgb.astype(int) - b.rgb.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    assert oom.ooms == 2


def test_oom_even_in_the_smallest_tile_is_a_clear_error_naming_the_memory(runner):
    enh = RediEnhancer(OomRunner(runner, limit_px=256 * 256), META)
    src = SyntheticSource(None, n_frames=3, size=(1000, 2040), ratio=120.0, seed=3)
    with pytest.raises(PipelineError) as ei:
        Pipeline(src, enh, [NullSink()], PipelineConfig(), progress=False).run()
    err = ei.value
    assert err.stage == "infer" and isinstance(err.__cause__, DeviceMemoryError)
    msg = str(err)
    assert msg.startswith("infer failed: frame 0")
    assert "out of device memory for a 2048x1024 network input (needs about 0.2 GiB at fp32" in msg
    assert "also failed in 1024x1024 tiles, about 0.11 GiB each" in msg and "CUDA out of memory" in msg
    assert isinstance(err.__cause__, MemoryError)  # DeviceMemoryError is also the builtin it means


def test_other_errors_are_not_retried(runner):
    class Broken:
        def run(self, x):
            raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")

    t = TiledRunner(Broken())
    with pytest.raises(RuntimeError, match="EXECUTION_FAILED"):
        t.run(np.zeros((1, 1, 64, 64), np.float32))
    t = TiledRunner(OomRunner(runner, 0), auto=False)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        t.run(np.zeros((1, 1, 64, 64), np.float32))


def test_bad_tile_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="larger than 768"):
        TiledRunner(object(), tile=(512, 512))
    with pytest.raises(ConfigError, match="multiple of 32"):
        TiledRunner(object(), tile=(1000, 1024))


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory) -> Path:
    """Two 62x1598 DNG frames (a 64x1600 canvas): wide enough for 1024-px tiles, cheap to run on the CPU."""
    d = tmp_path_factory.mktemp("wide")
    src = SyntheticSource(None, n_frames=2, size=(62, 1598), ratio=100.0, seed=5)
    for i in range(2):
        f = src.read(i)
        write_dng(d / f"frame_{i:06d}.dng", f.data, f.meta, fps=24.0)
    return d


@pytest.fixture(scope="module")
def weights(tmp_path_factory, net) -> Path:
    path = tmp_path_factory.mktemp("w") / "random.pt"
    save_weights(net, path, META)
    return path


def test_cli_tile_by_hand_matches_untiled(wide_clip, weights, tmp_path, monkeypatch):
    import redi_stream.model as model

    seen: list[tuple[int, ...]] = []

    class Spy(TorchRunner):
        def run(self, x):
            seen.append(x.shape)
            return super().run(x)

    monkeypatch.setattr(model, "TorchRunner", Spy)
    common = [str(wide_clip), "--weights", str(weights), "--device", "cpu", "--no-progress", "-q"]
    assert main([*common, "--out", str(tmp_path / "plain") + "/"]) == 0
    assert set(seen) == {(1, 1, 64, 1600)}
    seen.clear()
    assert main([*common, "--out", str(tmp_path / "tiled") + "/", "--tile", "1024x1024"]) == 0
    assert set(seen) == {(1, 1, 64, 1024)}  # 4 windows a frame, all the same shape
    for i in range(2):
        a = cv2.imread(str(tmp_path / "plain" / f"frame_{i:06d}.png"), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(tmp_path / "tiled" / f"frame_{i:06d}.png"), cv2.IMREAD_UNCHANGED).astype(int)
        assert np.abs(a - b).max() <= 2  # 16-bit codes: float32-rounding-level differences only


def test_cli_bad_tile_is_a_usage_error(wide_clip, weights, tmp_path, capsys):
    code = main([str(wide_clip), "--weights", str(weights), "--out", str(tmp_path / "o.mp4"), "--tile", "512x512"])
    assert code == EXIT_USAGE
    assert "larger than 768" in capsys.readouterr().err


def test_cli_oom_without_any_fit_fails_with_one_line(wide_clip, weights, tmp_path, capsys, monkeypatch):
    import redi_stream.model as model

    class Tiny(TorchRunner):  # a "GPU" too small for even one 1024x1024 window
        def run(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(model, "TorchRunner", Tiny)
    code = main([str(wide_clip), "--weights", str(weights), "--out", str(tmp_path / "o.mp4"), "--no-progress"])
    assert code == EXIT_FAILED
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert len(err) == 1 and "out of device memory for a 1600x64 network input" in err[0], err
