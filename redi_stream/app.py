"""Composition of a run: source + enhancer + sinks + pipeline, from a validated RunConfig.

The CLI calls :func:`run`, :func:`run_demo` and :func:`make_dng_main`; tests call them too. Everything opened here
is closed here, in reverse order.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np

from .argparser import ArgumentParser, frame_rate
from .config import CudaNet, Device, EnhanceConfig, ModelKind, Precision, RunConfig, default_decode_workers
from .errors import CaptureError, ConfigError, PipelineError, WeightsError
from .frames import CFA, frames_text
from .stream.sinks import STDOUT

log = logging.getLogger("redi_stream")


def open_source(cfg: RunConfig):
    """The frame source named by the config (files or camera)."""
    from .capture import RawFileSource, SyntheticSource, natural_key

    if cfg.camera is not None:
        from .stream.camera import open_camera

        return open_camera(cfg.camera, raw=cfg.raw, fps=cfg.fps, fourcc=cfg.fourcc, reconnect_s=cfg.reconnect_s)
    if cfg.source == "demo":
        return SyntheticSource.demo()
    if cfg.follow_s is not None:
        from .stream.follow import FollowingSource

        return FollowingSource(cfg.source, raw_params=cfg.raw.headerless_params(), fps=cfg.fps, idle_s=cfg.follow_s,
                               start=cfg.start, alike=not cfg.stills,
                               workers=cfg.decode_workers or default_decode_workers())
    # Several paths are a shell's expansion of clip/*.dng (in its own order, frame_10 before frame_2): natural order.
    spec = cfg.source if isinstance(cfg.source, str) else sorted(cfg.source, key=natural_key)
    return RawFileSource(spec, raw_params=cfg.raw.headerless_params(), fps=cfg.fps, alike=not cfg.stills)


def resolve_device(cfg: EnhanceConfig) -> tuple[str, str]:
    """(device, precision) after resolving ``auto``: CUDA + fp16 when a GPU is present, else the CPU in bf16 where
    it has AMX and the output is 8-bit, else in fp32.

    fp16 on CUDA: the enhancer the pipeline calls (one frame at a time) is within a code value of the CPU enhancer in
    fp16 on an H100 (``tests/stream/test_gpu_enhance.py``; README, "GPU"). bf16 on an AMX CPU: 2.2x faster than fp32
    at 1080p, 55 dB from the fp32 output and 0.005 dB from its PSNR against the clean photos (``docs/PERF_NOTES.md``,
    "bf16 on AMX"); bf16 keeps 8 significant bits, so 16-bit frames and 10-bit video stay in fp32.
    """
    import torch

    from .model.runner import auto_cpu_precision

    if cfg.device is Device.AUTO:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = cfg.device.value
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available here (see 'redi-stream doctor')")
    if cfg.precision is Precision.AUTO:
        precision = "fp16" if device == "cuda" else auto_cpu_precision(cfg.bits_out)
    else:
        precision = cfg.precision.value
    if precision == "fp16" and device != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; valid on the CPU: fp32, bf16")
    return device, precision


def load_network(cfg: EnhanceConfig):
    """The RediNet for this run: --weights, else the packaged default weights."""
    from .model import default_weights_path, load_weights

    path = cfg.weights or default_weights_path()
    if path is None:
        raise WeightsError("no default weights are shipped in this build; pass --weights PATH or use --model classic")
    return load_weights(path)


def prepare_network(cfg: EnhanceConfig):
    """The network's own rules checked (device, precision, tile) and its weights loaded, for
    :func:`build_enhancer`'s ``net``; None for the classic model."""
    if cfg.model is not ModelKind.REDI:
        return None
    resolve_device(cfg)
    if cfg.tile is not None:
        from .model.tiling import check_tile

        check_tile(cfg.tile)
    return load_network(cfg)


#: Below this many frames the CPU thread tuner's probing (four extra forwards at warm-up) cannot pay for itself:
#: a short run uses every core, as torch does by default.
TUNE_THREADS_FROM_FRAMES = 8


