"""Runners and the NHWC fast path: equal to the sequential spec forward; validation; lifecycle. GPU tests marked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from redi_stream.errors import ConfigError, RediStreamError
from redi_stream.model import RediNet, StreamedRunner, TorchRunner
from redi_stream.model.fast import FastRediNet
from redi_stream.model.runner import RunnerClosedError
from tests.conftest import make_random_redi_net


@pytest.fixture(scope="module")
def net() -> RediNet:
    return make_random_redi_net(0)


def spec_nhwc(net: RediNet, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 32, 96), (1, 1, 96, 160)])
def test_fast_net_equals_spec_forward(net, shape):
    x = torch.rand(shape) * 2
    fast = FastRediNet(net).eval()
    with torch.inference_mode():
        got = fast(x)
        ref = net(x).permute(0, 2, 3, 1)
    assert got.shape == (shape[0], shape[2], shape[3], 3)
    assert 0.05 < float(((ref > 0) & (ref < 1)).float().mean())  # the comparison is not all clamped values
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    assert not net.is_folded  # the fast copy does not touch the model it was built from


def test_fast_net_writes_into_given_out(net):
    x = torch.rand(1, 1, 32, 64)
    out = torch.full((1, 32, 64, 3), -1.0)
    with torch.inference_mode():
        assert FastRediNet(net)(x, out=out) is out
    assert float(out.min()) >= 0.0


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 32, 96)])
def test_cpu_runner_equals_spec_forward(net, shape):
    x = (np.random.default_rng(0).random(shape, dtype=np.float32) * 2).astype(np.float32)
    with TorchRunner(net, "cpu", "fp32") as runner:
        out = runner.run(x)
        assert out.shape == (shape[0], shape[2], shape[3], 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, spec_nhwc(net, x), rtol=0, atol=1e-5)
        again = runner.run(x * 0.5)
        assert again is out  # one output buffer per shape, owned by the runner (documented)


def test_cpu_runner_accepts_float64_and_non_contiguous(net):
    x = np.random.default_rng(1).random((1, 1, 64, 128))[..., ::2]  # float64, strided, 64x64
    with TorchRunner(net) as runner:
        out = runner.run(x)
    np.testing.assert_allclose(out, spec_nhwc(net, np.ascontiguousarray(x, np.float32)), rtol=0, atol=1e-5)


def test_cpu_runner_bf16_is_close(net):
    x = np.random.default_rng(2).random((1, 1, 32, 64), dtype=np.float32)
    with TorchRunner(net, "cpu", "bf16") as runner:
        out = runner.run(x)
    ref = spec_nhwc(net, x)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.05


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"precision": "fp16"}, "needs CUDA; valid on cpu: fp32, bf16"),
        ({"precision": "fp64"}, "unknown precision 'fp64'; valid on cpu: fp32, bf16"),
        ({"device": "tpu"}, "valid: cpu, cuda, cuda:N"),
        ({"device": "meta"}, "valid: cpu, cuda, cuda:N"),
        ({"num_threads": 0}, "positive integer"),
    ],
)
def test_runner_validation_lists_choices(net, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TorchRunner(net, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_is_a_config_error(net):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        TorchRunner(net, "cuda")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        StreamedRunner(net, "cuda")


def test_num_threads_is_applied(net):
    before = torch.get_num_threads()
    try:
        with TorchRunner(net, num_threads=1) as runner:
            runner.run(np.zeros((1, 1, 32, 32), np.float32))
            assert torch.get_num_threads() == 1  # set by run(), on the thread that runs the network
    finally:
        torch.set_num_threads(before)


def test_runner_rejects_non_redinet():
    with pytest.raises(ConfigError, match="RediNet"):
        TorchRunner(nn.Conv2d(1, 3, 3))


@pytest.mark.parametrize(
    "shape", [(1, 1, 60, 64), (1, 3, 64, 64), (1, 64, 64), (0, 1, 32, 32), (1, 1, 64, 0)]
)
def test_runner_rejects_bad_input_shapes(net, shape):
    with TorchRunner(net) as runner:
        with pytest.raises(ConfigError):
            runner.run(np.zeros(shape, np.float32))
        with pytest.raises(ConfigError, match="NumPy"):
            runner.run(torch.zeros(1, 1, 32, 32))


def test_close_twice_and_run_after_close(net):
    runner = TorchRunner(net)
    runner.close()
    runner.close()
    with pytest.raises(RunnerClosedError):
        runner.run(np.zeros((1, 1, 32, 32), np.float32))
    assert issubclass(RunnerClosedError, RediStreamError)


def test_with_block_closes_on_exception(net):
    with pytest.raises(KeyError):
        with TorchRunner(net) as runner:
            raise KeyError("boom")
    with pytest.raises(RunnerClosedError):
        runner.run(np.zeros((1, 1, 32, 32), np.float32))


def test_runner_keeps_meta_and_leaves_model_unfolded(net):
    net.meta = "sentinel"
    try:
        with TorchRunner(net) as runner:
            assert runner.meta == "sentinel"
    finally:
        net.meta = None
    assert not net.is_folded


# --- CUDA (skipped without a GPU by tests/conftest.py) ------------------------------------------------------------
def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| (Frobenius)."""
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


GPU_SHAPES = [(1, 1, 64, 96), (2, 1, 128, 64)]


