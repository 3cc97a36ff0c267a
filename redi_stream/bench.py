"""``redi-stream bench``: model-only and end-to-end (DNG -> MP4) speed in one run, printed as JSON.

Model-only (``model.bench.bench_model``): per size, milliseconds per frame of each way of running the network,
beside the plain fp32 sequential forward measured in the same process (interleaved on the CPU), as ratios:

* CPU: ``eager`` (plain forward, the process's default threads and malloc: the baseline), ``fast`` (FastRediNet
  alone), ``eager_tuned`` (plain forward with our thread count and malloc setting: what the settings alone buy),
  ``runner`` (what the pipeline calls, ``TorchRunner.run`` with FastRediNet, ``num_threads="auto"``,
  ``reuse_memory=True``), and ``ort`` with ``--ort``; each in fp32 and in bf16. "Ours" is the runner in the
  precision ``--precision auto`` picks for 8-bit video: bf16 on a CPU with AMX, else fp32.
* CUDA: fp32 eager (baseline), fp16 eager, fp16 + CUDA graph (sequential), fp16 three streams + graph, the same two
  with channels-last weights, fp16 FastRediNet + graph (ours: what the pipeline runs by default), bf16 + graph.

End-to-end: a synthetic dark DNG sequence (``capture.write_dark_dng_sequence`` of a ``SyntheticSource``) is written
to a temporary folder, then the real pipeline runs ``RawFileSource -> RediEnhancer(TorchRunner) -> VideoSink``
(on CUDA: ``CudaRediEnhancer``). Reported: steady-state fps (1 / the median interval between the encoder finishing
consecutive frames, from frame min(N // 3, 4) on, so the warm-up, the frames decoded during it and the fast drain
at the end do not count: :func:`steady_rate`), wall fps (warm-up included), mean
ms per stage, the bounding stage (the thread whose per-frame busy time is largest: decode / workers, the infer
thread's gain + pack + infer + isp, encode), the MP4's decoded frame count, and two ratios: e2e fps over the
model-only table's fps for the same size (``e2e_over_model_only``), and over the same runner timed on its own
just before and just after the pipeline run (``e2e_over_model_only_adjacent``; on a shared machine the load can
change between the model-only table and the e2e run, so this one is the steadier comparison). The e2e runs use the
precision of "ours"; where that is bf16, ``e2e_fp32`` repeats them in fp32 (ratios against the fp32 runner).

Weights: the packaged default if the build ships one, else a randomly initialised folded RediNet (speed does not
depend on weight values); the JSON says which.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .argparser import ArgumentParser
from .errors import ConfigError

#: Named sizes: (frame H, W); the network input is :func:`padded` (1080x1920 -> 1088x1952).
NAMED_SIZES = {"720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840), "2k": (1080, 2048)}


def parse_sizes(text: str) -> list[tuple[str, tuple[int, int]]]:
    """'1080p,4k' or '1080x1920' -> [(name, (H, W))]; ConfigError lists the valid names."""
    out = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part in NAMED_SIZES:
            out.append((part, NAMED_SIZES[part]))
            continue
        try:
            h, w = (int(v) for v in part.split("x"))
        except ValueError:
            raise ConfigError(f"unknown size {part!r}; valid: {', '.join(NAMED_SIZES)} or HxW") from None
        if h < 22 or w < 22:
            raise ConfigError(f"size {part!r} too small (DNG frames need >= 22x22)")
        out.append((part, (h, w)))
    if not out:
        raise ConfigError("--sizes is empty")
    return out


def padded(size: tuple[int, int]) -> tuple[int, int]:
    """Network input size of a frame (``kernels.padded_shape``, the same for every Bayer phase), as the pipeline
    runs it: 1080x1920 -> 1088x1952, 2160x3840 -> 2176x3872."""
    from redi_stream.frames import CFA
    from redi_stream.kernels import padded_shape

    return padded_shape(size[0], size[1], CFA.RGGB)


def load_bench_network(weights: Path | None):
    """(RediNet, description): --weights, else the packaged default, else random folded weights."""
    import torch

    from .model import RediNet, default_weights_path, load_weights

    path = weights or default_weights_path()
    if path is not None:
        net = load_weights(path)
        return net, {"source": "file" if weights else "packaged default", "path": str(path)}
    torch.manual_seed(0)
    net = RediNet(weight_norm=False).eval()
    return net, {"source": "random", "note": "no weights shipped in this build: randomly initialised folded "
                                               "RediNet (speed does not depend on weight values)"}


def machine_info() -> dict[str, Any]:
    import torch

    from .model.bench import device_name

    info = {
        "cpu": device_name(torch.device("cpu")).rsplit(" (", 1)[0],
        "cores": os.cpu_count(),
        "torch_threads_default": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


# --- model-only ---------------------------------------------------------------------------------------------------
def model_only(net, sizes, device: str, iters: int, ort: bool) -> tuple[list[dict], dict[str, dict]]:
    """Rows of ``bench_model`` and a per-size summary {name: {plain_fp32_ms, ours_ms, speedup, ...}}."""
    from .model.bench import bench_model

    if device == "cuda":
        precisions, settings = None, None  # CUDA defaults: see model.bench._default_combos
    else:
        precisions, settings = ["fp32", "bf16"], ["fast", "eager_tuned", "runner"] + (["ort"] if ort else [])
    rows: list[dict] = []
    summary: dict[str, dict] = {}
    for name, size in sizes:
        r = bench_model([padded(size)], device, precisions, settings, warmup=1 if device == "cpu" else 10,
                        iters=iters, model=net)
        rows += r
        by = {(x["precision"], x["setting"]): x for x in r}
        base = by[("fp32", "eager")]
        ours = by[("fp16", "fast+graph")] if device == "cuda" else by[(cpu_precision(), "runner")]
        s = {
            "input": list(padded(size)),
            "plain_fp32_ms": base["ms_per_frame"],
            "plain_fp32_best_ms": base["best_ms_per_frame"],
            "ours": f"{ours['precision']} {ours['setting']}",
            "ours_ms": ours["ms_per_frame"],
            "ours_best_ms": ours["best_ms_per_frame"],
            "ours_fps": 1e3 / ours["ms_per_frame"],
            "speedup_vs_plain_fp32": ours["speedup"],
            "best_speedup_vs_plain_fp32": ours["best_speedup"],
            "ours_max_abs_diff": ours["max_abs_diff"],
        }
        if device == "cuda":
            g, sg = by[("fp16", "graph")], by[("fp16", "streams+graph")]
            s.update(fp16_graph_ms=g["ms_per_frame"], speedup_vs_fp16_graph=g["ms_per_frame"] / ours["ms_per_frame"],
                     fp16_streams_graph_ms=sg["ms_per_frame"],
                     speedup_vs_fp16_streams_graph=sg["ms_per_frame"] / ours["ms_per_frame"])
            fastest = min((x for x in r if x["precision"] == "fp16"), key=lambda x: x["ms_per_frame"])
            s.update(fastest_fp16=f"fp16 {fastest['setting']}", fastest_fp16_ms=fastest["ms_per_frame"])
        else:
            t, f = by[("fp32", "eager_tuned")], by[("fp32", "runner")]
            s.update(
                fp32_runner_ms=f["ms_per_frame"],
                fp32_runner_fps=1e3 / f["ms_per_frame"],
                ours_threads=ours["threads"],
                plain_fp32_tuned_ms=t["ms_per_frame"],
                speedup_vs_plain_fp32_tuned=t["ms_per_frame"] / ours["ms_per_frame"],
                best_speedup_vs_plain_fp32_tuned=t["best_ms_per_frame"] / ours["best_ms_per_frame"],
            )
        summary[name] = s
    return rows, summary


# --- end to end ---------------------------------------------------------------------------------------------------
class _TimedSink:
    """Wraps a sink; records when each frame's write returned (the pipeline closes it: close is forwarded)."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.t_done: list[float] = []

    @property
    def frames_written(self) -> int:
        return self.sink.frames_written

    def write(self, frame) -> None:
        self.sink.write(frame)
        self.t_done.append(time.perf_counter())

    def close(self) -> None:
        self.sink.close()