def build_enhancer(cfg: EnhanceConfig, stack: ExitStack, *, yuv420p: bool = False, rgb: bool = True,
                   frames: int | None = None, net=None):
    """The infer stage's enhancer (network or classic), registered on ``stack`` for closing. ``net``: the network
    :func:`load_network` gave for ``cfg``, if the caller loaded it already.

    ``frames``: how many frames the run will enhance, if known (files; None for a camera). A CPU network times
    1 vs all threads at warm-up only for runs of at least :data:`TUNE_THREADS_FROM_FRAMES` frames: probing costs
    four forwards on zeros, which for a single 24-megapixel still took 11 of its 14.5 s.

    ``yuv420p``: a sink encodes yuv420p (``VideoSink.wants_yuv420p``): the CPU network path then makes the planes
    in its ISP pass (one pass instead of two). ``rgb=False``: nothing but such sinks takes the frames (no preview,
    no image sink), so that pass can skip the RGB image (``RediEnhancer(rgb=False)``).
    """
    from .stream import ClassicEnhancer, RediEnhancer

    out_dtype = np.uint16 if cfg.bits_out == 16 else np.uint8
    common = dict(gain=cfg.gain, smoothing_frames=cfg.gain_smoothing_frames, out_dtype=out_dtype)
    if cfg.model is ModelKind.CLASSIC:
        if cfg.tile is not None:
            log.warning("--tile applies to the network only; ignored with --model classic")
        if cfg.temporal_denoise_frames:
            log.warning("--temporal-denoise applies to the network only; ignored with --model classic")
        return stack.enter_context(ClassicEnhancer(denoise=cfg.denoise, gain_multiplier=cfg.gain_multiplier or 1.0,
                                                   **common))
    from .model import TorchRunner

    if cfg.denoise:
        log.warning("--denoise applies to --model classic only; the network denoises by itself (still scenes: "
                    "--temporal-denoise)")
    net = load_network(cfg) if net is None else net
    device, precision = resolve_device(cfg)
    why = " (this CPU's AMX units; --precision fp32 for full precision)" if (
        precision == "bf16" and device == "cpu" and cfg.precision is Precision.AUTO) else ""
    log.info("model: %s weights (output %s) on %s, %s%s", net.meta.version or "?", net.meta.output, device, precision,
             why)
    if device != "cuda" and (cfg.cuda_net != CudaNet.FAST or not cfg.cuda_graph):
        log.warning("--cuda-net, --sequential and --no-cuda-graph apply to a CUDA device; ignored on the %s", device)
    # The network's form on a GPU (--cuda-net): FastRediNet on one stream, or the spec forward on three or one.
    form = dict(streams=cfg.cuda_net == CudaNet.STREAMS, fast=cfg.cuda_net == CudaNet.FAST)
    if device == "cuda" and cfg.tile is None and not cfg.temporal_denoise_frames:
        # The GPU path: raw uint16 uploaded from pinned double-buffered slots, pack/gain/ISP on the GPU, the network
        # inside CUDA graphs (docs/PERF_NOTES.md). With a yuv420p video sink the planes are made
        # on the GPU too (gpu_ops.rgb_to_yuv420p, equal to the CPU kernel on an H100), so the sink converts nothing.
        from .stream.gpu_enhance import CudaRediEnhancer

        return stack.enter_context(CudaRediEnhancer(
            net, net.meta, device=device, precision=precision, **form, cuda_graph=cfg.cuda_graph,
            gain_multiplier=cfg.gain_multiplier, yuv=yuv420p, **common))
    # CPU: thread count picked by timing 1 vs 2 threads at warm-up (2 is 1.7x faster on an idle 2-core machine,
    # 3.5x slower when another process holds a core), and activation memory kept between frames.
    short = frames is not None and frames < TUNE_THREADS_FROM_FRAMES
    threads = (os.cpu_count() or 1) if short else "auto"
    cpu_opts = dict(num_threads=threads, reuse_memory=True) if device == "cpu" else {}
    runner = stack.enter_context(TorchRunner(net, device=device, precision=precision, **form,
                                             cuda_graph=cfg.cuda_graph, **cpu_opts))
    # gain_multiplier None: the checkpoint's own default multiplier (5 for the official weights, 1 for ours).
    # --tile: fixed tiles; without it whole frames, switching to tiles by itself if the device runs out of memory.
    # --temporal-denoise runs on the host (kernels.temporal), so with it a GPU network goes through this path too.
    return stack.enter_context(RediEnhancer(runner, net.meta, gain_multiplier=cfg.gain_multiplier, tile=cfg.tile,
                                            yuv420p=yuv420p, rgb=rgb, temporal_frames=cfg.temporal_denoise_frames,
                                            **common))


