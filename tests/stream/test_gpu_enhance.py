"""CUDA enhancer: its device program (run on the CPU device here) equals the CPU RediEnhancer; CUDA-only parts
(pinned slots, events, graphs, submit/collect) are marked gpu."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from redi_stream import kernels
from redi_stream.capture import SyntheticSource
from redi_stream.errors import ConfigError
from redi_stream.frames import CFA
from redi_stream.model import RediNet, TorchRunner
from redi_stream.stream import RediEnhancer
from redi_stream.stream.gpu_enhance import CudaRediEnhancer, cpu_reference_program
from tests.conftest import make_random_redi_net


@pytest.fixture(scope="module")
def net() -> RediNet:
    return make_random_redi_net(2)


def frames(cfa: CFA, size=(62, 90), n=2):
    src = SyntheticSource(np.random.default_rng(0).random((80, 120, 3), dtype=np.float32), n_frames=n, size=size,
                          ratio=50.0, seed=1, cfa=cfa)
    return [src.read(i) for i in range(n)]


def pipelined(enh, fs):
    """Two frames in flight: submit frame i + 1 before collecting frame i; returns every output, in order."""
    out = []
    for f in fs:
        if len(enh._in_flight) == 2:
            out.append(enh.collect())
        enh.submit(f)
    while (o := enh.collect()) is not None:
        out.append(o)
    return out


def cpu_enhance(net, frame, gain, out_dtype=np.uint8):
    with TorchRunner(net, "cpu") as runner, RediEnhancer(runner, None, gain=gain, out_dtype=out_dtype) as enh:
        return enh.process(frame).rgb


def as_int16(raw: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(raw.view(np.int16))


@pytest.mark.parametrize("cfa", [CFA.RGGB, CFA.GBRG])
@pytest.mark.parametrize("out_dtype", [np.uint8, np.uint16])
def test_device_program_on_cpu_equals_rediEnhancer(net, cfa, out_dtype):
    frame = frames(cfa)[1]
    gain = 20.0
    ref = cpu_enhance(net, frame, gain, out_dtype).astype(np.int64)
    prog = cpu_reference_program(net, frame.shape, frame.meta, out_dtype=out_dtype, yuv=True)
    with torch.inference_mode():
        outs = prog(as_int16(frame.data), torch.tensor(gain))
    got = outs["rgb"].numpy()
    got = (got.view(np.uint16) if out_dtype == np.uint16 else got).astype(np.int64)
    assert got.shape == ref.shape
    # The CPU path's sRGB table is within one code of the exact curve used here; the networks agree to ~1e-5.
    tol = 1 if out_dtype == np.uint8 else 40
    assert np.abs(got - ref).max() <= tol
    assert (np.abs(got - ref) <= (0 if out_dtype == np.uint8 else 8)).mean() > 0.97
    if out_dtype == np.uint8:
        assert outs["y"].shape == frame.shape and outs["u"].shape == (31, 45)
    else:
        assert "y" not in outs  # yuv planes only for 8-bit output


def test_device_program_srgb_output_quantises_only(net):
    from redi_stream import kernels

    frame = frames(CFA.RGGB)[0]
    prog = cpu_reference_program(net, frame.shape, frame.meta, output="srgb")
    x = np.zeros((1, 1, 64, 96), np.float32)
    kernels.pack_raw(frame.data, frame.meta.black_level_array, frame.meta.white_level, CFA.RGGB, 10.0, x[0, 0])
    with torch.inference_mode():
        got = prog(as_int16(frame.data), torch.tensor(10.0))["rgb"].numpy()
        ref = net(torch.from_numpy(x))[0].permute(1, 2, 0).numpy()[:62, :90]
    np.testing.assert_allclose(got.astype(np.int64), np.floor(np.clip(ref, 0, 1) * 255 + 0.5), atol=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_enhancer_without_cuda_is_a_config_error(net):
    with pytest.raises(ConfigError, match="CUDA"):
        CudaRediEnhancer(net)


def test_cuda_enhancer_gain_multiplier_is_live_like_the_cpu_ones():
    # The preview's +/- keys (app.run passes the enhancer as gain_control when it has a settable gain_multiplier).
    assert isinstance(CudaRediEnhancer.gain_multiplier, property) and CudaRediEnhancer.gain_multiplier.fset


# --- CUDA ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def no_tf32(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.mark.gpu
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "spec"])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_fp32_equals_cpu_enhancer(net, no_tf32, cuda_graph, fast):
    fs = frames(CFA.GRBG, n=3)
    with CudaRediEnhancer(net, None, precision="fp32", cuda_graph=cuda_graph, gain=20.0, fast=fast) as enh:
        enh.warm_up(fs[0].shape, fs[0].meta)
        for f in fs:
            got = enh.process(f)
            ref = cpu_enhance(net, f, 20.0)
            assert got.index == f.index and got.rgb.dtype == np.uint8
            assert np.abs(got.rgb.astype(np.int64) - ref).max() <= 1
            y, u, v = got.yuv420p
            assert y.shape == f.shape and u.shape == (f.shape[0] // 2, f.shape[1] // 2)
            if f.shape[0] % 2 == 0 and f.shape[1] % 2 == 0:  # the planes are the CPU kernel's planes of this rgb
                h, w = f.shape
                half = (h // 2, w // 2)
                want = kernels.rgb_to_yuv420p(got.rgb, np.empty((h, w), np.uint8),
                                              np.empty(half, np.uint8), np.empty(half, np.uint8))
                for g, e in zip((y, u, v), want):
                    assert np.abs(g.astype(np.int64) - e).max() <= 1  # FMA contraction: one code at most


@pytest.mark.gpu
def test_cuda_fp16_close_to_fp32_and_pipelined_order(net):
    fs = frames(CFA.RGGB, size=(64, 96), n=5)
    with CudaRediEnhancer(net, None, precision="fp32", gain=20.0) as ref_enh:
        ref = [ref_enh.process(f).rgb.astype(np.int64) for f in fs]
    with CudaRediEnhancer(net, None, precision="fp16", gain=20.0) as enh:
        out = pipelined(enh, fs)
        with pytest.raises(RuntimeError):
            enh.submit(fs[0]), enh.submit(fs[1]), enh.submit(fs[2])
    assert [o.index for o in out] == [f.index for f in fs]
    for o, r in zip(out, ref):
        assert np.abs(o.rgb.astype(np.int64) - r).mean() < 1.0  # fp16 rel. err ~5e-4 -> well under a code on average
    enh.close()  # idempotent


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_process_close_to_cpu_enhancer(net, no_tf32, precision):
    """One frame at a time (what the pipeline calls), at a size that needs no padding, against the CPU enhancer."""
    fs = frames(CFA.RGGB, size=(64, 96), n=3)
    with CudaRediEnhancer(net, None, precision=precision, gain=20.0) as enh:
        for f in fs:
            diff = np.abs(enh.process(f).rgb.astype(np.int64) - cpu_enhance(net, f, 20.0))
            assert diff.mean() < (0.05 if precision == "fp32" else 1.0), (precision, f.index, diff.mean())


@pytest.mark.gpu
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "spec"])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_pipelined_equals_one_at_a_time(net, no_tf32, cuda_graph, fast):
    """Two frames in flight (submit i+1 before collect i) give the frames that process() gives, in fp32."""
    fs = frames(CFA.RGGB, size=(64, 96), n=5)
    with CudaRediEnhancer(net, None, precision="fp32", cuda_graph=cuda_graph, gain=20.0, fast=fast) as enh:
        ref = [enh.process(f).rgb for f in fs]
    with CudaRediEnhancer(net, None, precision="fp32", cuda_graph=cuda_graph, gain=20.0, fast=fast) as enh:
        out = pipelined(enh, fs)
    for o, r in zip(out, ref):
        assert np.abs(o.rgb.astype(np.int64) - r).max() <= 1, o.index


@pytest.mark.gpu
def test_cuda_gain_multiplier_applies_from_the_next_frame(net):
    fs = frames(CFA.RGGB, n=2)
    with CudaRediEnhancer(net, None, gain=10.0) as enh:
        enh.warm_up(fs[0].shape, fs[0].meta)
        assert enh.process(fs[0]).gain == pytest.approx(10.0)
        enh.gain_multiplier = 2.5
        assert enh.process(fs[1]).gain == pytest.approx(25.0)


@pytest.mark.gpu
def test_cuda_pinned_slot_reuse_does_not_corrupt_frames(net):
    """Each returned frame owns its array; slots are reused only after their copies completed."""
    fs = frames(CFA.RGGB, size=(64, 96), n=4)
    with CudaRediEnhancer(net, None, gain=20.0) as enh:
        outs = [enh.process(f) for f in fs]
        again = [enh.process(f) for f in fs]
    for a, b in zip(outs, again):
        np.testing.assert_array_equal(a.rgb, b.rgb)
    assert len({id(o.rgb) for o in outs}) == len(outs)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [dict(fast=True), dict(fast=False), dict(fast=False, streams=False),
                                     dict(fast=False, channels_last=True)],
                         ids=["fast", "spec-streams", "spec-sequential", "spec-channels-last"])
def test_cuda_network_forms_equal_cpu_enhancer_pipelined(net, no_tf32, variant):
    """Every network form, with graphs and two frames in flight, gives the CPU enhancer's frames (fp32), and in
    fp16 stays within a code on average of them."""
    fs = frames(CFA.GRBG, size=(64, 96), n=5)
    ref = [cpu_enhance(net, f, 20.0) for f in fs]
    for precision, mean_limit in (("fp32", 0.05), ("fp16", 1.0)):
        with CudaRediEnhancer(net, None, precision=precision, gain=20.0, **variant) as enh:
            out = pipelined(enh, fs)
        assert [o.index for o in out] == [f.index for f in fs]
        for o, r in zip(out, ref):
            diff = np.abs(o.rgb.astype(np.int64) - r)
            assert diff.mean() < mean_limit, (precision, o.index, diff.mean())
            if precision == "fp32":
                assert diff.max() <= 1, (o.index, diff.max())