def on_own_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on a short-lived thread; returns its result or raises its exception.

    The bench's forwards run like this so that the main thread never owns an OpenMP thread team, as in
    ``redi-stream`` itself (where only ``redi-infer`` runs forwards): libgomp shortens its spin-waiting when it
    manages more threads than there are cores, and a team left behind by the main thread would count.
    """
    import threading

    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 -- re-raised on the caller's thread
            box["error"] = exc

    t = threading.Thread(target=body, name="redi-bench")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _time_runner(runner, shape: tuple[int, int], n: int) -> list[float]:
    """``n`` timed ``runner.run`` calls (ms) on a zero frame of the padded ``shape``, after ``warm_up``."""
    import numpy as np

    def timed() -> list[float]:
        x = np.zeros((1, 1) + tuple(shape), dtype=np.float32)
        runner.warm_up(x.shape)  # the thread tuner's probing is not timed
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            runner.run(x)
            times.append((time.perf_counter() - t0) * 1e3)
        return times

    return on_own_thread(timed)


def steady_rate(t_done: list[float]) -> float:
    """Frames per second from completion times: 1 / the median interval between consecutive frames.

    A median, not (n - 1) / (t[-1] - t[0]): when the source ends, the last frames are encoded back to back (the
    encoder no longer waits for a next forward, :mod:`redi_stream.stream.cpugate`), so the last interval is far
    shorter than the steady one (75 vs 640 ms at 4K) and a 12-frame mean would overstate the rate by ~10%.
    """
    if len(t_done) < 2:
        return float("nan")
    mid = statistics.median(b - a for a, b in zip(t_done, t_done[1:]))
    return 1.0 / mid if mid > 0 else float("nan")


def count_video_frames(path: Path) -> int:
    """Frames in a video file, counted by decoding (fragmented MP4 headers carry no count)."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def write_dng_clip(folder: Path, size: tuple[int, int], frames: int) -> float:
    """Write ``frames`` synthetic dark DNGs of ``size`` into ``folder``; returns seconds taken."""
    from .capture import SyntheticSource, write_dark_dng_sequence

    t0 = time.perf_counter()
    with SyntheticSource(n_frames=frames, size=size, ratio=150.0, seed=0, motion="pan") as src:
        write_dark_dng_sequence(src, folder)
    return time.perf_counter() - t0