def encoder_threads(cfg: RunConfig) -> int:
    """Video encoder threads: 1 when the network runs on the CPU, else 0 (FFmpeg's choice).

    The CPU network already keeps every core busy, so encoder threads only add their own overhead: libx264
    ultrafast at 1080p measured 16.4 ms of CPU per frame with 1 thread vs 20.6 with FFmpeg's choice (3 threads
    on 2 cores). The classic model and the GPU leave cores free, and there more threads encode faster.
    """
    if cfg.model is not ModelKind.REDI:
        return 0
    try:
        device, _ = resolve_device(cfg)
    except ConfigError:
        return 0  # build_enhancer reports it
    return 1 if device == "cpu" else 0


def sound_for(cfg: RunConfig, source) -> str | None:
    """The sound file a video output carries: ``--audio FILE``, else the one ``.wav`` of the folder that holds all
    the clip's frames (said in a log line), else none (also with ``--audio none``, for cameras and for a single
    still). The clip's CinemaDNG FrameRate (``source.tagged_fps``), if it states one, is checked against ``--fps``."""
    from .stream.audio import find_audio

    if cfg.camera is not None or cfg.audio == "none":
        return None
    audio = cfg.audio
    paths = getattr(source, "paths", None) or []
    folders = {p.parent for p in paths}
    if audio is None and len(paths) > 1 and len(folders) == 1:
        folder = folders.pop()
        found, candidates = find_audio(folder)
        if found is None and len(candidates) > 1:
            log.warning("%s holds %d sound files (%s): the video is silent; choose one with --audio FILE", folder,
                        len(candidates), ", ".join(p.name for p in candidates))
        elif found is not None:
            log.info("sound: %s (--audio none leaves it out)", found)
            audio = os.fspath(found)
    shot_fps = getattr(source, "tagged_fps", None)
    if audio is not None and cfg.fps is not None and shot_fps and abs(cfg.fps - shot_fps) > 1e-3 * shot_fps:
        log.warning("--fps %g plays the %g fps frames at another speed; the sound keeps its own, so it drifts from "
                    "the pictures (--audio none leaves it out)", cfg.fps, shot_fps)
    return audio


def build_sinks(cfg: RunConfig, source, stack: ExitStack, frames: int | None = None) -> list:
    """One sink per ``--out``, in the order given (each checked writable before any frame is decoded), at
    ``--fps`` or the source's rate. ``frames``: how many frames the run will write, if known: for one (a still),
    ``--out shot.png`` is that file's name."""
    from .capture import RawFileSource
    from .stream import open_sink

    audio = sound_for(cfg, source) if cfg.video_outs else None
    # The camera's time code of each file's first frame (CinemaDNG), so an editor can conform the video to the clip.
    timecode = source.timecode if isinstance(source, RawFileSource) else None
    threads = encoder_threads(cfg)
    sinks = []
    for target in cfg.outs:
        opts = {}
        if target in cfg.video_outs:
            opts["codec"], opts["pix_fmt"], opts["timecode"] = cfg.codec_for(target), cfg.pix_fmt_for(target), timecode
            if audio is not None:
                opts["audio"] = audio
        sinks.append(stack.enter_context(open_sink(
            target, fps=cfg.fps or source.fps, segment_s=cfg.segment_s, crf=cfg.crf, qp=cfg.qp, preset=cfg.preset,
            threads=threads, image_format=cfg.image_format.value, bits=cfg.bits, single=frames == 1,
            keep_names=cfg.stills,
            **opts)))
    return sinks


def frame_filter(cfg: EnhanceConfig):
    """What every raw frame goes through before the enhancer (``--hot-pixels``: a
    :class:`~.stream.hotpixels.HotPixelFilter`), or None; shared by the run and the Enhancer."""
    if not cfg.hot_pixels:
        return None
    from .stream.hotpixels import HotPixelFilter

    return HotPixelFilter()


def network_thread_guard(cfg: EnhanceConfig):
    """A context for the thread that builds the network but does not run it (the pipeline runs it on its infer
    thread; an Enhancer may be called from another thread): it must not own an OpenMP thread team meanwhile, or
    every forward on the other thread runs 10-25% slower on a small CPU (:func:`.model.runner.serial_thread`).
    A null context for the classic model, which needs no torch."""
    if cfg.model is not ModelKind.REDI:
        return nullcontext()
    from .model.runner import serial_thread

    return serial_thread()


