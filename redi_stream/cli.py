"""The ``redi-stream`` command.

    redi-stream SOURCE --out out.mp4         a folder / glob / file of raw frames -> H.264 MP4 (or DIR/ -> PNG16)
    redi-stream --camera 0                   live camera -> preview window with an fps overlay
    redi-stream --camera fake:720p30         a synthetic dark Bayer sensor (demos, latency benchmarks)
    redi-stream demo [--out demo.mp4]        the embedded demo clip, no download
    redi-stream doctor | make-dng | train | eval | bench

argparse lives here and only here; :func:`build_run_config` turns its namespace into a validated
:class:`~redi_stream.config.RunConfig`. Every failure the user can cause ends as one line on stderr and a non-zero
exit code (2 bad usage, 1 failed run, 128 + signal number when interrupted: 130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .argparser import EXIT_USAGE, ArgumentParser, duration, frame_rate
from .config import (
    CudaNet,
    Device,
    EnhanceConfig,
    ImageFormat,
    ModelKind,
    OnError,
    Precision,
    RawLayout,
    RunConfig,
    parse_enum,
)
from .errors import ConfigError, Interrupted, RediStreamError
from .frames import CFA
from .glibc import limit_arenas

log = logging.getLogger("redi_stream")

SUBCOMMANDS = ("demo", "doctor", "make-dng", "train", "eval", "bench")

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130  # EXIT_USAGE (2) comes with the parser


def _tile(text: str) -> tuple[int, int]:
    try:
        h, _, w = text.lower().partition("x")
        return int(h), int(w or h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tile wants HxW (e.g. 1024x1024), got {text!r}") from None


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the main run and ``demo``."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default="redi", help="redi (the network, default) or classic (no network baseline)")
    g.add_argument("--weights", type=Path, help="checkpoint: ours or the official {'model': state_dict} format")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--precision", default="auto", help="auto, fp32, fp16 (CUDA) or bf16")
    g.add_argument("--cuda-net", default="fast", metavar="FORM",
                   help="CUDA: fast (the rewritten network, default), streams (the spec forward, its three branches on "
                        "three CUDA streams) or sequential (the spec forward, one stream)")
    g.add_argument("--sequential", dest="cuda_net", action="store_const", const="sequential",
                   help="same as --cuda-net sequential")
    g.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false", help="do not capture CUDA graphs")
    g.add_argument("--tile", type=_tile, help="process in overlapping HxW tiles (multiples of 32) to save memory")
    g.add_argument("--denoise", action="store_true", help="classic model: bilateral (edge-preserving) denoise")
    g.add_argument("--hot-pixels", action="store_true",
                   help="replace isolated hot pixels (a raw sample far above all 16 neighbours) from their own colour "
                        "before amplifying: sensors with hot pixels; a star on a single pixel would go too")
    g.add_argument("--temporal-denoise", type=float, default=0.0, metavar="FRAMES",
                   help="still cameras: average each pixel over about FRAMES frames where the scene does not move "
                        "(motion-adaptive; network only; 0 = off, the default)")
    g = p.add_argument_group("amplification")
    g.add_argument("--gain", type=float, help="fixed amplification, all of it (overrides the automatic amplifier)")
    g.add_argument("--gain-multiplier", type=float,
                   help="multiplies the gain (default: for the automatic gain the weights' own, 1 for ours, 5 for the "
                        "official; 1 with --gain)")
    g.add_argument("--gain-smoothing", type=float, default=None, metavar="FRAMES",
                   help="time constant of the gain's temporal smoothing in frames; 0 = per-frame gain (default 8)")
    g = p.add_argument_group("output")
    g.add_argument("--out", action="append",
                   help="FILE.mp4|.mkv|.mov|.webm|.ts (video), DIR/ (16-bit PNG frames), - (MPEG-TS on standard "
                        "output) or udp://HOST:PORT, tcp://..., rtmp://..., rtsp://... (a live stream); give it again "
                        "to write several from one pass of the network, e.g. --out proxy.mp4 --out frames/")
    g.add_argument("--fps", type=frame_rate, help="output frame rate, e.g. 25, 29.97 or 30000/1001 (default: the "
                                                  "source's); with --camera also the rate asked of the camera")
    g.add_argument("--codec", help="video encoder (default libx264; libvpx-vp9 for .webm), e.g. libx265, or for "
                                   "editing in .mov: prores (ProRes 422 HQ; prores_ks: half the size, ~6x slower) or "
                                   "dnxhd (DNxHR HQX)")
    g.add_argument("--crf", type=int, default=None,
                   help="constant quality, lower is better (default 18): crf for x264 and x265 (0..51), VP9 and "
                        "SVT-AV1 (0..63), cq for NVENC, a fixed quantiser (crf / 6) for mpeg4")
    g.add_argument("--qp", type=int,
                   help="libx264/libx265: a constant quantiser 0..51 instead of --crf; cheaper to encode (no "
                        "per-frame analysis), the same quantiser whatever the content")
    g.add_argument("--preset", default="ultrafast",
                   help="x264/x265 preset (default ultrafast, real time on small CPUs; e.g. medium for smaller files)")
    g.add_argument("--pix-fmt", default=None,
                   help="video pixel format: yuv420p (default, plays everywhere), yuv444p, or 10-bit yuv420p10le / "
                        "yuv444p10le (no banding in amplified shadows; libx264 High 10, libx265 Main 10); "
                        "ProRes and DNxHR default to yuv422p10le")
    g.add_argument("--format", dest="image_format", default="png",
                   help="frame-sequence format: png, tiff or jpeg (8-bit, quality 95)")
    g.add_argument("--bits", type=int, default=16, help="frame-sequence bit depth: 8 or 16 (default 16)")
    g.add_argument("--stills", action="store_true",
                   help="the files are separate photos, not a video: each gets its own amplification (no smoothing "
                        "across them) and its image is named after it (DSC01234.ARW -> out/DSC01234.png)")
    g.add_argument("--preview", dest="preview", action="store_const", const=True, default=None,
                   help="show a live preview window (default for --camera)")
    g.add_argument("--no-preview", dest="preview", action="store_const", const=False,
                   help="no window (headless); --camera runs until Ctrl-C or --frames")
    g.add_argument("--frames", dest="max_frames", type=int, metavar="N",
                   help="stop after N source frames (default: the whole source; a camera runs until stopped)")
    g.add_argument("--audio", metavar="FILE|none",
                   help="sound to carry into the video (AAC; Opus in .webm), its time 0 at the source's frame 0 "
                        "(default: the .wav beside the frames, when a folder holds exactly one; none: no sound)")
    g.add_argument("--segment", type=duration, metavar="LENGTH",
                   help="cut video files into files of LENGTH (600, 10m, 1h) for long recordings: rec.mp4 is written "
                        "as rec_000.mp4, rec_001.mp4, ..., or under each file's start time when the name holds "
                        "strftime fields (rec_%%Y%%m%%d_%%H%%M%%S.mp4)")
    g.add_argument("--follow", type=duration, nargs="?", const=10.0, metavar="SECONDS",
                   help="the folder is still being written (a camera or capture program saving frames): take new "
                        "files as they arrive, and end SECONDS (default 10) after the last one (or on Ctrl-C)")
    g.add_argument("--start", type=int, default=0, metavar="N",
                   help="file sources: begin at frame N (0-based; frames keep their numbers, so --out DIR/ resumes "
                        "a sequence's names)")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument("-q", "--quiet", action="store_true", help="print only errors")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="redi-stream",
        description="Real-time enhancement of extremely dark RAW video (REDI network).",
        epilog="Other commands: " + ", ".join(SUBCOMMANDS) + " (see 'redi-stream COMMAND --help').",
    )
    p.add_argument("source", nargs="*", help="folder, glob ('clip/*.dng'), file or files of raw frames (DNG, ARW, "
                                              "NEF, CR2, ..., .npy frames or (N, H, W) stacks, headerless .raw); "
                                              "several files (a shell's clip/*.dng) are taken in natural order")
    p.add_argument("--camera", help="live camera: index (0), /dev/videoN, URL, a video file played as a camera, "
                                    "fake[:720p30|:WxH@FPS][:FOURCC|:bgr] (synthetic dark Bayer sensor), or - "
                                    "(headerless raw frames piped in: --raw-width, --raw-height, --fourcc or --cfa)")
    p.add_argument("--version", action="version", version=f"redi-stream {__version__}")
    add_run_options(p)
    g = p.add_argument_group("input")
    g.add_argument("--on-error", default="stop", help="bad frame in a sequence: stop (default) or skip")
    g.add_argument("--decode-workers", type=int, default=None,
                   help="parallel raw decoders for files (default: half the cores, 2 to 8)")
    g.add_argument("--raw-width", type=int, help="headerless .raw: width in pixels; camera: width to ask for")
    g.add_argument("--raw-height", type=int, help="headerless .raw: height in pixels; camera: height to ask for")
    g.add_argument("--raw-dtype", default="<u2",
                   help="headerless .raw sample type: <u2 (uint16, default), >u2 (big-endian), u1 (uint8)")
    g.add_argument("--cfa", help="Bayer pattern when the input does not say: RGGB, BGGR, GRBG, GBRG")
    g.add_argument("--black", type=float, help="black level in DN when the input does not say")
    g.add_argument("--white", type=float, help="white level in DN when the input does not say")
    g = p.add_argument_group("camera")
    g.add_argument("--fourcc", help="camera pixel format to ask for (default: the best raw Bayer format the device "
                                    "offers, else its RGB): e.g. pRAA (RAW10 packed), RG12, Y16 (with --cfa), MJPG")
    g.add_argument("--reconnect", dest="reconnect_s", type=float, default=10.0, metavar="SECONDS",
                   help="camera lost mid-stream: keep trying to reopen it this long, then stop with the recording "
                        "finalised (default 10; 0 = stop at once)")
    return p


def _source(value) -> str | tuple[str, ...] | None:
    """The positional SOURCE: nothing, one path or glob, or several paths (a shell's expansion of a glob)."""
    if value is None or isinstance(value, str):
        return value
    return None if not value else value[0] if len(value) == 1 else tuple(value)


def build_run_config(ns: argparse.Namespace) -> RunConfig:
    """The one place argparse values become a RunConfig."""
    raw = RawLayout(
        width=getattr(ns, "raw_width", None),
        height=getattr(ns, "raw_height", None),
        cfa=parse_enum(CFA, ns.cfa, "--cfa") if getattr(ns, "cfa", None) else None,
        black=getattr(ns, "black", None),
        white=getattr(ns, "white", None),
        dtype=getattr(ns, "raw_dtype", "<u2"),
    )
    if getattr(ns, "stills", False) and ns.gain_smoothing:
        raise ConfigError("--gain-smoothing smooths the gain over a video's frames; --stills gives each photo its own")
    return RunConfig(
        source=_source(getattr(ns, "source", None)),
        camera=getattr(ns, "camera", None),
        out=ns.out,
        model=parse_enum(ModelKind, ns.model, "--model"),
        weights=ns.weights,
        device=parse_enum(Device, ns.device, "--device"),
        precision=parse_enum(Precision, ns.precision, "--precision"),
        cuda_net=parse_enum(CudaNet, ns.cuda_net, "--cuda-net"),
        cuda_graph=ns.cuda_graph,
        gain=ns.gain,
        gain_multiplier=ns.gain_multiplier,
        gain_smoothing_frames=EnhanceConfig.gain_smoothing_frames if ns.gain_smoothing is None else ns.gain_smoothing,
        temporal_denoise_frames=ns.temporal_denoise,
        hot_pixels=ns.hot_pixels,
        fps=ns.fps,
        codec=ns.codec,
        crf=ns.crf,
        qp=ns.qp,
        preset=ns.preset,
        pix_fmt=getattr(ns, "pix_fmt", None),
        image_format=parse_enum(ImageFormat, ns.image_format, "--format"),
        bits=ns.bits,
        on_error=parse_enum(OnError, getattr(ns, "on_error", "stop"), "--on-error"),
        decode_workers=getattr(ns, "decode_workers", None),
        audio=getattr(ns, "audio", None),
        segment_s=getattr(ns, "segment", None),
        stills=getattr(ns, "stills", False),
        follow_s=getattr(ns, "follow", None),
        denoise=ns.denoise,
        tile=ns.tile,
        raw=raw,
        progress=ns.progress,
        preview=ns.preview,
        max_frames=getattr(ns, "max_frames", None),
        start=getattr(ns, "start", 0),
        fourcc=getattr(ns, "fourcc", None),
        reconnect_s=getattr(ns, "reconnect_s", 10.0),
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (tests and tqdm replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _setup_logging(quiet: bool, level: int = logging.INFO) -> None:
    """``redi-stream: MESSAGE`` lines on stderr from ``level`` up (errors only with ``quiet``)."""
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("redi-stream: %(message)s"))
    logging.basicConfig(level=logging.ERROR if quiet else level, handlers=[handler], force=True)


def _fail(message: str, code: int) -> int:
    print(f"redi-stream: error: {message}", file=sys.stderr)
    return code


def _guarded(fn, *args) -> int:
    """Run a command; every expected failure becomes one line on stderr and an exit code."""
    try:
        return fn(*args) or EXIT_OK
    except Interrupted as exc:
        print(f"redi-stream: {exc}", file=sys.stderr)
        # 128 + signal number, as shells report it: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
        return 128 + int(getattr(exc, "signum", EXIT_INTERRUPTED - 128))
    except KeyboardInterrupt:
        print("redi-stream: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except RediStreamError as exc:
        return _fail(_one_line(exc), EXIT_FAILED)
    except OSError as exc:  # a path a subcommand cannot use (train --out-dir in a read-only place, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}", EXIT_FAILED)


def _one_line(exc: BaseException) -> str:
    """'<stage> failed: <cause>' on one line, following __cause__ to the root reason."""
    parts = [str(exc)]
    cause = exc.__cause__
    while cause is not None:
        # Some libraries' errors carry bytes (rawpy: b'Input/output error'): their text, not their repr.
        arg = cause.args[0] if len(cause.args) == 1 else None
        text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(cause) or type(cause).__name__
        # An error whose reason ("No such file or directory") the message already gives adds only its errno form.
        strerror = getattr(cause, "strerror", None)  # OSError and PyAV's errors (not all of them OSErrors)
        told = isinstance(strerror, str) and bool(strerror) and strerror in parts[-1]
        if not told and text not in parts[-1]:
            parts.append(text)
        cause = cause.__cause__
    return ": ".join(p.replace("\n", " ") for p in parts)


def main(argv: list[str] | None = None) -> int:
    # Before any thread allocates: later the arena limit no longer applies (redi_stream.glibc).
    limit_arenas(1)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        return _subcommand(argv[0], argv[1:])
    parser = build_parser()
    ns = parser.parse_args(argv)
    _setup_logging(ns.quiet)
    try:
        cfg = build_run_config(ns)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    from .app import run

    return _guarded(run, cfg)


def _subcommand(name: str, argv: list[str]) -> int:
    # Tools print their own results; the library's warnings (a video shorter than asked, a metadata fallback)
    # still come as 'redi-stream: ...' lines. demo, a run, sets its own level below.
    _setup_logging(False, logging.WARNING)
    if name == "doctor":
        from .doctor import main as doctor_main

        return doctor_main(argv)
    if name == "demo":
        p = ArgumentParser(prog="redi-stream demo",
                           description="Enhance the embedded demo clip (synthetic dark raw frames made "
                                       "from a photo shipped with scikit-image; no download).")
        add_run_options(p)
        ns = p.parse_args(argv)
        ns.out = ns.out or ["demo.mp4"]
        _setup_logging(ns.quiet)
        ns.source = "demo"
        try:
            cfg = build_run_config(ns)
        except ConfigError as exc:
            return _fail(str(exc), EXIT_USAGE)
        from .app import run_demo

        return _guarded(run_demo, cfg)
    if name == "make-dng":
        from .app import make_dng_main

        return _guarded(make_dng_main, argv)
    if name == "train":
        from .model.train import main as train_main

        return _guarded(train_main, argv)
    if name == "eval":
        from .evaluate import main as eval_main

        return _guarded(eval_main, argv)
    if name == "bench":
        from .bench import main as bench_main

        return _guarded(bench_main, argv)
    raise AssertionError(name)


if __name__ == "__main__":
    sys.exit(main())
