"""Write Bayer frames as DNG (pidng) and synthesise dark DNG sequences: the engine of the ``make-dng`` command.

Files are uncompressed 16-bit single-tile DNGs (pidng's 10/12/14-bit packers are not bit-exact, so they are not
used). Each file is written to a temporary name and renamed, so an interrupted run never leaves a half-written
frame under a frame name.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from redi_stream.errors import CaptureError, ConfigError, SinkError
from redi_stream.frames import CFA, RawMeta

from .colour import cam_to_srgb_to_xyz_to_cam
from .files import TIMECODE_RE
from .synthetic import (
    DEMO_SIZE,
    SYNTHETIC_WB_GAINS,
    DarkRawParams,
    SyntheticSource,
    demo_image,
    image_to_float,
    mosaic_planes,
    resize_cover,
    srgb_to_camera_planes,
)

FRAME_PATTERN = "frame_{:06d}.dng"
log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(".png .jpg .jpeg .tif .tiff .bmp .webp .ppm .pgm .pnm .jp2 .exr .hdr".split())
_MATRIX_DENOMINATOR = 1_000_000
_D65 = 21  # EXIF LightSource / DNG CalibrationIlluminant code
_CFA_CODES = {"R": 0, "G": 1, "B": 2}
_LIBRAW_MIN_SIDE = 22  # LibRaw's identify() rejects anything narrower or shorter as "not a raw"


def _rational(value: float, denominator: int = _MATRIX_DENOMINATOR) -> list[int]:
    return [int(round(value * denominator)), denominator]


def smpte_bytes(timecode: str) -> list[int]:
    """The 8 bytes of a CinemaDNG TimeCodes entry (SMPTE 12M: BCD frames, seconds, minutes, hours, then 4 bytes of
    user bits, zero) for ``HH:MM:SS:FF`` (``;`` before the frames: drop-frame).

    Raises:
        ConfigError: not such a time code.
    """
    m = TIMECODE_RE.fullmatch(timecode)
    if m is None:
        raise ConfigError(f"invalid time code {timecode!r}; give HH:MM:SS:FF")
    hours, minutes, seconds, frames = (int(m[k]) for k in (1, 2, 3, 5))
    bcd = [(v // 10) << 4 | v % 10 for v in (frames, seconds, minutes, hours)]
    bcd[0] |= 0x40 if m[4] == ";" else 0
    return [*bcd, 0, 0, 0, 0]


def _dng_tags(height: int, width: int, meta: RawMeta, fps: float | None, timecode: str | None = None) -> Any:
    from pidng.core import DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, Orientation, PhotometricInterpretation

    t = DNGTags()
    t.set(Tag.ImageWidth, width)
    t.set(Tag.ImageLength, height)
    t.set(Tag.TileWidth, width)
    t.set(Tag.TileLength, height)
    t.set(Tag.Orientation, Orientation.Horizontal)
    t.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    t.set(Tag.SamplesPerPixel, 1)
    t.set(Tag.BitsPerSample, 16)
    t.set(Tag.CFARepeatPatternDim, [2, 2])
    t.set(Tag.CFAPattern, [_CFA_CODES[c] for c in meta.cfa.value])
    t.set(Tag.BlackLevelRepeatDim, [2, 2])
    # LibRaw keeps black levels as integers (it truncates a RATIONAL BlackLevel), so write them rounded.
    t.set(Tag.BlackLevel, [int(round(b)) for b in meta.black_level])
    t.set((Tag.WhiteLevel[0], (4, 4)), [int(round(meta.white_level))])  # LONG: any 16-bit white fits
    xyz_to_cam = cam_to_srgb_to_xyz_to_cam(meta.cam_to_srgb)
    t.set(Tag.ColorMatrix1, [_rational(v) for v in xyz_to_cam.ravel()])
    t.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    t.set(Tag.AsShotNeutral, [_rational(1.0 / g) for g in meta.wb_gains])
    model = meta.camera or "unknown camera"
    # Make is ours on purpose: a real maker name would make LibRaw apply that maker's quirks on reading.
    t.set(Tag.Make, "redi-stream")
    t.set(Tag.Model, model)
    t.set(Tag.UniqueCameraModel, f"redi-stream {model}")
    if fps is not None:
        rate = Fraction(fps).limit_denominator(100_000)
        t.set(Tag.FrameRate, [[rate.numerator, rate.denominator]])
    if timecode is not None:
        t.set(Tag.TimeCodes, smpte_bytes(timecode))
    return t


def write_dng(path: str | os.PathLike[str], bayer: np.ndarray, meta: RawMeta, *, fps: float | None = None,
              timecode: str | None = None) -> Path:
    """Write one Bayer frame as an uncompressed 16-bit DNG that LibRaw (and so :class:`RawFileSource`) reads back.

    Tags: CFA pattern (``meta.cfa``), BlackLevel per 2x2 position (BlackLevelRepeatDim 2x2; rounded to whole DN,
    as LibRaw reads only integer black levels), WhiteLevel,
    AsShotNeutral = 1 / ``meta.wb_gains``, ColorMatrix1 (D65) derived from ``meta.cam_to_srgb`` so that reading
    back gives the same matrix to ~1e-6, CinemaDNG FrameRate if ``fps`` is given, Make ``redi-stream`` and Model
    ``meta.camera``.

    Args:
        path: output file (parent must exist); written atomically (temporary file + rename).
        bayer: (H, W) uint16 mosaic in raw DN, H and W >= 22 (LibRaw's minimum).
        meta: its levels, pattern and colour.
        fps: frame rate for the CinemaDNG FrameRate tag, or None.
        timecode: ``HH:MM:SS:FF`` for the CinemaDNG TimeCodes tag, or None.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        ConfigError: ``bayer`` is not a 2-D uint16 array or ``fps`` is not positive.
        SinkError: the file cannot be written.
    """
    from pidng.core import RAW2DNG

    arr = np.asarray(bayer)
    if arr.ndim != 2 or arr.dtype != np.uint16:
        raise ConfigError(f"bayer must be a (H, W) uint16 array, got {arr.dtype} {arr.shape}")
    if min(arr.shape) < _LIBRAW_MIN_SIDE:
        side = _LIBRAW_MIN_SIDE
        raise ConfigError(f"frame {arr.shape} too small: LibRaw reads no raw under {side}x{side}")
    if arr.shape[0] > 65535 or arr.shape[1] > 65535:
        raise ConfigError(f"frame {arr.shape} too large for a single-tile DNG")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"fps must be positive and finite, got {fps!r}")
    out = Path(path)
    tags = _dng_tags(arr.shape[0], arr.shape[1], meta, fps, timecode)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    buf = writer.convert(np.ascontiguousarray(arr))
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(buf)
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SinkError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return out


def _prepare_out_dir(out_dir: str | os.PathLike[str], overwrite: bool) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create folder {out}: {exc.strerror or exc}") from exc
    existing = sorted(out.glob("frame_*.dng"))
    if existing:
        if not overwrite:
            raise SinkError(
                f"{out} already holds {len(existing)} frame_*.dng files; choose an empty folder, or overwrite them "
                "(make-dng --overwrite)"
            )
        # Remove them all, not just the ones we rewrite: stale frames past the new end would join the sequence.
        for p in existing:
            p.unlink()
    return out


def dark_frame_from_srgb(
    srgb: np.ndarray, index: int, params: DarkRawParams, *, size: tuple[int, int] | None = None
) -> np.ndarray:
    """One dark noisy Bayer frame from one sRGB image, made as a static :class:`SyntheticSource` frame.

    Args:
        srgb: (H, W, 3) uint8/uint16/float sRGB.
        index: frame index; noise comes from ``PCG64([params.seed, index])``.
        params: darkening and sensor model.
        size: (H, W) output size (cover-resize and centre crop), default the image's.

    Returns:
        (H, W) uint16.
    """
    img = image_to_float(srgb)
    if size is not None:
        img = resize_cover(img, size)
    bayer = mosaic_planes(srgb_to_camera_planes(img), params.cfa)  # type: ignore[arg-type]
    return params.darken(bayer, index)


def write_dark_dng_sequence(
    frames: SyntheticSource | Iterable[np.ndarray],
    out_dir: str | os.PathLike[str],
    *,
    ratio: float | None = None,
    seed: int | None = None,
    cfa: CFA | str | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write a dark raw DNG sequence ``frame_000000.dng``, ``frame_000001.dng``, ... into ``out_dir``.

    Args:
        frames: a :class:`SyntheticSource` (its frames are written as they are; ``ratio``, ``seed``, ``cfa`` and
            ``size`` must then be None, and ``fps`` defaults to the source's), or an iterable of sRGB images
            (H, W, 3), each darkened and mosaiced like a SyntheticSource frame (defaults: ratio 100, seed 0, RGGB,
            24 fps, the images' own size).
        out_dir: created if missing; if it already holds ``frame_*.dng`` files this fails unless ``overwrite``,
            which deletes all of them first.

    Returns:
        The written paths in order.

    Raises:
        ConfigError: invalid parameters. SinkError: the folder or a file cannot be written.
    """
    if isinstance(frames, SyntheticSource):
        given = [k for k, v in (("ratio", ratio), ("seed", seed), ("cfa", cfa), ("size", size)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} are fixed by the SyntheticSource; set them when building it")
        rate = frames.fps if fps is None else fps
        out = _prepare_out_dir(out_dir, overwrite)
        return [
            write_dng(out / FRAME_PATTERN.format(i), frames.read(i).data, frames.meta, fps=rate)
            for i in range(len(frames))
        ]
    params = DarkRawParams(
        ratio=100.0 if ratio is None else ratio, seed=0 if seed is None else seed, cfa=CFA.RGGB if cfa is None else cfa
    )
    rate = 24.0 if fps is None else fps
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise ConfigError(f"fps must be positive and finite, got {fps!r}")
    meta = params.meta()
    frames = iter(frames)
    first = next(frames, None)  # an unreadable input fails here, before --overwrite deletes the old frames
    out = _prepare_out_dir(out_dir, overwrite)
    paths = []
    for i, srgb in enumerate(itertools.chain(() if first is None else (first,), frames)):
        data = dark_frame_from_srgb(srgb, i, params, size=size)
        paths.append(write_dng(out / FRAME_PATTERN.format(i), data, meta, fps=rate))
    return paths


def read_image_srgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as (H, W, 3) float32 sRGB in [0, 1] (OpenCV; 8- or 16-bit; grey is expanded to RGB).

    Raises:
        CaptureError: missing or unreadable.
    """
    import cv2

    p = Path(path)
    if not p.is_file():
        raise CaptureError(f"no such image: {p}")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise CaptureError(f"cannot read image {p} (OpenCV does not recognise it)")
    return image_to_float(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))


def iter_video_srgb(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Decode a video file's first video stream frame by frame as (H, W, 3) uint8 sRGB (PyAV).

    The container is closed when the iterator is exhausted or closed.

    Raises:
        CaptureError: missing file, not a video, or a decoding error (naming the file).
    """
    import av

    p = Path(path)
    if not p.is_file():
        raise CaptureError(f"no such video: {p}")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError) as exc:
        images = ", ".join(sorted(IMAGE_SUFFIXES))
        raise CaptureError(f"cannot open {p} as a video ({exc.strerror or exc}); images are read by their suffix: "
                           f"{images}") from exc
    with container:
        if not container.streams.video:
            raise CaptureError(f"{p} has no video stream")
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise CaptureError(f"cannot decode video {p}: {exc}") from exc


def video_fps(path: str | os.PathLike[str]) -> float | None:
    """Average frame rate of a video's first video stream, or None if unknown."""
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
    except (av.FFmpegError, OSError):
        return None
    return float(rate) if rate else None


def write_video_sound(video: str | os.PathLike[str], wav: str | os.PathLike[str], seconds: float) -> bool:
    """Write the first ``seconds`` of a video's sound as 16-bit PCM WAV (its own rate; mono or stereo), as a camera
    leaves a ``.wav`` beside its CinemaDNG frames. Returns False (writing nothing) when the video has no sound.

    Raises:
        CaptureError: the sound cannot be decoded or the file written (naming it).
    """
    import wave

    import av

    try:
        container = av.open(str(video))
    except (av.FFmpegError, OSError) as exc:
        raise CaptureError(f"cannot read the sound of {video}: {exc}") from exc
    with container:
        if not container.streams.audio:
            return False
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        channels = 2 if stream.codec_context.channels >= 2 else 1
        resampler = av.AudioResampler(format="s16", layout="stereo" if channels == 2 else "mono", rate=rate)
        left = round(seconds * rate)
        try:
            with wave.open(str(wav), "wb") as w:  # written as it is decoded
                w.setnchannels(channels)
                w.setsampwidth(2)
                w.setframerate(rate)
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        pcm = out.to_ndarray().reshape(-1, channels)[:left]
                        w.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
                        left -= len(pcm)
                    if left <= 0:
                        break
        except av.FFmpegError as exc:
            raise CaptureError(f"cannot read the sound of {video}: {exc}") from exc
        except OSError as exc:
            raise CaptureError(f"cannot write {wav}: {exc.strerror or exc}") from exc
    return True


def make_dng(
    input: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    *,
    n_frames: int = 60,
    ratio: float = 100.0,
    seed: int = 0,
    cfa: CFA | str = CFA.RGGB,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    motion: str = "pan",
    overwrite: bool = False,
) -> list[Path]:
    """The ``make-dng`` command: a dark noisy DNG sequence from an image, a video, or the built-in demo picture.

    Args:
        input: None (the demo picture, at :data:`DEMO_SIZE` unless ``size``), an image file (a window panning over
            it, or static), or a video file (its first ``n_frames`` frames; :func:`write_video_sound` writes the
            sound they span).
        out_dir: output folder (see :func:`write_dark_dng_sequence` for ``overwrite``).
        n_frames: frames to write (a video may have fewer).
        ratio, seed, cfa: darkening, noise seed, Bayer pattern.
        size: (H, W) of the frames; default the input's size.
        fps: FrameRate tag; default the video's rate, else 24.
        motion: ``"pan"`` or ``"static"`` for image inputs.

    Returns:
        The written paths in order.
    """
    if input is None:
        source = SyntheticSource(demo_image(), n_frames=n_frames, size=size or DEMO_SIZE, ratio=ratio, seed=seed,
                                 cfa=cfa, fps=fps or 24.0, motion=motion)  # fmt: skip
        return write_dark_dng_sequence(source, out_dir, overwrite=overwrite)
    path = Path(input)
    if not path.exists():
        raise CaptureError(f"no such file: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        source = SyntheticSource(read_image_srgb(path), n_frames=n_frames, size=size, ratio=ratio, seed=seed,
                                 cfa=cfa, fps=fps or 24.0, motion=motion)  # fmt: skip
        return write_dark_dng_sequence(source, out_dir, overwrite=overwrite)
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 1:
        raise ConfigError(f"n_frames must be a positive integer, got {n_frames!r}")
    frames = iter_video_srgb(path)
    try:
        paths = write_dark_dng_sequence(
            itertools.islice(frames, n_frames), out_dir, ratio=ratio, seed=seed, cfa=cfa,
            fps=fps or video_fps(path) or 24.0, size=size, overwrite=overwrite,
        )  # fmt: skip
    finally:
        frames.close()
    if len(paths) < n_frames:
        log.warning("%s has %d frames: wrote %d of the %d asked", path, len(paths), len(paths), n_frames)
    return paths


__all__ = [
    "FRAME_PATTERN",
    "SYNTHETIC_WB_GAINS",
    "dark_frame_from_srgb",
    "iter_video_srgb",
    "make_dng",
    "read_image_srgb",
    "write_video_sound",
    "write_dark_dng_sequence",
    "write_dng",
]