def run(cfg: RunConfig) -> int:
    """One enhancement run; returns the exit code (errors raise)."""
    with network_thread_guard(cfg):
        return _run(cfg)


def _run(cfg: RunConfig) -> int:
    from .stream import Pipeline, PipelineConfig

    net = prepare_network(cfg)  # before any file is opened
    with ExitStack() as stack:
        # Outputs are checked (opened for writing) before any decoding work starts.
        source = stack.enter_context(open_source(cfg))
        live = bool(getattr(source, "live", False))
        # A window by default for cameras, not for files or frames piped in (--camera -), which are read like files.
        want_preview = cfg.preview if cfg.preview is not None else live
        if want_preview and not cfg.outs:
            from .stream.preview import display_available

            if not display_available():
                raise ConfigError("no display for the preview window (DISPLAY is not set) and no --out: nothing "
                                  "would be shown or written; give --out FILE.mp4 (or --out null to only measure)")
        elif not want_preview and not cfg.outs:  # e.g. frames piped in, read like files: no window by default
            raise ConfigError(f"{getattr(source, 'name', 'the source')}: no --out and no --preview: nothing would be "
                              "shown or written; give --out FILE.mp4 (or --preview, or --out null to only measure)")
        if cfg.start and hasattr(source, "__len__") and cfg.start >= len(source):
            raise ConfigError(f"--start {cfg.start}: {getattr(source, 'name', cfg.source)} has "
                              f"{frames_text(len(source))} (0..{len(source) - 1})")
        frames = len(source) - cfg.start if not live and hasattr(source, "__len__") else None
        if frames is not None and cfg.max_frames is not None:
            frames = min(frames, cfg.max_frames)
        sinks = build_sinks(cfg, source, stack, frames=frames)
        planes = [bool(getattr(s, "wants_yuv420p", False)) for s in sinks]
        planes_only = bool(planes) and all(planes) and not (want_preview or live)  # nothing shows or saves RGB
        enhancer = build_enhancer(cfg, stack, yuv420p=any(planes), rgb=not planes_only, frames=frames, net=net)
        # Live: one frame waits for the network at most (drop-oldest), so capture->display latency stays about one
        # inference; files: a few frames of look-ahead, nothing dropped.
        pcfg = PipelineConfig(on_error=cfg.on_error, decode_workers=cfg.decode_workers or default_decode_workers(),
                              max_frames=cfg.max_frames, start=0 if cfg.follow_s else cfg.start,
                              **({"queue_size": 1} if live else {}),
                              # --follow: the capture stage waits up to follow_s for a file; a stall is longer.
                              **({"stall_timeout_s": max(60.0, cfg.follow_s + 60.0)} if cfg.follow_s else {}))
        preview = None
        if want_preview or live:
            from .stream import make_preview

            # Live without a window: a NullPreview still takes each frame on this thread, so the summary's
            # "display" latency is capture -> the moment a window would show it.
            preview = stack.enter_context(make_preview(
                want_preview, title=f"redi-stream: {getattr(source, 'name', cfg.source)}",
                gain_control=enhancer if hasattr(enhancer, "gain_multiplier") else None))
        hot = frame_filter(cfg)
        try:
            summary = Pipeline(source, enhancer, sinks, pcfg, progress=cfg.progress, preview=preview,
                               frame_filter=hot).run()
        except PipelineError as exc:
            _report_kept(cfg, sinks, getattr(exc, "summary", None))
            raise
    log.info("%s", summary.format())
    if hot is not None:
        log.info("%s", hot.summary())
    if live:
        from .stream.camera import live_report

        log.info("%s", live_report(summary, source, window=type(preview).__name__ == "WindowPreview"))
    if summary.frames_out == 0 and cfg.follow_s is not None:
        raise CaptureError(f"--follow: no frame arrived in {cfg.source} within {cfg.follow_s:g} s; nothing written")
    written = [_written_name(o, sink) for o, sink in zip(cfg.outs, sinks) if o != "null"]
    if written and summary.frames_out == 0:
        log.warning("no frame was enhanced: nothing written")
    elif written:
        log.info("wrote %s (%s)", " and ".join(written), frames_text(summary.frames_out))
    elif cfg.outs:
        log.info("--out null: %s enhanced and discarded, nothing written", frames_text(summary.frames_out))
    return 0


