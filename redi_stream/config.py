"""Run configuration: frozen dataclasses and StrEnums, validated on construction.

Built from argparse in exactly one place (:func:`redi_stream.cli.build_run_config`); nothing below the CLI reads
``sys.argv`` or the environment.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .capture.headerless import HeaderlessParams, canonical_dtype
from .errors import ConfigError
from .frames import CFA
from .stream.pipeline import OnError  # the pipeline owns the policy; config only validates the choice
from .stream.sinks import (CRF_CODECS, IMAGE_SUFFIXES, VIDEO_PIX_FMTS, check_container_codec, crf_max, default_codec,
                           default_pix_fmt, is_video_file, is_video_target, pix_fmt_bits)


def _choices(enum_cls: type[enum.Enum]) -> str:
    return ", ".join(str(m.value) for m in enum_cls)


def parse_enum(enum_cls: type[enum.StrEnum], value: str, what: str):
    """``enum_cls(value)`` with a ConfigError that lists the valid choices."""
    try:
        return enum_cls(str(value).lower() if enum_cls is not CFA else str(value).upper())
    except ValueError:
        raise ConfigError(f"invalid {what} {value!r}; valid: {_choices(enum_cls)}") from None


class ModelKind(enum.StrEnum):
    REDI = "redi"
    CLASSIC = "classic"


class Device(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class Precision(enum.StrEnum):
    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class CudaNet(enum.StrEnum):
    """How the network runs on a GPU (``docs/PERF_NOTES.md`` has each one's time)."""

    FAST = "fast"  # FastRediNet (the NHWC rewrite), one stream: the fastest measured
    STREAMS = "streams"  # the spec forward, HSE/MSE/LSE on three CUDA streams
    SEQUENTIAL = "sequential"  # the spec forward, one stream


class ImageFormat(enum.StrEnum):
    PNG = "png"
    TIFF = "tiff"
    JPEG = "jpeg"  # 8-bit only


@dataclass(frozen=True)
class RawLayout:
    """How to read headerless ``.raw`` / ``.npy`` frames or a camera that reports nothing about its sensor."""

    width: int | None = None
    height: int | None = None
    cfa: CFA | None = None
    black: float | None = None
    white: float | None = None
    dtype: str = "<u2"

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"--raw-{name} must be positive, got {v}")
        if self.black is not None and self.white is not None and self.white <= self.black:
            raise ConfigError(f"--white ({self.white}) must exceed --black ({self.black})")
        object.__setattr__(self, "dtype", canonical_dtype(self.dtype, "--raw-dtype"))

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.width, self.height, self.cfa, self.black, self.white))

    def headerless_params(self) -> HeaderlessParams | None:
        """These values as the capture side's :class:`HeaderlessParams`, or None when none was given (files then
        use their sidecars and headers alone)."""
        if not self.given:
            return None
        return HeaderlessParams(
            width=self.width, height=self.height, cfa=self.cfa or CFA.RGGB, black=self.black or 0.0,
            white=self.white, dtype=self.dtype,  # None: 2**bits - 1 of the stored type (255 for u1), or normalised
        )