@pytest.fixture
def no_tf32(monkeypatch):
    """fp32 means fp32: cuDNN convolutions may use TF32 by default (torch.backends.cudnn.allow_tf32)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def gpu_sequential_nhwc(net: RediNet, x: np.ndarray) -> np.ndarray:
    """The spec forward (sequential, one stream, no graph), float32 on the GPU."""
    model = net.folded_copy().cuda()
    with torch.no_grad():
        return model(torch.from_numpy(x).cuda()).permute(0, 2, 3, 1).cpu().numpy()


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("streams", [False, True])
def test_gpu_fp32_runner_equals_sequential(net, no_tf32, streams, cuda_graph):
    rng = np.random.default_rng(3)
    with TorchRunner(net, "cuda", "fp32", streams=streams, cuda_graph=cuda_graph) as runner:
        for shape in GPU_SHAPES + GPU_SHAPES:  # each shape twice: capture, then replay
            x = (rng.random(shape, dtype=np.float32) * 2).astype(np.float32)
            np.testing.assert_allclose(runner.run(x), gpu_sequential_nhwc(net, x), rtol=0, atol=1e-5)
            np.testing.assert_allclose(runner.run(x), spec_nhwc(net, x), rtol=0, atol=1e-4)  # vs the CPU


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_gpu_fp16_streams_close_to_fp32(net, no_tf32, cuda_graph):
    rng = np.random.default_rng(4)
    with TorchRunner(net, "cuda", "fp16", streams=True, cuda_graph=cuda_graph) as runner:
        for shape in GPU_SHAPES:
            x = (rng.random(shape, dtype=np.float32) * 2).astype(np.float32)
            assert rel_err(runner.run(x), gpu_sequential_nhwc(net, x)) < 1e-3


GPU_VARIANTS = [dict(channels_last=True), dict(channels_last=True, sequential=True), dict(fast=True, sequential=True)]
GPU_VARIANT_IDS = ["cl+streams", "cl", "fast"]


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
@pytest.mark.parametrize("variant", GPU_VARIANTS, ids=GPU_VARIANT_IDS)
def test_gpu_runner_variants_fp32_equal_sequential(net, no_tf32, variant, cuda_graph):
    rng = np.random.default_rng(6)
    with StreamedRunner(net, "cuda", "fp32", cuda_graph=cuda_graph, **variant) as runner:
        for shape in GPU_SHAPES + GPU_SHAPES:  # each shape twice: capture, then replay
            x = (rng.random(shape, dtype=np.float32) * 2).astype(np.float32)
            got, ref = runner.run(x), gpu_sequential_nhwc(net, x)
            assert 0.05 < float(((ref > 0) & (ref < 1)).mean())  # not a comparison of clamped values
            np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", GPU_VARIANTS, ids=GPU_VARIANT_IDS)
def test_gpu_runner_variants_fp16_close_to_fp32(net, no_tf32, variant):
    rng = np.random.default_rng(7)
    with StreamedRunner(net, "cuda", "fp16", cuda_graph=True, **variant) as runner:
        for shape in GPU_SHAPES:
            x = (rng.random(shape, dtype=np.float32) * 2).astype(np.float32)
            err = rel_err(runner.run(x), gpu_sequential_nhwc(net, x))
            print(f"fp16 {variant} {shape}: rel err {err:.2e}")
            assert err < 1e-3


@pytest.mark.gpu
def test_gpu_fast_graphs_keep_their_scratch_across_shapes(net, no_tf32):
    """FastRediNet keeps scratch buffers for the last shape only; each captured graph keeps its own alive, so a
    graph replayed after another shape's capture writes into memory nobody else was given."""
    rng = np.random.default_rng(8)
    xs = [(rng.random(shape, dtype=np.float32) * 2).astype(np.float32) for shape in GPU_SHAPES]
    with StreamedRunner(net, "cuda", "fp32", cuda_graph=True, fast=True, sequential=True) as runner:
        for x in xs:
            runner.run(x)  # capture the first shape, then the second (its scratch replaces the first's)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()  # freed blocks go back to the driver ...
        junk = [torch.full((1 << 20,), float("nan"), device="cuda") for _ in range(32)]  # ... or to these
        for x in xs:
            np.testing.assert_allclose(runner.run(x), gpu_sequential_nhwc(net, x), rtol=0, atol=2e-5)
            assert all(torch.isnan(j).all() for j in junk)  # no replay wrote into memory it does not own
        del junk


@pytest.mark.gpu
def test_gpu_fast_needs_sequential(net):
    with pytest.raises(ConfigError, match="sequential=True"):
        StreamedRunner(net, "cuda", "fp16", fast=True)


@pytest.mark.gpu
def test_gpu_streamed_forward_equals_sequential_on_device(net, no_tf32):
    with StreamedRunner(net, "cuda", "fp32", cuda_graph=False) as runner:
        x = torch.rand(1, 1, 64, 64, device="cuda") * 2
        with torch.no_grad():
            torch.testing.assert_close(runner.forward(x), runner.net(x), rtol=0, atol=1e-5)
        y = runner.run_device(x)
        assert y.shape == (1, 64, 64, 3) and y.is_cuda
    runner.close()  # idempotent
    with pytest.raises(RunnerClosedError):
        runner.run(np.zeros((1, 1, 32, 32), np.float32))


@pytest.mark.gpu
def test_gpu_graph_output_is_replayed_not_stale(net):
    with StreamedRunner(net, "cuda", "fp32", cuda_graph=True) as runner:
        a = np.random.default_rng(5).random((1, 1, 64, 64), dtype=np.float32)
        first = runner.run(a).copy()
        second = runner.run(a * 0.25)
        assert not np.allclose(first, second)
        np.testing.assert_allclose(runner.run(a), first, rtol=0, atol=1e-6)


@pytest.mark.gpu
def test_gpu_bench_runs():
    from redi_stream.model.bench import bench_model

    rows = bench_model(sizes=[(64, 128)], device="cuda", warmup=2, iters=3)
    assert rows[0]["setting"] == "eager" and len(rows) == 8
    assert all(r["ms_per_frame"] > 0 and r["max_abs_diff"] < 0.5 for r in rows)  # sanity: random, unscaled weights