def _output_name(out) -> str:
    """``--out`` as messages name it: ``-`` is standard output."""
    return "standard output" if os.fspath(out) == STDOUT else os.fspath(out)


def _written_name(out, sink) -> str:
    """What a finished run wrote for ``--out OUT``: its name, or for a video cut by ``--segment`` its files."""
    from .stream.sinks import SegmentedVideoSink

    if not isinstance(sink, SegmentedVideoSink):
        return _output_name(out)
    paths = sink.paths
    return os.fspath(paths[0]) if len(paths) == 1 else f"{paths[0]} .. {paths[-1].name} ({len(paths)} files)"


def _report_kept(cfg: RunConfig, sinks: list, summary) -> None:
    """After a failed run: say how many frames each output keeps (the error line says why it stopped)."""
    if summary is None:
        return
    for target, sink in zip(cfg.outs, sinks):
        if target == "null":
            continue
        # A sink that hit a full disk knows what reached the file; the others hold every frame they were given.
        kept = getattr(sink, "frames_kept", None)
        n = kept if kept is not None else getattr(sink, "frames_written", summary.frames_out)
        if n:  # with none, the error line names the first frame and the video sink says it created no file
            log.warning("%s keeps %s, from before the failure", _output_name(target), frames_text(n))


def run_demo(cfg: RunConfig) -> int:
    """The embedded demo: synthetic dark raw frames (no download) -> MP4, with the default weights when shipped."""
    from .model import default_weights_path

    if cfg.model is ModelKind.REDI and cfg.weights is None and default_weights_path() is None:
        log.warning("no default weights in this build: the demo uses --model classic")
        from dataclasses import replace

        cfg = replace(cfg, model=ModelKind.CLASSIC)
    return run(cfg)


def make_dng_main(argv: list[str]) -> int:
    """``redi-stream make-dng``: write a synthetic dark DNG sequence from an image, a video or the demo photo."""
    from .capture import make_dng
    from .capture.dngwrite import IMAGE_SUFFIXES, video_fps, write_video_sound

    p = ArgumentParser(prog="redi-stream make-dng",
                       description="Write a dark raw DNG sequence (real DNG files, via pidng) synthesised "
                                   "from a clean image or video, for trying redi-stream without a camera.")
    p.add_argument("input", nargs="?", type=Path, help="image or video (default: a photo shipped with scikit-image); a "
                   "video's sound is written beside the frames as OUT/OUT.wav, as a camera leaves it")
    p.add_argument("--out", type=Path, required=True, help="output folder for frame_000000.dng ...")
    p.add_argument("--frames", type=int, default=60, help="number of frames (default 60)")
    p.add_argument("--ratio", type=float, default=150.0, help="exposure ratio to darken by (default 150)")
    p.add_argument("--size", default=None, help="HxW of the frames, e.g. 1080x1920 (default: the input's)")
    p.add_argument("--cfa", default="RGGB", help="Bayer pattern: RGGB, BGGR, GRBG, GBRG")
    p.add_argument("--fps", type=frame_rate, help="frame rate stored in the DNGs (default: the video's, else 24)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the frame_*.dng files --out already holds (all of them, so no stale frame stays)")
    ns = p.parse_args(argv)
    if ns.frames < 1:
        raise ConfigError(f"--frames must be >= 1, got {ns.frames}")
    size = None
    if ns.size:
        try:
            h, w = (int(v) for v in ns.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size wants HxW, e.g. 1080x1920, got {ns.size!r}") from None
        size = (h, w)
    from .config import parse_enum

    paths = make_dng(ns.input, ns.out, n_frames=ns.frames, ratio=ns.ratio, seed=ns.seed,
                     cfa=parse_enum(CFA, ns.cfa, "--cfa"), size=size, fps=ns.fps, overwrite=ns.overwrite)
    print(f"wrote {frames_text(len(paths), 'DNG')} to {ns.out}")
    if ns.input is not None and ns.input.suffix.lower() not in IMAGE_SUFFIXES:
        # A video's sound beside its frames, as a camera leaves it: the frames span len(paths) frames of the
        # video's own time, whatever rate the DNGs are tagged with.
        wav = ns.out / f"{ns.out.resolve().name}.wav"
        if write_video_sound(ns.input, wav, len(paths) / (video_fps(ns.input) or ns.fps or 24.0)):
            print(f"wrote the sound of those frames to {wav}")
    return 0