def default_decode_workers(cpu_count: int | None = None) -> int:
    """Raw decoders for a file source when ``--decode-workers`` is not given: half the cores, at least 2, at most 8.

    A compressed (lossless JPEG) CinemaDNG frame takes LibRaw ~40 ms at 1080p and ~170 ms at 4K on one core, and
    LibRaw runs without the GIL (4K: 175 ms per frame on one worker, 80 ms on two, 2-core Intel machine), so a
    GPU machine's spare cores keep such a clip in real time. On 2 cores this is 2, as it always was.
    """
    n = cpu_count if cpu_count is not None else (os.cpu_count() or 2)
    return max(2, min(8, n // 2))


@dataclass(frozen=True)
class EnhanceConfig:
    """How frames are enhanced: the model, where it runs, and the amplification. A :class:`RunConfig` is one of
    these plus its input and output, and this is all that :class:`redi_stream.Enhancer` needs (and what
    :func:`redi_stream.app.build_enhancer` reads). Messages name the command-line option.

    ``bits_out``: 8 (video, preview) or 16 (16-bit frames, 10-bit video) bits per output sample.
    """

    model: ModelKind = ModelKind.REDI
    weights: Path | None = None
    device: Device = Device.AUTO
    precision: Precision = Precision.AUTO
    cuda_net: CudaNet = CudaNet.FAST
    cuda_graph: bool = True
    gain: float | None = None
    gain_multiplier: float | None = None
    gain_smoothing_frames: float = 8.0
    temporal_denoise_frames: float = 0.0
    hot_pixels: bool = False
    denoise: bool = False
    tile: tuple[int, int] | None = None
    bits_out: int = 8

    def __post_init__(self) -> None:
        if self.gain is not None and not (0 < self.gain <= 10000):
            raise ConfigError(f"--gain must be in (0, 10000], got {self.gain}")
        if self.gain_multiplier is not None and not self.gain_multiplier > 0:
            raise ConfigError(f"--gain-multiplier must be > 0, got {self.gain_multiplier}")
        if not self.gain_smoothing_frames >= 0:
            raise ConfigError(f"--gain-smoothing must be >= 0 frames, got {self.gain_smoothing_frames}")
        t = self.temporal_denoise_frames
        if not (t == 0 or (math.isfinite(t) and t >= 1)):
            raise ConfigError(f"--temporal-denoise must be 0 (off) or >= 1 frames, got {t}")
        if self.tile is not None and any(t <= 0 or t % 32 for t in self.tile):
            raise ConfigError(f"--tile sizes must be positive multiples of 32, got {self.tile}")
        if self.model is ModelKind.CLASSIC and self.weights is not None:
            raise ConfigError("--weights applies to --model redi only")
        if self.precision in (Precision.FP16,) and self.device is Device.CPU:
            raise ConfigError("--precision fp16 needs --device cuda; valid on the CPU: fp32, bf16")
        if self.bits_out not in (8, 16):
            raise ConfigError(f"output bits must be 8 or 16, got {self.bits_out}")


@dataclass(frozen=True)
class RunConfig(EnhanceConfig):
    """Everything one ``redi-stream`` run needs, validated: the enhancement (the fields of :class:`EnhanceConfig`,
    with ``bits_out`` following the output) and the input and output below."""

    bits_out: int = field(init=False, default=8)  # 16 for 16-bit frames and 10-bit video
    source: str | tuple[str, ...] | None = None  # a path or glob, or several paths (a shell's expansion)
    camera: str | None = None
    # One output or several (each str keeps a trailing "/": a folder of frames even when named x.mp4/).
    out: str | Path | Sequence[str | Path] | None = None
    fps: float | None = None
    codec: str | None = None  # None: the container's default (stream.sinks.default_codec)
    crf: int | None = None  # None: stream.sinks.DEFAULT_CRF for the encoders --crf sets (CRF_CODECS)
    qp: int | None = None
    preset: str = "ultrafast"
    pix_fmt: str | None = None  # None: each encoder's default (stream.sinks.default_pix_fmt)
    image_format: ImageFormat = ImageFormat.PNG
    bits: int = 16
    on_error: OnError = OnError.STOP
    decode_workers: int | None = None  # None: default_decode_workers()
    raw: RawLayout = RawLayout()
    progress: bool = True
    preview: bool | None = None  # None: a window for cameras (when a display exists), none for files
    max_frames: int | None = None
    start: int = 0
    fourcc: str | None = None
    reconnect_s: float = 10.0
    audio: str | None = None  # None: a frame folder's one sound file; "none": no sound; else a sound file
    segment_s: float | None = None  # cut video files into files of about this many seconds
    stills: bool = False  # the files are separate photos: each its own gain, each image named after its file
    follow_s: float | None = None  # keep reading files arriving in the folder until none for this long
    outs: tuple[str, ...] = field(init=False, default=())  # ``out`` as a tuple of targets, in the order given

    def __post_init__(self) -> None:
        out = self.out
        outs = () if out is None else (out,) if isinstance(out, (str, os.PathLike)) else tuple(out)
        object.__setattr__(self, "outs", tuple(os.fspath(o) for o in outs))
        if (self.source is None) == (self.camera is None):
            raise ConfigError("give exactly one input: a SOURCE path/glob or --camera INDEX|PATH|URL")
        if self.camera is not None and not str(self.camera).strip():
            raise ConfigError("--camera needs an index (0), a device path (/dev/video0), a URL, a video file or "
                              "fake:720p30")
        if self.camera is None and (self.fourcc is not None or self.reconnect_s != 10.0):
            raise ConfigError("--fourcc and --reconnect apply to --camera only")
        if self.camera is not None and self.decode_workers is not None:
            raise ConfigError("--decode-workers applies to file sources; a camera is read by one thread of its own")
        if self.fourcc is not None and not (1 <= len(self.fourcc) <= 4 and self.fourcc.isascii()
                                            and self.fourcc.isprintable()):
            raise ConfigError(f"--fourcc wants a 1-4 character code such as pRAA, RG12, Y16, MJPG; got {self.fourcc!r}")
        if not 0 <= self.reconnect_s <= 3600:
            raise ConfigError(f"--reconnect must be in 0..3600 seconds, got {self.reconnect_s}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--frames must be >= 1, got {self.max_frames}")
        if self.start < 0:
            raise ConfigError(f"--start must be >= 0, got {self.start}")
        if self.start and self.camera is not None:
            raise ConfigError("--start applies to file sources; a camera starts now")
        if self.camera is not None and (self.raw.width is None) != (self.raw.height is None):
            raise ConfigError("--raw-width and --raw-height: give both (the camera resolution to ask for) or neither")
        if self.source is not None and not self.outs and not self.preview:
            raise ConfigError("--out FILE.mp4|DIR/ is required for file sources (or use --preview)")
        twice = sorted({o for o in self.outs if self.outs.count(o) > 1})
        if twice:
            raise ConfigError(f"--out {twice[0]} is given twice")
        if self.fps is not None and not (0 < self.fps <= 1000):
            raise ConfigError(f"--fps must be in (0, 1000], got {self.fps}")
        codecs = [self.codec_for(o) for o in self.video_outs] or [None]
        for codec in codecs if self.crf is not None else ():
            top = crf_max(codec) if codec else 51
            if not 0 <= self.crf <= top:
                raise ConfigError(f"--crf must be in 0..{top}" + (f" for {codec}" if top != 51 else "")
                                  + f", got {self.crf}")
            if codec is not None and codec not in CRF_CODECS:
                raise ConfigError(f"--crf does not apply to {codec} (its profile sets the quality); it applies to "
                                  f"{', '.join(CRF_CODECS)}")
        if self.qp is not None:
            if any(c not in ("libx264", "libx265") for c in codecs):
                raise ConfigError("--qp applies to libx264 and libx265 video output; other encoders take --crf")
            if not 0 <= self.qp <= 51:
                raise ConfigError(f"--qp must be in 0..51, got {self.qp}")
        if self.bits not in (8, 16):
            raise ConfigError(f"--bits must be 8 or 16, got {self.bits}")
        if self.pix_fmt is not None and self.pix_fmt not in VIDEO_PIX_FMTS:
            raise ConfigError(f"invalid --pix-fmt {self.pix_fmt!r}; valid: {', '.join(VIDEO_PIX_FMTS)}")
        if self.pix_fmt is not None and not self.video_outs:
            raise ConfigError("--pix-fmt applies to video output (.mp4, .mkv, .mov, .webm); frame sequences take "
                              "--bits")
        for o in self.video_outs:
            check_container_codec(o, self.codec_for(o))  # e.g. VP9 in MPEG-TS, H.264 in WebM
        if self.audio not in (None, "none") and (self.camera is not None or not self.video_outs):
            raise ConfigError("--audio applies to file sources written as video (.mp4, .mkv, .mov, .webm, .ts, -, "
                              "udp://...)")
        if self.segment_s is not None:
            if not (math.isfinite(self.segment_s) and self.segment_s > 0):
                raise ConfigError(f"--segment must be a positive length, got {self.segment_s:g} s")
            if not any(is_video_file(o) for o in self.outs):
                raise ConfigError("--segment cuts video files (.mp4, .mkv, .mov, .webm, .ts); give --out FILE.mp4")
        if self.follow_s is not None:
            if isinstance(self.source, tuple):
                raise ConfigError("--follow watches one folder or glob, and got a list of files (a shell expands an "
                                  "unquoted glob): give the folder, or quote the glob ('frames/*.dng')")
            if not isinstance(self.source, str) or self.source == "demo":
                raise ConfigError("--follow watches one folder or glob ('frames/' or 'frames/*.dng'); a camera, the "
                                  "demo or a list of files does not grow")
            if not (0 < self.follow_s <= 86400):
                raise ConfigError(f"--follow must wait between 0 and 24 h for a new frame, got {self.follow_s:g} s")
        if self.stills:
            if self.camera is not None:
                raise ConfigError("--stills is for a folder of photos; a camera films")
            if self.video_outs or not self.outs:
                raise ConfigError("--stills writes one image per photo, named after it: give --out DIR/ (a video of "
                                  "stills is a sequence: leave --stills out)")
            if self.temporal_denoise_frames:
                raise ConfigError("--temporal-denoise averages frames of one scene; --stills are separate photos")
            # Each photo gets its own amplification: no smoothing across unrelated (or bracketed) shots.
            object.__setattr__(self, "gain_smoothing_frames", 0.0)
        if self.decode_workers is not None and not 1 <= self.decode_workers <= 64:
            raise ConfigError(f"--decode-workers must be in 1..64, got {self.decode_workers}")
        object.__setattr__(self, "bits_out", 16 if self._frames16 else 8)
        super().__post_init__()  # the enhancement's own checks

    @property
    def _frames16(self) -> bool:
        """16-bit enhanced frames: for 16-bit image sequences and for 10-bit video (swscale reduces them); with
        several outputs, when any one of them takes 16 bits."""
        return any(pix_fmt_bits(self.pix_fmt_for(o)) > 8 if is_video_target(o) else self._image_bits(o) == 16
                   for o in self.outs if o != "null")  # --out null keeps nothing: 8 bits, as a preview

    def _image_bits(self, target: str) -> int:
        """Bits per sample of a frame output: ``--bits``, but 8 for JPEG (the format its suffix names, as
        ``stream.open_sink`` reads it, else ``--format``)."""
        fmt = IMAGE_SUFFIXES.get(Path(target).suffix.lower(), self.image_format.value)
        return 8 if fmt == ImageFormat.JPEG.value else self.bits

    def codec_for(self, target: str) -> str:
        """The encoder of video output ``target``: ``--codec``, else the container's default."""
        return self.codec or default_codec(target)

    @property
    def video_outs(self) -> tuple[str, ...]:
        """The outputs that are video (files or streams, as ``stream.open_sink`` decides it), not frames."""
        return tuple(o for o in self.outs if is_video_target(o))

    def pix_fmt_for(self, target: str) -> str:
        """The pixel format of video output ``target``: ``--pix-fmt``, else its encoder's default."""
        return self.pix_fmt or default_pix_fmt(self.codec_for(target))