def cpu_precision() -> str:
    """The precision ``--precision auto`` runs an 8-bit video in on this CPU."""
    from .model.runner import auto_cpu_precision

    return auto_cpu_precision(8)


def end_to_end(net, size: tuple[int, int], device: str, frames: int, *, threads: str | int, decode_workers: int,
               encoder_threads: int, preset: str, workdir: Path, precision: str = "fp32") -> dict[str, Any]:
    """One DNG -> MP4 run through the real pipeline; see the module docstring for what is reported."""
    from .capture import RawFileSource
    from .model import TorchRunner
    from .stream import Pipeline, PipelineConfig, RediEnhancer
    from .stream.sinks import VideoSink

    folder = workdir / f"dng_{size[0]}x{size[1]}_{frames}"
    write_s = 0.0 if folder.is_dir() else write_dng_clip(folder, size, frames)  # reused by repeated runs
    out = workdir / f"out_{size[0]}x{size[1]}.mp4"
    meta = getattr(net, "meta", None)
    if device == "cuda":
        from .stream.gpu_enhance import CudaRediEnhancer

        enhancer = CudaRediEnhancer(net, meta, precision="fp16")
        runner = None
    else:
        runner = TorchRunner(net, "cpu", precision, num_threads=threads, reuse_memory=True)
        enhancer = RediEnhancer(runner, meta, yuv420p=True, rgb=False)  # as app.run builds it for a video sink alone
    adjacent_ms: list[float] = []
    try:
        if runner is not None:
            adjacent_ms += _time_runner(runner, padded(size), 3)  # model-only just before ...
        with RawFileSource(folder) as source:
            sink = _TimedSink(VideoSink(out, fps=source.fps, preset=preset, threads=encoder_threads))
            cfg = PipelineConfig(decode_workers=decode_workers, handle_signals=False)
            summary = Pipeline(source, enhancer, [sink], cfg, progress=False).run()
        if runner is not None:
            adjacent_ms += _time_runner(runner, padded(size), 3)  # ... and just after, same runner and settings
        chosen_threads = runner.num_threads if runner is not None else None
    finally:
        enhancer.close()
        if runner is not None:
            runner.close()
    # Steady state: skip the first frames, which the decoder may have queued while the infer thread warmed up.
    t = sink.t_done
    k0 = min(len(t) // 3, 4)
    steady_fps = steady_rate(t[k0:])
    stages = {k: round(v.mean_ms, 2) for k, v in summary.stages.items()}
    infer_keys = [k for k in ("gain", "pack", "infer", "isp", "upload", "download") if k in stages]
    busy = {
        "capture": stages.get("decode", 0.0) / decode_workers,
        "infer": sum(stages[k] for k in infer_keys),
        "encode": stages.get("encode", 0.0),
    }
    decoded = count_video_frames(out)
    adjacent_fps = 1e3 / statistics.median(adjacent_ms) if adjacent_ms else None
    return {
        "size": list(size),
        "input": list(padded(size)),
        "frames": frames,
        "frames_out": summary.frames_out,
        "frames_in_mp4": decoded,
        "all_frames_in_mp4": decoded == frames == summary.frames_out,
        "fps": steady_fps,
        "fps_from_frame": k0,
        "wall_fps": summary.fps,
        "warmup_s": round(summary.warmup_s, 3),
        "dng_write_s": round(write_s, 3),
        "stages_mean_ms": stages,
        "stage_busy_ms_per_frame": {k: round(v, 2) for k, v in busy.items()},
        "bounding_stage": max(busy, key=busy.get),
        "model_only_adjacent_fps": adjacent_fps,
        "e2e_over_model_only_adjacent": steady_fps / adjacent_fps if adjacent_fps else None,
        "settings": {
            "device": device,
            "precision": "fp16" if device == "cuda" else precision,
            "torch_threads": threads,
            "torch_threads_chosen": chosen_threads,
            "decode_workers": decode_workers,
            "encoder": f"libx264 {preset}, {encoder_threads or 'auto'} threads",
            "reuse_memory": device == "cpu",
        },
        "mp4_bytes": out.stat().st_size,
        "queue_high_water": summary.queue_high_water,
    }


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="redi-stream bench",
                       description="Model-only ms/frame (vs the plain fp32 forward, same run) and end-to-end "
                                   "DNG -> MP4 fps, as JSON.")
    p.add_argument("--sizes", default="1080p,4k", help="comma list of 720p, 1080p, 2k, 4k or HxW (default 1080p,4k)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--frames", type=int, help="frames per end-to-end run (default CPU 12, CUDA 120)")
    p.add_argument("--iters", type=int, help="model-only timed calls per setting (default CPU 5, CUDA 50)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--e2e", dest="e2e", action="store_true", default=True, help="run end to end (default)")
    g.add_argument("--no-e2e", dest="e2e", action="store_false", help="skip the end-to-end runs")
    p.add_argument("--model-only", action="store_true", help="only the model-only table (same as --no-e2e)")
    p.add_argument("--e2e-only", action="store_true", help="skip model-only (the e2e/model ratio is then absent)")
    p.add_argument("--ort", action="store_true", help="CPU: also time an ONNX Runtime session (needs onnxruntime)")
    p.add_argument("--threads", default="auto", help="CPU e2e: torch threads for the runner, auto or N (default auto)")
    p.add_argument("--decode-workers", type=int, default=1, help="e2e raw decode workers (default 1)")
    p.add_argument("--encoder-threads", type=int, default=None,
                   help="e2e x264 threads, 0 = FFmpeg's choice (default: the CLI's, 1 with the CPU network, else 0)")
    p.add_argument("--preset", default="ultrafast", help="e2e x264 preset (default ultrafast, the CLI's)")
    p.add_argument("--weights", type=Path, help="checkpoint (default: the packaged one, else random weights)")
    p.add_argument("--json", type=Path, help="also write the JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from .model.runner import serial_thread

    # As in a run: the forwards run on other threads, and this one must not own an OpenMP thread team meanwhile.
    with serial_thread():
        return _main(ns)


def _main(ns: argparse.Namespace) -> int:
    import torch

    sizes = parse_sizes(ns.sizes)
    if ns.json is not None:
        from .stream.sinks import check_writable_file

        check_writable_file(ns.json)  # before the benchmark, not after it
    if ns.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif ns.device in ("cpu", "cuda"):
        device = ns.device
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available here")
    else:
        raise ConfigError(f"unknown --device {ns.device!r}; valid: auto, cpu, cuda")
    threads: str | int = ns.threads
    if threads != "auto":
        try:
            threads = int(threads)
        except ValueError:
            raise ConfigError(f"--threads wants auto or a positive integer, got {ns.threads!r}") from None
    frames = ns.frames if ns.frames is not None else (12 if device == "cpu" else 120)
    iters = ns.iters if ns.iters is not None else (5 if device == "cpu" else 50)
    if ns.encoder_threads is None:  # as app.encoder_threads: the CPU network keeps every core busy, the GPU does not
        ns.encoder_threads = 1 if device == "cpu" else 0
    if frames < 2 or iters < 1 or ns.decode_workers < 1 or ns.encoder_threads < 0:
        raise ConfigError("need --frames >= 2, --iters >= 1, --decode-workers >= 1, --encoder-threads >= 0")
    net, weights = load_bench_network(ns.weights)
    result: dict[str, Any] = {"machine": machine_info(), "device": device, "weights": weights}
    summary: dict[str, dict] = {}
    if not ns.e2e_only:
        rows, summary = on_own_thread(model_only, net, sizes, device, iters, ns.ort)
        result["model_only"] = summary
        result["model_only_rows"] = rows
    if ns.e2e and not ns.model_only:
        # The CLI's precision for an 8-bit video; on a CPU where that is bf16, fp32 end to end too, for comparison.
        precisions = {"e2e": cpu_precision() if device == "cpu" else "fp16"}
        if precisions["e2e"] == "bf16":
            precisions["e2e_fp32"] = "fp32"
        with tempfile.TemporaryDirectory(prefix="redi-bench-") as tmp:
            for key, precision in precisions.items():
                result[key] = {}
                for name, size in sizes:
                    e = end_to_end(net, size, device, frames, threads=threads, decode_workers=ns.decode_workers,
                                   encoder_threads=ns.encoder_threads, preset=ns.preset, workdir=Path(tmp),
                                   precision=precision)
                    if name in summary:
                        fps = summary[name]["fp32_runner_fps" if key == "e2e_fp32" else "ours_fps"]
                        e["model_only_fps"] = fps
                        e["e2e_over_model_only"] = e["fps"] / fps
                    result[key][name] = e
    result["machine"]["loadavg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    text = json.dumps(result, indent=1, default=_json_default)
    print(text)
    if ns.json is not None:
        ns.json.write_text(text + "\n")
    return 0


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, float):
        return None
    return str(obj)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
