"""Model-only benchmark: milliseconds per frame for each way of running the network, against plain fp32 forward.

``bench_model`` times, in one process and on one input per size, the baseline (``RediNet.forward``, float32,
sequential, NCHW, folded weights, inference mode, the process's default torch threads and malloc behaviour) and
each requested (precision, setting), and reports each one's time ratio to the baseline and its max |difference|
from the baseline's output. Input transfer is excluded except for ``runner``: the input already lives on the
device; GPU settings other than ``eager`` time ``StreamedRunner.run_device`` (cast, forward, NHWC float32 output;
graph replay where named). GPU times come from CUDA events around ``iters`` calls. CPU calls are **interleaved**
(round r calls every setting once), and the median and the minimum of ``iters`` ``time.perf_counter`` intervals
are reported: the development machine is shared, a background job can take a core at any moment, and interleaving
makes every setting see the same load.

Settings:
    CPU: ``eager`` (baseline form), ``channels_last`` (same forward, NHWC memory), ``fast``
        (:class:`~redi_stream.model.fast.FastRediNet` with the process's defaults), ``runner`` (what the pipeline
        calls: ``TorchRunner.run`` on a host array, FastRediNet with ``num_threads="auto"`` and
        ``reuse_memory=True``), ``eager_tuned`` (the plain forward with the runner's thread count and malloc
        setting: separates what the settings buy from what the rewrite buys), ``ort`` (ONNX Runtime session of the
        exported spec forward, graph optimisations ORT_ENABLE_ALL; needs ``onnxruntime``), ``compile``
        (``torch.compile`` of ``FastRediNet``; tens of seconds of compiling on 2 cores, so not a default).
        ``NAME@T`` runs setting NAME with T torch threads (e.g. ``fast@1``).
    CUDA: ``eager`` (plain forward), ``graph``, ``streams``, ``streams+graph`` (``StreamedRunner``); ``cl+...``
        the same with channels-last weights and trunk inputs (``StreamedRunner(channels_last=True)``); ``fast``,
        ``fast+graph`` (``StreamedRunner(fast=True)``: FastRediNet on the GPU, one stream).

Settings that keep freed memory (``runner``, ``eager_tuned``) run after the others in each round, after one
untimed call that re-grows the heap (switching back to glibc's defaults returns the memory to the OS).

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
from redi_stream.model.runner import Precision, StreamedRunner, TorchRunner, parse_device, parse_precision

CPU_SETTINGS = ("eager", "channels_last", "fast", "compile", "runner", "eager_tuned", "ort")
CUDA_SETTINGS = ("eager", "graph", "streams", "streams+graph", "cl+graph", "cl+streams+graph", "fast", "fast+graph")
DEFAULT_SIZES = ((1088, 1920), (2176, 3840))
BASELINE = ("fp32", "eager")
#: Settings whose timed calls run with glibc keeping freed memory (see ``keep_freed_memory``).
_KEEP_MEMORY = ("runner", "eager_tuned")


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
        return [BASELINE, ("fp16", "eager"), ("fp16", "graph"), ("fp16", "streams+graph"), ("fp16", "cl+graph"),
                ("fp16", "cl+streams+graph"), ("fp16", "fast+graph"), ("bf16", "graph")]
    return [BASELINE, ("fp32", "channels_last"), ("fp32", "fast")]


def _split_threads(setting: str) -> tuple[str, int | None]:
    """'fast@1' -> ('fast', 1); 'fast' -> ('fast', None)."""
    base, sep, threads = setting.partition("@")
    if not sep:
        return setting, None
    try:
        n = int(threads)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"benchmark setting {setting!r}: threads after '@' must be a positive integer")
    return base, n


def _combos(
    device_type: str, precisions: Sequence[str] | None, settings: Sequence[str] | None
) -> list[tuple[str, str]]:
    if precisions is None and settings is None:
        return _default_combos(device_type)
    valid_settings = CUDA_SETTINGS if device_type == "cuda" else CPU_SETTINGS
    settings = tuple(settings or valid_settings[:3])
    for s in settings:
        base, threads = _split_threads(s)
        if base not in valid_settings or (threads is not None and device_type == "cuda"):
            raise ConfigError(f"unknown {device_type} benchmark setting {s!r}; valid: {', '.join(valid_settings)}"
                              + (" (CPU settings may end in @THREADS)" if device_type == "cpu" else ""))
    precs = [parse_precision(p, device_type).value for p in (precisions or ("fp32",))]
    combos = [BASELINE] + [(p, s) for p in precs for s in settings]
    return list(dict.fromkeys(combos))  # baseline first, no duplicates


def export_onnx(net: RediNet, shape: tuple[int, int, int, int], path: str) -> None:
    """Export the spec forward (folded, float32, NHWC output) for input ``shape`` to ONNX (opset 17) at ``path``."""
    import warnings

    class _Nhwc(torch.nn.Module):
        def __init__(self, model: RediNet):
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x).permute(0, 2, 3, 1)

    model = _Nhwc(net.folded_copy().eval())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's shape-check warnings and the legacy-exporter notice
        torch.onnx.export(model, (torch.zeros(shape),), path, opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"])


def _ort_fn(net: RediNet, x: torch.Tensor, threads: int) -> Callable[[], torch.Tensor]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("benchmark setting 'ort' needs onnxruntime (pip install 'redi-stream[ort]')") from None
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "redi.onnx")
        export_onnx(net, tuple(x.shape), path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    xn = x.float().numpy()
    return lambda: torch.from_numpy(sess.run(None, {"x": xn})[0])


class _Case:
    """One (precision, setting) on the CPU: its call, close, and the process state it runs in."""

    def __init__(self, call: Callable[[], Any], close: Callable[[], None], threads: int | None, keep: bool,
                 runner=None):
        self.call, self.close, self.threads, self.keep, self.runner = call, close, threads, keep, runner

    def __call__(self) -> Any:
        if self.threads is not None and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)  # None: a runner whose own tuner sets the count
        return self.call()


def _make_fn(
    net: RediNet, device: torch.device, precision: str, setting: str, x: torch.Tensor
) -> tuple[Callable[[], torch.Tensor], Callable[[], None]]:
    """(call, close) for one CUDA combination, or for a CPU combination without thread/memory handling.

    ``call()`` returns (N, 3, H, W) for the forward-based settings (``eager``, ``eager_tuned``, ``channels_last``)
    and (N, H, W, 3) for the others."""
    dtype = Precision(precision).dtype
    setting, _ = _split_threads(setting)
    if setting in ("eager", "eager_tuned"):
        model = net.folded_copy().to(device, dtype)
        xd = x.to(dtype)
        return (lambda: model(xd)), (lambda: None)
    if device.type == "cuda":
        parts = set(setting.split("+"))
        runner = StreamedRunner(net, device, precision, cuda_graph="graph" in parts, sequential="streams" not in parts,
                                channels_last="cl" in parts, fast="fast" in parts)
        return (lambda: runner.run_device(x)), runner.close
    if setting == "channels_last":
        model = net.folded_copy().to(dtype=dtype, memory_format=torch.channels_last)
        xd = x.to(dtype).contiguous(memory_format=torch.channels_last)
        return (lambda: model(xd)), (lambda: None)
    if setting == "ort":
        return _ort_fn(net, x, torch.get_num_threads()), (lambda: None)
    fast = FastRediNet(net).to(dtype).eval()
    n, _, h, w = x.shape
    out = torch.empty((n, h, w, 3), dtype=dtype)
    xd = x.to(dtype)
    if setting == "compile":
        compiled = torch.compile(fast, backend="inductor")
        return (lambda: compiled(xd)), (lambda: None)
    return (lambda: fast(xd, out)), (lambda: None)


def _make_cpu_case(net: RediNet, precision: str, setting: str, x: torch.Tensor, default_threads: int,
                   runner_threads: int | None) -> _Case:
    base, threads = _split_threads(setting)
    if base == "runner":
        runner = TorchRunner(net, "cpu", precision, num_threads=threads if threads is not None else "auto",
                             reuse_memory=True)
        xn = x.float().numpy()
        runner.warm_up(tuple(x.shape))  # the thread tuner decides here
        return _Case(lambda: torch.from_numpy(runner.run(xn)), runner.close, threads, True, runner)
    call, close = _make_fn(net, torch.device("cpu"), precision, setting, x)
    if base == "eager_tuned" and threads is None:
        threads = runner_threads
    return _Case(call, close, threads if threads is not None else default_threads, base in _KEEP_MEMORY)


def _to_nhwc_f32(y: torch.Tensor, setting: str) -> torch.Tensor:
    forward_based = _split_threads(setting)[0] in ("eager", "eager_tuned", "channels_last")
    return (y.permute(0, 2, 3, 1) if forward_based else y).float()


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


def _time_cpu_interleaved(cases: list[_Case], warmup: int, iters: int) -> list[list[float]]:
    """Per case, ``iters`` milliseconds, measured in rounds that call every case once (default-malloc cases first,
    then the memory-keeping ones after one untimed call that re-grows the heap)."""
    from redi_stream.model.runner import keep_freed_memory

    groups = [[i for i, c in enumerate(cases) if not c.keep], [i for i, c in enumerate(cases) if c.keep]]
    for case in cases:  # the first call (output check) was made by the caller
        keep_freed_memory(case.keep, single_arena=False)
        for _ in range(warmup - 1):
            case()
    times: list[list[float]] = [[] for _ in cases]
    for _ in range(iters):
        for keep, group in zip((False, True), groups):
            if not group:
                continue
            keep_freed_memory(keep, single_arena=False)
            if keep:
                cases[max(group, key=lambda i: not cases[i].runner)]()  # heap back to its peak, untimed
            for i in group:
                t0 = time.perf_counter()
                cases[i]()
                times[i].append((time.perf_counter() - t0) * 1e3)
    keep_freed_memory(False)
    return times


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
            fp16 streams+graph, fp16 cl+graph, fp16 cl+streams+graph, fp16 fast+graph, bf16 graph).
        warmup, iters: calls before / during timing (the first warm-up call also provides the output compared
            with the baseline's); defaults CPU 1 / 3, CUDA 10 / 50. On the CPU the ``iters`` calls are interleaved
            rounds over all settings.
        batch: frames per call (ms are per frame).
        model: network to time (random weights if None; speed does not depend on the values).

    Each dict: ``device``, ``size`` [H, W], ``batch``, ``precision``, ``setting``, ``ms_per_frame`` (median),
    ``best_ms_per_frame`` (min), ``ratio_vs_baseline`` (median time / baseline median time; < 1 is faster),
    ``speedup`` (its inverse), ``best_speedup`` (baseline min / min), ``max_abs_diff`` (vs the baseline's output),
    ``threads`` (CPU: torch threads used), ``warmup``, ``iters``, ``torch``.
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
    default_threads = torch.get_num_threads()
    name = device_name(dev)
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    try:
        with torch.inference_mode():
            for h, w in sizes:
                if h % 32 or w % 32:
                    raise ConfigError(f"benchmark size {h}x{w} is not a multiple of 32")
                x = (torch.rand((batch, 1, h, w), generator=gen) * 2).to(dev)
                if dev.type == "cuda":
                    rows += _bench_cuda_size(model, dev, combos, x, warmup, iters, name)
                else:
                    rows += _bench_cpu_size(model, combos, x, warmup, iters, name, default_threads)
    finally:
        torch.set_num_threads(default_threads)
    return rows


def _row(name, x, precision, setting, typical, best, base_typical, base_best, diff, warmup, iters, threads=None):
    batch, _, h, w = x.shape
    return {
        "device": name,
        "size": [h, w],
        "batch": batch,
        "precision": precision,
        "setting": setting,
        "ms_per_frame": typical / batch,
        "best_ms_per_frame": best / batch,
        "ratio_vs_baseline": typical / base_typical,
        "speedup": base_typical / typical,
        "best_speedup": base_best / best,
        "max_abs_diff": diff,
        "threads": threads,
        "warmup": warmup,
        "iters": iters,
        "torch": torch.__version__,
    }


def _bench_cuda_size(model, dev, combos, x, warmup, iters, name) -> list[dict[str, Any]]:
    rows = []
    base = None
    for precision, setting in combos:
        call, close = _make_fn(model, dev, precision, setting, x)
        try:
            out = _to_nhwc_f32(call(), setting)
            typical, best = _time_ms(call, dev, warmup, iters)
        finally:
            close()
        if base is None:
            base = (typical, best, out.clone())
        diff = float((out - base[2]).abs().max())
        rows.append(_row(name, x, precision, setting, typical, best, base[0], base[1], diff, warmup, iters))
    return rows


def _bench_cpu_size(model, combos, x, warmup, iters, name, default_threads) -> list[dict[str, Any]]:
    from redi_stream.model.runner import keep_freed_memory

    cases: list[_Case] = []
    outs = []
    runner_threads = None
    # Runners first: their tuner's choice is what eager_tuned copies.
    order = sorted(range(len(combos)), key=lambda i: _split_threads(combos[i][1])[0] != "runner")
    built: dict[int, _Case] = {}
    try:
        for i in order:
            precision, setting = combos[i]
            keep_freed_memory(_split_threads(setting)[0] in _KEEP_MEMORY, single_arena=False)
            torch.set_num_threads(default_threads)
            case = _make_cpu_case(model, precision, setting, x, default_threads, runner_threads)
            built[i] = case
            if case.runner is not None and runner_threads is None:
                runner_threads = case.runner.num_threads
        cases = [built[i] for i in range(len(combos))]
        for case, (_, setting) in zip(cases, combos):
            keep_freed_memory(case.keep, single_arena=False)
            outs.append(_to_nhwc_f32(case(), setting).clone())
        times = _time_cpu_interleaved(cases, warmup, iters)
    finally:
        for case in built.values():
            case.close()
        keep_freed_memory(False)
    base_typ, base_best = statistics.median(times[0]), min(times[0])
    rows = []
    for i, ((precision, setting), case) in enumerate(zip(combos, cases)):
        diff = float((outs[i] - outs[0]).abs().max())
        threads = case.runner.num_threads if case.runner is not None else case.threads
        rows.append(_row(name, x, precision, setting, statistics.median(times[i]), min(times[i]), base_typ,
                         base_best, diff, warmup, iters, threads))
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
