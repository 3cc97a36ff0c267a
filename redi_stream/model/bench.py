"""Model-only benchmark: milliseconds per frame for each way of running the network, against plain fp32 forward.

``bench_model`` times, in one process and on one input per size, the baseline (``RediNet.forward``, float32,
sequential, NCHW, folded weights, inference mode) and each requested (precision, setting), and reports each one's
time ratio to the baseline and its max |difference| from the baseline's output. Input transfer is excluded: the
input already lives on the device; GPU settings other than ``eager`` time ``StreamedRunner.run_device`` (cast,
forward, NHWC float32 output; graph replay where named). GPU times come from CUDA events around ``iters`` calls,
CPU times are the median of ``iters`` ``time.perf_counter`` intervals (min also reported: the development machine
is shared, and the minimum is the least disturbed).

Settings:
    CPU: ``eager`` (baseline form), ``channels_last`` (same forward, NHWC memory), ``fast``
        (:class:`~redi_stream.model.fast.FastRediNet`, what ``TorchRunner`` uses), ``compile`` (``torch.compile``
        of ``FastRediNet``, inductor; compiling takes tens of seconds on 2 cores, so not a default).
    CUDA: ``eager`` (plain forward), ``graph``, ``streams``, ``streams+graph`` (``StreamedRunner``).

``python -m redi_stream.model.bench`` runs the defaults for the machine and prints a table and JSON.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from redi_stream.errors import ConfigError
from redi_stream.model.fast import FastRediNet
from redi_stream.model.net import RediNet
from redi_stream.model.runner import Precision, StreamedRunner, parse_device, parse_precision

CPU_SETTINGS = ("eager", "channels_last", "fast", "compile")
CUDA_SETTINGS = ("eager", "graph", "streams", "streams+graph")
DEFAULT_SIZES = ((1088, 1920), (2176, 3840))
BASELINE = ("fp32", "eager")


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model name and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: platform.processor() is the best we have
    return f"{name} ({torch.get_num_threads()} threads)"


def _default_combos(device_type: str) -> list[tuple[str, str]]:
    if device_type == "cuda":
        return [BASELINE, ("fp16", "eager"), ("fp16", "graph"), ("fp16", "streams+graph"), ("bf16", "graph")]
    return [BASELINE, ("fp32", "channels_last"), ("fp32", "fast")]


def _combos(
    device_type: str, precisions: Sequence[str] | None, settings: Sequence[str] | None
) -> list[tuple[str, str]]:
    if precisions is None and settings is None:
        return _default_combos(device_type)
    valid_settings = CUDA_SETTINGS if device_type == "cuda" else CPU_SETTINGS
    settings = tuple(settings or valid_settings[:3])
    for s in settings:
        if s not in valid_settings:
            raise ConfigError(f"unknown {device_type} benchmark setting {s!r}; valid: {', '.join(valid_settings)}")
    precs = [parse_precision(p, device_type).value for p in (precisions or ("fp32",))]
    combos = [BASELINE] + [(p, s) for p in precs for s in settings]
    return list(dict.fromkeys(combos))  # baseline first, no duplicates


def _make_fn(
    net: RediNet, device: torch.device, precision: str, setting: str, x: torch.Tensor
) -> tuple[Callable[[], torch.Tensor], Callable[[], None]]:
    """(call, close) for one combination; ``call()`` returns (N, 3, H, W) for the forward-based settings
    (``eager``, ``channels_last``) and (N, H, W, 3) for the others."""
    dtype = Precision(precision).dtype
    if setting == "eager":
        model = net.folded_copy().to(device, dtype)
        xd = x.to(dtype)
        return (lambda: model(xd)), (lambda: None)
    if device.type == "cuda":
        runner = StreamedRunner(
            net, device, precision, cuda_graph="graph" in setting, sequential="streams" not in setting
        )
        return (lambda: runner.run_device(x)), runner.close
    if setting == "channels_last":
        model = net.folded_copy().to(dtype=dtype, memory_format=torch.channels_last)
        xd = x.to(dtype).contiguous(memory_format=torch.channels_last)
        return (lambda: model(xd)), (lambda: None)
    fast = FastRediNet(net).to(dtype).eval()
    n, _, h, w = x.shape
    out = torch.empty((n, h, w, 3), dtype=dtype)
    xd = x.to(dtype)
    if setting == "compile":
        compiled = torch.compile(fast, backend="inductor")
        return (lambda: compiled(xd)), (lambda: None)
    return (lambda: fast(xd, out)), (lambda: None)


def _to_nhwc_f32(y: torch.Tensor, setting: str) -> torch.Tensor:
    return (y.permute(0, 2, 3, 1) if setting in ("eager", "channels_last") else y).float()


def _time_ms(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> tuple[float, float]:
    """(typical, best) milliseconds per call; the caller has already made one (output-checking) call."""
    for _ in range(warmup - 1):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end) / iters
        return ms, ms
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def bench_model(
    sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
    device: str | torch.device = "cpu",
    precisions: Sequence[str] | None = None,
    settings: Sequence[str] | None = None,
    warmup: int | None = None,
    iters: int | None = None,
    *,
    batch: int = 1,
    model: RediNet | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time the network per (size, precision, setting); returns one JSON-able dict per combination.

    Args:
        sizes: (H, W) frame sizes, multiples of 32.
        device: 'cpu', 'cuda' or 'cuda:N'.
        precisions, settings: cross product to time (plus the baseline, fp32 eager, always first). Both None: the
            defaults (CPU: eager, channels_last, fast in fp32; CUDA: fp32 eager, fp16 eager, fp16 graph,
            fp16 streams+graph, bf16 graph).
        warmup, iters: calls before / during timing (the first warm-up call also provides the output compared
            with the baseline's); defaults CPU 1 / 3 (both default sizes in about 25 s on an idle 2-core CPU),
            CUDA 10 / 50.
        batch: frames per call (ms are per frame).
        model: network to time (random weights if None; speed does not depend on the values).

    Each dict: ``device``, ``size`` [H, W], ``batch``, ``precision``, ``setting``, ``ms_per_frame``,
    ``best_ms_per_frame``, ``ratio_vs_baseline`` (time / baseline time; < 1 is faster), ``speedup`` (its inverse),
    ``max_abs_diff`` (vs the baseline's output), ``warmup``, ``iters``, ``torch``.
    """
    dev = parse_device(device)
    combos = _combos(dev.type, precisions, settings)
    warmup = (10 if dev.type == "cuda" else 1) if warmup is None else warmup
    iters = (50 if dev.type == "cuda" else 3) if iters is None else iters
    if iters < 1 or warmup < 0 or batch < 1:
        raise ConfigError(f"need iters >= 1, warmup >= 0, batch >= 1 (got {iters}, {warmup}, {batch})")
    if model is None:
        torch.manual_seed(seed)
        model = RediNet(weight_norm=False).eval()
    name = device_name(dev)
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    with torch.inference_mode():
        for h, w in sizes:
            if h % 32 or w % 32:
                raise ConfigError(f"benchmark size {h}x{w} is not a multiple of 32")
            x = (torch.rand((batch, 1, h, w), generator=gen) * 2).to(dev)
            base_ms = None
            base_out = None
            for precision, setting in combos:
                call, close = _make_fn(model, dev, precision, setting, x)
                try:
                    out = _to_nhwc_f32(call(), setting)
                    typical, best = _time_ms(call, dev, warmup, iters)
                finally:
                    close()
                if base_ms is None:
                    base_ms, base_out = typical, out.clone()
                rows.append(
                    {
                        "device": name,
                        "size": [h, w],
                        "batch": batch,
                        "precision": precision,
                        "setting": setting,
                        "ms_per_frame": typical / batch,
                        "best_ms_per_frame": best / batch,
                        "ratio_vs_baseline": typical / base_ms,
                        "speedup": base_ms / typical,
                        "max_abs_diff": float((out - base_out).abs().max()),
                        "warmup": warmup,
                        "iters": iters,
                        "torch": torch.__version__,
                    }
                )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Human-readable table of ``bench_model`` rows."""
    lines = [f"device: {rows[0]['device']}" if rows else "no results"]
    lines.append(f"{'size':>11} {'prec':>5} {'setting':>14} {'ms/frame':>9} {'best':>8} {'ratio':>6} {'max|diff|':>9}")
    for r in rows:
        size = "x".join(map(str, r["size"]))
        lines.append(
            f"{size:>11} {r['precision']:>5} {r['setting']:>14} {r['ms_per_frame']:9.2f} "
            f"{r['best_ms_per_frame']:8.2f} {r['ratio_vs_baseline']:6.3f} {r['max_abs_diff']:9.1e}"
        )
    return "\n".join(lines)


def main() -> None:
    """``python -m redi_stream.model.bench``: defaults for this machine (CUDA if available), table then JSON."""
    rows = bench_model(device="cuda" if torch.cuda.is_available() else "cpu")
    print(format_table(rows))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
