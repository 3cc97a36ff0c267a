"""Output sinks: encoded video (PyAV), 16-bit image sequences (OpenCV), and a null sink for benchmarks.

Every sink has the same small protocol, called from one thread at a time (the pipeline's ``redi-encode`` thread
writes; the pipeline's owner thread closes after that thread has stopped)::

    write(frame: EnhancedFrame) -> None     # raises SinkError naming the file
    close() -> None                         # idempotent; finalises the output
    frames_written: int

Construction checks that the output can be written at all (missing directory, a directory where a file should be,
no permission) and raises :class:`~redi_stream.errors.SinkError` *before* any frame is processed.

Video files stay playable when a run ends badly:

* exceptions, Ctrl-C and SIGTERM: the pipeline closes every sink in a ``finally``, which flushes the encoder and
  writes the trailer exactly once;
* hard kills (SIGKILL, power loss, OOM killer): ``.mp4``/``.mov`` are written as *fragmented* MP4
  (``movflags=+frag_keyframe+empty_moov+default_base_moof+negative_cts_offsets``, a fragment at least every second,
  ``flush_packets``), so the file decodes up to the last complete fragment, i.e. all but the last second or so. A
  plain MP4 killed before its trailer has no ``moov`` atom and does not decode at all; ``+faststart`` is worse still
  (it rewrites the file at close). Measured with PyAV: a plain MP4 killed after 70 of 100 frames is unreadable; the
  fragmented one decodes 48 frames (two whole 1-s fragments at 24 fps). Fragmented MP4 plays in
  ffmpeg/VLC/browsers/QuickTime; its header carries no frame count (``stream.frames == 0``), so count by decoding.
  ``fragmented=False`` gives a classic ``+faststart`` file. Matroska (``.mkv``) is cluster-based and survives
  truncation by itself.
* disk full (or any failed write) mid-run: the fragment being written is torn; ``close()`` cuts the file back to
  the end of the last complete fragment (a torn one makes strict decoders fail) and records how many frames the
  file keeps in ``VideoSink.frames_kept`` (logged). At most the last fragment's frames (~1 s) are lost.

Video also goes to a stream instead of a file (:data:`STREAM_SCHEMES`): ``-`` is MPEG-TS on standard output (for
``| ffplay -``, ``| ffmpeg -i - ...``, a GStreamer ``fdsrc``), ``udp://`` and ``tcp://`` URLs carry MPEG-TS, and
``rtmp://`` / ``rtmps://`` FLV, pushed to a server (nginx-rtmp; MediaMTX, which also serves it as RTSP);
``rtsp://`` publishes to an RTSP server (MediaMTX, an NVR's ingest) with ANNOUNCE/RECORD, RTP interleaved on the
RTSP connection (TCP: no packets lost on a busy network; ``?rtsp_transport=udp`` is not offered). ``.ts``
files are MPEG-TS too, which decodes up to the last byte written whatever ends the run. Streams get x264's
``zerolatency`` tuning (no frame threads or look-ahead holding frames back). Like a file, a stream opens at the
first frame (PyAV opens its I/O with the header), so an unreachable address is reported then, naming it.
"""

from __future__ import annotations

import errno
import functools
import glob
import logging
import math
import os
import re
import struct
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..capture.files import TIMECODE_RE
from ..errors import ConfigError, SinkError
from ..frames import EnhancedFrame

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".ts")
#: ``--out -``: the video goes to standard output (MPEG-TS).
STDOUT = "-"
#: Stream outputs by URL scheme, and the container each carries (FFmpeg muxer names).
STREAM_SCHEMES = {"udp": "mpegts", "tcp": "mpegts", "rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp"}
#: The FFmpeg muxer of each video file suffix.
_SUFFIX_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".ts": "mpegts"}
_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
#: The encoders a WebM file may hold (VP8, VP9, AV1); ``.webm`` defaults to the first.
WEBM_CODECS = ("libvpx-vp9", "libvpx", "libsvtav1", "libaom-av1", "librav1e")
#: Pixel formats offered for video output: 8-bit 4:2:0 (plays everywhere), 4:2:2 and 4:4:4, and their 10-bit forms
#: (libx264 High 10 / High 4:4:4, libx265 Main 10), which keep amplified shadows free of 8-bit banding.
VIDEO_PIX_FMTS = ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le")
#: Narrower frames make libx265 (8 and 10 bit, as bundled with PyAV) corrupt memory and abort the process.
X265_MIN_WIDTH = 64
#: The crf of CRF_CODECS when none is asked for (x264's visually lossless end; x264's own default is 23).
DEFAULT_CRF = 18
#: Encoders that --crf sets (each in its own terms, see ``VideoSink._codec_options``); others run FFmpeg's defaults.
CRF_CODECS = ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "h264_nvenc", "hevc_nvenc", "mpeg4")
#: Parts of encoder names that mean a hardware encoder, which opens only with its device and driver present.
_HARDWARE_ENCODERS = ("nvenc", "qsv", "amf", "vaapi", "videotoolbox", "v4l2m2m", "mediacodec", "omx")


def url_scheme(target: str | os.PathLike) -> str | None:
    """The lower-case scheme of ``target`` if it is a URL (``udp://...``), else None."""
    m = _SCHEME_RE.match(os.fspath(target))
    return m.group("scheme").lower() if m else None


def is_video_target(target: str | os.PathLike) -> bool:
    """True when :func:`open_sink` makes a :class:`VideoSink` of ``target``: a video suffix and no trailing slash,
    ``-`` (standard output), or a URL (an unknown scheme is refused there)."""
    s = os.fspath(target)
    if s == STDOUT or url_scheme(s) is not None:
        return True
    return Path(s).suffix.lower() in VIDEO_SUFFIXES and not s.endswith(("/", os.sep))


def is_video_file(target: str | os.PathLike) -> bool:
    """True for a video output that is a file (``--segment`` cuts those), not standard output or a stream URL."""
    s = os.fspath(target)
    return is_video_target(s) and s != STDOUT and url_scheme(s) is None


def container_format(target: str | os.PathLike) -> str | None:
    """The FFmpeg muxer a video target gets: ``mpegts`` for ``-`` and ``.ts``, by scheme for a URL
    (:data:`STREAM_SCHEMES`), else None (FFmpeg picks it from the suffix).

    Raises:
        ConfigError: a URL scheme redi-stream does not write.
    """
    s = os.fspath(target)
    scheme = url_scheme(s)
    if scheme is not None:
        if scheme not in STREAM_SCHEMES:
            raise ConfigError(f"cannot stream to {s}: unsupported scheme {scheme!r}; valid: "
                              f"{', '.join(STREAM_SCHEMES)} (or a file, or - for standard output)")
        return STREAM_SCHEMES[scheme]
    if s == STDOUT or Path(s).suffix.lower() == ".ts":
        return "mpegts"
    return None


def check_container_codec(target: str | os.PathLike, codec: str) -> None:
    """Raise ConfigError when the container of ``target`` cannot hold ``codec``'s video (the message says which
    encoder to use instead, or which file kinds hold it)."""
    s = os.fspath(target)
    fmt = container_format(s)
    muxer = fmt or _SUFFIX_MUXERS.get(Path(s).suffix.lower())
    if muxer is None or muxer_takes(muxer, codec):
        return
    if fmt == "flv":
        raise ConfigError(f"{s}: RTMP (FLV) carries H.264 video, not {codec}; use --codec libx264")
    if fmt == "rtsp":
        raise ConfigError(f"{s}: RTSP here carries H.264 or HEVC video, not {codec}; use --codec libx264 or libx265")
    fits = [suffix for suffix, m in _SUFFIX_MUXERS.items() if muxer_takes(m, codec)]
    if muxer == "webm":
        raise ConfigError(f"{s}: a WebM file holds VP8, VP9 or AV1 video, not {codec}; use --codec libvpx-vp9"
                          + (f", or write {' or '.join(fits)}" if fits else ""))
    if fmt == "mpegts":
        raise ConfigError(f"{s}: MPEG-TS carries H.264 or HEVC video, not {codec}; use --codec libx264 or libx265"
                          + (f", or write {' or '.join(fits)}" if fits and s.lower().endswith(".ts") else ""))
    raise ConfigError(f"{s}: a {Path(s).suffix.lower()} file cannot hold {codec} video; "
                      + (f"write {' or '.join(fits)}" if fits else "use another --codec"))


#: The video each muxer holds, by codec (``Codec.canonical_name``), where FFmpeg's own answer is not the whole story:
#: MPEG-TS and FLV take any stream but players read only these in them (RTSP: the RTP payloads servers and NVRs
#: take), and the mov muxer takes VP8/VP9/AV1 streams then fails to write the file's index at the end.
_MUXER_CODECS = {"mpegts": ("h264", "hevc", "mpeg4", "mpeg2video"), "flv": ("h264",), "rtsp": ("h264", "hevc"),
                 "webm": ("vp8", "vp9", "av1")}
_MUXER_REFUSES = {"mov": ("vp8", "vp9", "av1")}


@functools.lru_cache(maxsize=None)
def muxer_takes(muxer: str, codec: str) -> bool:
    """Whether FFmpeg's ``muxer`` holds video from encoder ``codec``: for the muxers of :data:`_MUXER_CODECS` and
    :data:`_MUXER_REFUSES` by their lists, else the question PyAV asks when the stream is added at the first frame,
    asked now of a container on the null device. True for an unknown encoder, which the sink refuses by name."""
    import av  # heavy optional import at its point of use

    if encoder_pix_fmts(codec) is None:
        return True
    kind = av.codec.Codec(codec, "w").canonical_name  # "h264" for libx264 and h264_nvenc
    if muxer in _MUXER_CODECS:
        return kind in _MUXER_CODECS[muxer]
    if kind in _MUXER_REFUSES.get(muxer, ()):
        return False
    try:
        with av.open(os.devnull, "w", format=muxer) as probe:
            try:
                probe.add_stream(codec, rate=25)
            except ValueError:  # "'mp4' format does not support 'prores_ks' codec"
                return False
    except (av.FFmpegError, OSError):  # no null device to ask on: the first frame's add_stream will say it
        return True
    return True


def default_codec(target: str | os.PathLike) -> str:
    """The encoder a video file gets when none is asked for: VP9 for ``.webm`` (WebM holds nothing else we
    offer), H.264 (libx264) otherwise."""
    s = os.fspath(target)
    return WEBM_CODECS[0] if url_scheme(s) is None and Path(s).suffix.lower() == ".webm" else "libx264"


#: A video's pixel format when none is asked for, best first: 8-bit 4:2:0 (plays everywhere) where the encoder takes it,
#: else the 10-bit 4:2:2 of the mastering codecs (ProRes 422 HQ, DNxHR HQX), then what remains of VIDEO_PIX_FMTS.
_DEFAULT_PIX_FMTS = ("yuv420p", "yuv422p10le", "yuv422p", "yuv444p10le", "yuv444p", "yuv420p10le")
#: DNxHR profile for each pixel format dnxhd takes (DNxHD's profiles fix the frame size and bitrate; DNxHR's do not).
_DNXHR_PROFILES = {"yuv422p": "dnxhr_hq", "yuv422p10le": "dnxhr_hqx", "yuv444p10le": "dnxhr_444"}


@functools.lru_cache(maxsize=None)
def encoder_pix_fmts(codec: str) -> tuple[str, ...] | None:
    """The pixel formats this FFmpeg's encoder ``codec`` takes (empty when it does not say), or None when there is
    no such encoder."""
    import av  # heavy optional import at its point of use

    try:
        encoder = av.codec.Codec(codec, "w")
    except Exception:  # av raises several types for an unknown or decode-only codec
        return None
    return tuple(f.name for f in encoder.video_formats or ())


def default_pix_fmt(codec: str) -> str:
    """The pixel format ``codec`` gets when none is asked for: ``yuv420p`` if the encoder takes it, else the first of
    ``_DEFAULT_PIX_FMTS`` it does take (``prores_ks`` and ``dnxhd``: ``yuv422p10le``)."""
    formats = encoder_pix_fmts(codec)  # None: an unknown encoder, refused by name where the sink opens it
    return next((f for f in _DEFAULT_PIX_FMTS if f in formats), "yuv420p") if formats else "yuv420p"


def crf_max(codec: str) -> int:
    """The largest ``crf`` an encoder takes: 63 on the VP9 and AV1 scales, 51 on x264's (and the others')."""
    return 63 if codec in WEBM_CODECS else 51


def pix_fmt_bits(pix_fmt: str) -> int:
    """Bits per sample of a pixel format of :data:`VIDEO_PIX_FMTS` (8 or 10)."""
    return 10 if pix_fmt.endswith("p10le") else 8


IMAGE_SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg"}
#: Image formats, and the file suffix each is written with.
_IMAGE_EXT = {"png": ".png", "tiff": ".tif", "jpeg": ".jpg"}

# AVCOL_* values (libavutil/pixfmt.h): BT.709 primaries, transfer and matrix; "MPEG" = limited (tv) range.
_BT709 = 1
_RANGE_TV = 1
_FF_QP2LAMBDA = 118  # libavutil/avutil.h: quantiser -> lambda, for global_quality


def _probe_hardware_encoder(av, codec: str) -> None:
    """Open ``codec`` on a small frame now, so a hardware encoder without its device fails before any work.

    Raises:
        SinkError: the encoder cannot start here.
    """
    from fractions import Fraction

    cc = av.CodecContext.create(codec, "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = 256, 256, "yuv420p", Fraction(1, 25)
    try:
        cc.open()
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SinkError(f"encoder {codec} cannot start on this machine (a hardware encoder needs its device and "
                        f"driver: {exc}); use --codec libx264") from exc


_NTSC_BASES = (24, 30, 48, 60, 120, 240)


@runtime_checkable
class Sink(Protocol):
    """What the pipeline's encode stage needs from an output."""

    frames_written: int

    def write(self, frame: EnhancedFrame) -> None: ...

    def close(self) -> None: ...


def fps_to_fraction(fps: float | Fraction | str) -> Fraction:
    """Exact frame rate: NTSC rates (23.976, 29.97, 59.94, ...) become ``N*1000/1001``; others are limited to a
    denominator of 1001. Accepts ``Fraction``, ``"24000/1001"`` or a float.

    Raises:
        ConfigError: not a positive finite rate.
    """
    try:
        f = Fraction(fps) if not isinstance(fps, float) else None
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"invalid frame rate {fps!r}; give e.g. 24, 23.976 or 24000/1001") from None
    if f is None:
        if not np.isfinite(fps):
            raise ConfigError(f"invalid frame rate {fps!r}")
        for base in _NTSC_BASES:
            ntsc = Fraction(base * 1000, 1001)
            if abs(fps - float(ntsc)) < 5e-4 * base:
                return ntsc
        f = Fraction(fps).limit_denominator(1001)
    if f <= 0:
        raise ConfigError(f"frame rate must be positive, got {fps!r}")
    return f


def _io_reason(exc: BaseException) -> str:
    """Why a write failed, for a one-line message; a reader that went away (a closed pipe or connection) in words."""
    if isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.ECONNRESET):
        return f"the reader closed it ({exc.strerror or exc})"
    return str(exc)


def check_writable_file(path: Path) -> None:
    """Raise SinkError unless ``path`` can be created/overwritten as a regular file. Leaves no new file behind."""
    if path.is_dir():
        raise SinkError(f"cannot write {path}: it is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise SinkError(f"cannot write {path}: directory {parent} does not exist")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if not existed:
        try:
            path.unlink()
        except OSError:  # e.g. a device node such as /dev/null behind a symlink: leave it
            pass


def complete_fragments_end(path: Path) -> tuple[int, int]:
    """For a fragmented MP4 (possibly cut short): the byte offset just after its last complete ``moof`` + ``mdat``
    pair (or after the header boxes when there is none), and the number of video samples (frames) those fragments
    hold.

    Walks the top-level ISO-BMFF boxes only; ``ftyp``/``moov`` (and any other complete box before the first
    fragment) are kept, a complete trailing ``mfra`` too.
    """
    with open(path, "rb") as f:
        data = f.read()
    n = len(data)
    pos = end = samples = 0
    pending: tuple[int, int] | None = None  # (moof end, samples) waiting for its mdat
    while pos + 8 <= n:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1 and pos + 16 <= n:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = n - pos
        if size < header or pos + size > n:
            break  # torn box
        box_end = pos + size
        if kind == b"moof":
            pending = (box_end, _trun_samples(data, pos + header, box_end))
        elif kind == b"mdat" and pending is not None:
            samples += pending[1]
            pending = None
            end = box_end
        elif pending is None and (kind != b"mdat"):
            end = box_end  # header boxes, or mfra after complete fragments
        pos = box_end
    return end, samples


def _trun_samples(data: bytes, start: int, stop: int, track_id: int = 1) -> int:
    """Sum of ``sample_count`` over the ``traf/trun`` boxes of track ``track_id`` (the video, added first; not
    the sound) inside a ``moof`` payload."""
    total = 0
    for kind, p0, p1 in _child_boxes(data, start, stop):
        if kind == b"traf":
            children = list(_child_boxes(data, p0, p1))
            tfhd = next((q0 for k2, q0, _ in children if k2 == b"tfhd" and q0 + 8 <= p1), None)
            if tfhd is not None and struct.unpack(">I", data[tfhd + 4:tfhd + 8])[0] != track_id:
                continue
            for k2, q0, _ in children:
                if k2 == b"trun" and q0 + 8 <= p1:
                    total += struct.unpack(">I", data[q0 + 4:q0 + 8])[0]
    return total


def _child_boxes(data: bytes, start: int, stop: int):
    pos = start
    while pos + 8 <= stop:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if size < 8 or pos + size > stop:
            return
        yield kind, pos + 8, pos + size
        pos += size


def _to_even(rgb: np.ndarray, buf: np.ndarray | None) -> np.ndarray:
    """Pad an odd-sized (H, W, 3) image to even H and W by repeating its last row/column (no pixel dropped)."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    assert buf is not None
    buf[:h, :w] = rgb
    if h % 2:
        buf[h, :w] = rgb[h - 1]
    if w % 2:
        buf[:, w] = buf[:, w - 1]
    return buf


class VideoSink:
    """Encodes RGB frames to a video file with PyAV (libx264, yuv420p, BT.709 limited range by default).

    Args:
        path: ``.mp4``, ``.mov``, ``.mkv``, ``.webm`` or ``.ts`` (the container follows the suffix), written directly
            (no temp file); or ``-`` (MPEG-TS on standard output, which must not be a terminal) or a URL of
            :data:`STREAM_SCHEMES`.
        fps: frame rate (float, ``Fraction`` or ``"24000/1001"``); the codec time base is ``1/fps``.
        codec: FFmpeg encoder name (``libx264``, ``libx265``, ``h264_nvenc``, ``mpeg4``, ...); default
            :func:`default_codec` (libx264, or libvpx-vp9 for ``.webm``).
        crf: constant quality for :data:`CRF_CODECS` (None: :data:`DEFAULT_CRF`): crf for
            libx264/libx265/libvpx-vp9/libsvtav1, cq for NVENC, a fixed quantiser (crf / 6) for mpeg4; other encoders
            (ProRes, DNxHR: their profile sets the quality) run FFmpeg's defaults (pass ``options``).
        qp: libx264/libx265 only: a constant quantiser (0..51) instead of ``crf``; no per-frame rate control, so
            cheaper to encode (no look-ahead analysis), but the same quantiser whatever the content.
        preset: libx264/libx265 speed preset (NVENC runs p1, VP9 its real-time mode, SVT-AV1 preset 12).
        pix_fmt: encoder pixel format; ``yuv420p`` (plays everywhere) or e.g. ``yuv444p``, or a 10-bit one such as
            ``yuv420p10le`` (give it uint16 frames, or the extra bits are empty). None: :func:`default_pix_fmt`,
            ``yuv420p`` unless the encoder cannot take it (ProRes and DNxHR: ``yuv422p10le``). ``dnxhd`` runs the
            DNxHR profile of its pixel format (HQ, HQX, 444), ``prores`` (FFmpeg's prores_aw) ProRes 422 HQ or 4444,
            unless ``options`` names a profile.
        threads: encoder threads (0 = FFmpeg's choice).
        fragmented: for ``.mp4``/``.mov``, write fragmented MP4 so a hard-killed run stays playable (see module).
        pts_from: ``"t_ns"`` (default; frame timestamps, so camera drops and skipped files keep real timing) or
            ``"index"``. Either way pts are strictly increasing.
        yuv: how RGB becomes the encoder's YUV: ``"kernel"`` (``kernels.rgb_to_yuv420p`` written straight into the
            frame's planes; uint8 frames and ``pix_fmt="yuv420p"`` only), ``"sws"`` (libswscale, BT.709 matrix), or
            ``"auto"`` (kernel where it applies, else swscale). Measured at 1080p on the 2-core development CPU:
            kernel 7.1 ms vs swscale 10.4 ms (1 thread) / 14.6 ms (auto threads) per frame, on a loaded machine.
        options: extra encoder options passed to FFmpeg verbatim.
        timecode: ``HH:MM:SS:FF`` of the first frame (a CinemaDNG clip's), written for editors to conform by: a
            tmcd track in MP4/MOV, a TIMECODE tag in Matroska; files only. Or a function of a frame's index giving
            its code (``RawFileSource.timecode``), asked for the first frame written.
        audio: a sound file (a CinemaDNG folder's ``.wav``) to carry beside the video, AAC (Opus in WebM); its
            time 0 is frame 0 of the source, so a video that starts at a later frame (its first ``t_ns``) starts
            the sound as far in, and it is cut where the video ends. Read and checked here.

    Frames: ``EnhancedFrame.rgb`` (H, W, 3) uint8 or uint16 sRGB, all the same size. The container opens at the
    first frame (size known then). Odd H or W are padded to even by repeating the last row/column (yuv420p needs
    even sizes; padding keeps every pixel, the video is one pixel larger). RGB -> YUV uses the BT.709 matrix into
    limited range (see ``yuv``), and the stream is tagged BT.709 (primaries, transfer, matrix) and tv range.
    uint16 input goes in as rgb48 and is reduced to the pixel format's bit depth by swscale.

    Thread use: one thread at a time (``write`` then ``close``). ``close()`` is idempotent and safe after a failed
    ``write``; it flushes the encoder and writes the trailer exactly once.

    Raises:
        SinkError: at construction if ``path`` cannot be written; on ``write``/``close`` if writing fails (disk
            full, encoder failure). Frames already written stay decodable.
        ConfigError: unknown codec or suffix.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fps: float | Fraction | str = 24.0,
        codec: str | None = None,
        crf: int | None = None,
        qp: int | None = None,
        preset: str = "ultrafast",
        pix_fmt: str | None = None,
        threads: int = 0,
        fragmented: bool = True,
        pts_from: str = "t_ns",
        yuv: str = "auto",
        options: dict[str, str] | None = None,
        audio: str | os.PathLike | None = None,
        timecode: str | Callable[[int], str | None] | None = None,
    ) -> None:
        import av  # heavy optional import at its one point of use

        target = os.fspath(path)
        self._format = container_format(target)  # the muxer; ConfigError for a URL scheme we do not write
        # kind: "file", "stdout" or "url"; path: the file (None for streams); name: the output, for messages.
        self.path: Path | None = None
        if target == STDOUT:
            self.kind, self.name, self._url = "stdout", "standard output", "pipe:1"
        elif url_scheme(target) is not None:
            self.kind, self.name, self._url = "url", target, target
        else:
            self.kind, self.name, self._url, self.path = "file", target, target, Path(target)
            suffix = self.path.suffix.lower()
            if suffix not in VIDEO_SUFFIXES:
                raise ConfigError(f"unknown video suffix {suffix!r} in {target}; valid: {', '.join(VIDEO_SUFFIXES)}")
        codec = codec or default_codec(target)
        check_container_codec(target, codec)
        formats = encoder_pix_fmts(codec)
        if formats is None:
            encoders = sorted(c for c in ("libx264", "libx265", "h264_nvenc", "hevc_nvenc", "mpeg4", "libvpx-vp9",
                                          "prores", "prores_ks", "dnxhd") if c in av.codecs_available)
            raise ConfigError(f"no encoder {codec!r} in this FFmpeg; available: {', '.join(encoders)}")
        pix_fmt = pix_fmt or default_pix_fmt(codec)
        if formats and pix_fmt not in formats:
            offered = ", ".join(f for f in VIDEO_PIX_FMTS if f in formats) or ", ".join(formats)
            raise ConfigError(f"{codec} in this FFmpeg cannot encode {pix_fmt}; it can: {offered}")
        if pts_from not in ("t_ns", "index"):
            raise ConfigError(f"invalid pts_from {pts_from!r}; valid: t_ns, index")
        if yuv not in ("auto", "kernel", "sws"):
            raise ConfigError(f"invalid yuv {yuv!r}; valid: auto, kernel, sws")
        crf = DEFAULT_CRF if crf is None else crf
        if not 0 <= crf <= crf_max(codec):
            raise ConfigError(f"crf must be in 0..{crf_max(codec)} for {codec}, got {crf}")
        if codec in ("libx264", "libx265") and preset not in X26X_PRESETS:
            raise ConfigError(f"invalid preset {preset!r} for {codec}; valid: {', '.join(X26X_PRESETS)}")
        if any(part in codec for part in _HARDWARE_ENCODERS):
            _probe_hardware_encoder(av, codec)
        self.fps = fps_to_fraction(fps)
        self.codec = codec
        if qp is not None:
            if codec not in ("libx264", "libx265"):
                raise ConfigError(f"a constant quantiser (qp) applies to libx264 and libx265, not {codec}; use crf")
            if not 0 <= qp <= 51:
                raise ConfigError(f"qp must be in 0..51, got {qp}")
        self.crf = crf
        self.qp = qp
        self.preset = preset
        self.pix_fmt = pix_fmt
        self.threads = threads
        self.fragmented = fragmented and self.path is not None and self.path.suffix.lower() in (".mp4", ".mov")
        self.pts_from = pts_from
        self.yuv = yuv
        self._use_kernel = yuv in ("auto", "kernel") and pix_fmt == "yuv420p"
        if yuv == "kernel" and not self._use_kernel:
            raise ConfigError(f"yuv='kernel' needs pix_fmt='yuv420p', got {pix_fmt!r}")
        self.options = dict(options or {})
        if isinstance(timecode, str) and not TIMECODE_RE.fullmatch(timecode):
            raise ConfigError(f"invalid time code {timecode!r}; give HH:MM:SS:FF (HH:MM:SS;FF for drop-frame)")
        self._timecode_of = timecode if callable(timecode) else None
        self.timecode = timecode if isinstance(timecode, str) and self.kind == "file" else None  # not for streams
        if self.path is not None:
            check_writable_file(self.path)
        elif self.kind == "stdout" and os.isatty(1):
            raise SinkError("--out -: standard output is a terminal; pipe the video on (redi-stream ... --out - | "
                            "ffplay -) or name a file")

        self.frames_written = 0
        self.frames_kept: int | None = None  # after a failed write + close: frames left in the (cut) file
        self.size: tuple[int, int] | None = None  # (H, W) of the encoded video (even)
        self._av = av
        self._container = None
        self._stream = None
        self._reformatter = None
        self._pad_buf: np.ndarray | None = None
        self._in_size: tuple[int, int] | None = None
        self._t0_ns: int | None = None
        self._last_pts = -1
        self._muxed = False  # a packet went to the container (from then on the file at self.path is this run's)
        self._failed = False
        self._closed = False
        self._audio = None
        if audio is not None:
            from .audio import AudioTrack

            self._audio = AudioTrack(audio)  # SinkError naming the file if it cannot be read

    # -- lifecycle -----------------------------------------------------------------------------------------
    def _open_container(self):
        av = self._av
        try:
            container = av.open(self._url, mode="w", format=self._format, options=self._container_options())
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot open {self.name} for writing: {exc}") from exc
        if self.timecode is not None:
            container.metadata["timecode"] = self.timecode  # MP4/MOV: a tmcd track; Matroska: a TIMECODE tag
        return container

    def _container_options(self) -> dict[str, str]:
        if self._format == "rtsp":
            return {"rtsp_transport": "tcp"}  # RTP inside the RTSP connection: nothing lost to UDP on the way
        opts = {"flush_packets": "1"}  # hand each finished fragment/cluster to the OS at once
        if self.fragmented:
            # negative_cts_offsets: B-frame reordering without shifting the first pts off 0.
            opts["movflags"] = "+frag_keyframe+empty_moov+default_base_moof+negative_cts_offsets"
            opts["frag_duration"] = "1000000"  # us: at most ~1 s is lost on a hard kill
        elif self.path is not None and self.path.suffix.lower() in (".mp4", ".mov"):
            opts["movflags"] = "+faststart"
        return opts

    def _codec_options(self) -> dict[str, str]:
        """Constant quality from ``crf`` for every encoder of :data:`CRF_CODECS` (never FFmpeg's default bitrate,
        which for mpeg4 is 200 kb/s), tuned for speed: the stream must keep up with the frames."""
        opts: dict[str, str] = {}
        if self.codec in ("libx264", "libx265"):
            # qp: one quantiser for every frame, so no per-frame complexity analysis (the half-size look-ahead that
            # crf needs even at ultrafast): cheaper to encode, but nothing adapts to the content.
            rate = {"crf": str(self.crf)} if self.qp is None else {"qp": str(self.qp)}
            opts = {**rate, "preset": self.preset}
            if self.path is None:
                # A stream is watched as it comes: no frame threads or look-ahead holding frames back.
                opts["tune"] = "zerolatency"
        if self.codec == "libx265":
            # log-level: x265 prints ~20 info lines per file on stderr otherwise. bframes=0: with B-frames the
            # bundled FFmpeg's libx265 wrapper hands out packets with unset or garbage timestamps now and then
            # ("pts has no value", durations of 2^44), and the MP4 muxer then aborts the whole process in
            # av_write_trailer (assertion next_dts >= 0, movenc.c); 6 runs in 16 of a 2-frame clip did. Without
            # B-frames none did (and x264's ultrafast default has none either).
            opts["x265-params"] = "log-level=error:bframes=0"
        elif self.codec == "libvpx-vp9":  # constant quality (b 0), its real-time mode; crf on VP9's 0..63 scale
            opts = {"crf": str(self.crf), "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
        elif self.codec == "libsvtav1":  # crf on AV1's 0..63 scale; preset 12 of 0..13 runs in real time
            opts = {"crf": str(self.crf), "preset": "12"}
        elif self.codec in ("h264_nvenc", "hevc_nvenc"):  # constant quality: cq, same 0..51 scale as x264's crf
            opts = {"rc": "vbr", "cq": str(self.crf), "b": "0", "preset": "p1"}
        elif self.codec in ("prores", "prores_aw"):  # FFmpeg's fast ProRes encoder; unasked it writes 422 Standard
            opts = {"profile": "4" if self.pix_fmt.startswith("yuv444") else "3"}  # 4444, or 422 HQ as prores_ks
        elif self.codec == "dnxhd" and self.pix_fmt in _DNXHR_PROFILES:
            opts = {"profile": _DNXHR_PROFILES[self.pix_fmt]}  # any frame size; DNxHD's profiles fix it
        opts.update(self.options)
        return opts

    def _set_fixed_quantiser(self, cc) -> None:
        """mpeg4 has no crf: a fixed quantiser (``-q:v``) from ``crf``, 18 -> 3 (1 best .. 31)."""
        cc.qscale = True
        cc.global_quality = max(1, min(31, round(self.crf / 6))) * _FF_QP2LAMBDA

    def _open(self, h: int, w: int, dtype: np.dtype, start_s: float) -> None:
        av = self._av
        from av.video.reformatter import VideoReformatter

        eh, ew = h + h % 2, w + w % 2
        if self.codec == "libx265" and ew < X265_MIN_WIDTH:
            # The bundled x265 corrupts its heap on such frames and aborts the process (48 wide, any height).
            raise SinkError(f"cannot write {self.name}: libx265 cannot encode frames narrower than {X265_MIN_WIDTH} "
                            f"pixels (these are {w}); use --codec libx264")
        if (eh, ew) != (h, w):
            log.info("%s: %dx%d is odd; padding to %dx%d (last row/column repeated)", self.name, w, h, ew, eh)
            self._pad_buf = np.empty((eh, ew, 3), dtype=dtype)
        if self.path is not None and self.path.exists():
            log.info("%s: replacing the existing file", self.path)
        if self.codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 prints a 20-line banner otherwise
        container = self._open_container()
        try:
            stream = container.add_stream(self.codec, rate=self.fps, options=self._codec_options())
            stream.width, stream.height, stream.pix_fmt = ew, eh, self.pix_fmt
            cc = stream.codec_context
            cc.time_base = 1 / self.fps
            cc.thread_count = self.threads
            cc.color_primaries = _BT709
            cc.color_trc = _BT709
            cc.colorspace = _BT709
            cc.color_range = _RANGE_TV
            if self.codec == "mpeg4":
                self._set_fixed_quantiser(cc)
        except (av.FFmpegError, OSError, ValueError) as exc:
            container.close()
            raise SinkError(f"cannot set up {self.codec} for {self.name}: {exc}") from exc
        if self._audio is not None:
            codec = "libopus" if self._format is None and self.path.suffix.lower() == ".webm" else "aac"
            try:
                self._audio.add_stream(container, codec, start_s)
            except (av.FFmpegError, OSError, ValueError) as exc:
                container.close()
                raise SinkError(f"cannot set up the sound of {self._audio.path} for {self.name}: {exc}") from exc
        self._container, self._stream = container, stream
        self._reformatter = VideoReformatter()  # reused: keeps its swscale context between frames
        self._in_size = (h, w)
        self.size = (eh, ew)

    @property
    def wants_yuv420p(self) -> bool:
        """True when this sink encodes ``EnhancedFrame.yuv420p`` planes if a frame carries them (yuv420p output,
        ``yuv`` auto/kernel): an enhancer may then make them in its ISP pass."""
        return self._use_kernel

    def write(self, frame: EnhancedFrame) -> None:
        """Encode one frame. Called from one thread. Raises SinkError naming the file on any write failure."""
        if self._closed:
            raise SinkError(f"{self.name}: write after close")
        if self._failed:
            raise SinkError(f"{self.name}: an earlier write failed")
        rgb = frame.rgb
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected (H, W, 3) uint8/uint16 RGB, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        if self._container is None:
            if self._timecode_of is not None and self.kind == "file":
                code = self._timecode_of(frame.index)
                self.timecode = code if code is not None and TIMECODE_RE.fullmatch(code) else None
            self._open(h, w, rgb.dtype, frame.t_ns / 1e9 if self.pts_from == "t_ns" else frame.index / self.fps)
        elif (h, w) != self._in_size:
            vh, vw = self._in_size
            raise SinkError(f"{self.name}: frame {frame.index} is {w}x{h}, the video is {vw}x{vh}")
        av = self._av
        if self._pad_buf is not None and self._pad_buf.dtype != rgb.dtype:
            self._pad_buf = np.empty(self._pad_buf.shape, dtype=rgb.dtype)
        planes = frame.yuv420p
        if planes is not None and self._use_kernel and planes[0].shape == (h, w):
            vf = self._yuv_frame_from_planes(planes)  # made by the enhancer in its ISP pass
        elif self._use_kernel and rgb.dtype == np.uint8:
            vf = self._yuv_frame_kernel(_to_even(rgb, self._pad_buf))
        else:
            rgb = _to_even(rgb, self._pad_buf)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb),
                                            format="rgb24" if rgb.dtype == np.uint8 else "rgb48le")
            # One swscale thread: the encoder's own threads already use the cores.
            vf = self._reformatter.reformat(
                vf, format=self.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG", threads=1
            )
        vf.pts = self._next_pts(frame)
        try:
            for packet in self._stream.encode(vf):
                self._muxed = True  # from the first mux on, the file at self.path is this run's (PyAV opens it)
                self._container.mux(packet)
            if self._audio is not None:  # the sound up to the end of this frame, interleaved as the run goes
                self._audio.write_until(float((vf.pts + 1) / self.fps), self._container)
        except (av.FFmpegError, OSError) as exc:
            self._failed = True
            raise SinkError(f"cannot write {self.name}: {_io_reason(exc)}") from exc
        self.frames_written += 1

    def _new_yuv_frame(self, h: int, w: int):
        """A new BT.709 tv-range yuv420p frame and writable views of its (Y, U, V) planes.

        A new frame each time: the encoder may keep a reference to a frame it was given.
        """
        vf = self._av.VideoFrame(w, h, "yuv420p")
        vf.colorspace = _BT709
        vf.color_range = _RANGE_TV
        views = tuple(
            np.frombuffer(p, np.uint8).reshape(ph, p.line_size)[:, :pw]
            for p, (ph, pw) in zip(vf.planes, ((h, w), (h // 2, w // 2), (h // 2, w // 2)))
        )
        return vf, views

    def _yuv_frame_kernel(self, rgb: np.ndarray):
        """A yuv420p frame whose planes ``kernels.rgb_to_yuv420p`` fills in place (no intermediate copy)."""
        from .. import kernels

        vf, (y, u, v) = self._new_yuv_frame(*rgb.shape[:2])
        kernels.rgb_to_yuv420p(rgb, y, u, v)
        return vf

    def _yuv_frame_from_planes(self, planes):
        """A yuv420p frame holding a copy of ``EnhancedFrame.yuv420p`` (same BT.709 limited-range convention as
        :meth:`_yuv_frame_kernel`)."""
        y = planes[0]
        vf, views = self._new_yuv_frame(*y.shape)
        for dst, src in zip(views, planes):
            dst[...] = src
        return vf

    def _next_pts(self, frame: EnhancedFrame) -> int:
        if self.pts_from == "index":
            pts = frame.index
        else:
            if self._t0_ns is None:
                self._t0_ns = frame.t_ns
            pts = round((frame.t_ns - self._t0_ns) * self.fps / 1_000_000_000)
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the clock did
        self._last_pts = pts
        return pts

    def close(self) -> None:
        """Flush the encoder, write the trailer (once) and close the file. Idempotent.

        Raises:
            SinkError: flushing or the trailer failed (not raised again if a ``write`` already failed; then only
                logged, since the caller has that error).
        """
        if self._closed:
            return
        self._closed = True
        container, stream = self._container, self._stream
        self._container = self._stream = None
        audio, self._audio = self._audio, None
        if container is None:  # the output opens at the first frame: an earlier file at this path is untouched
            if audio is not None:
                audio.close()
            self._say_untouched("no frames were written")
            return
        av = self._av
        error: BaseException | None = None
        try:
            if not self._failed:
                for packet in stream.encode(None):
                    self._muxed = True
                    container.mux(packet)
                if audio is not None:
                    audio.finish(float((self._last_pts + 1) / self.fps), container)
        except (av.FFmpegError, OSError) as exc:
            error = exc
        finally:
            if audio is not None:
                audio.close()
            try:
                container.close()  # writes the trailer, exactly once (PyAV tracks it)
            except (av.FFmpegError, OSError) as exc:
                error = error or exc
        if self._failed and not self._muxed:
            # PyAV writes the file from its first packet on: a run that failed before (an encoder that would not
            # open on the first frame) left an earlier file at this path as it was. Cutting "its torn fragment"
            # would have truncated that file.
            self._say_untouched("no frame reached the file")
        elif self._failed and self.fragmented:
            self._cut_torn_fragment()
        if error is not None:
            if self._failed:
                log.warning("%s: finalising after a failed write also failed: %s", self.name, _io_reason(error))
            else:
                self._failed = True
                raise SinkError(f"cannot finalise {self.name}: {_io_reason(error)}") from error

    def _say_untouched(self, what: str) -> None:
        if self.path is None:
            log.warning("%s: %s", self.name, what)
            return
        left = "the existing file is left as it was" if self.path.exists() else "no file created"
        log.warning("%s: %s; %s", self.path, what, left)

    def _cut_torn_fragment(self) -> None:
        """After a failed write: truncate the file after its last complete fragment; set ``frames_kept``."""
        # A stream, or e.g. a device node such as /dev/full: nothing to cut (and reads never end).
        if self.path is None or not self.path.is_file():
            return
        try:
            end, kept = complete_fragments_end(self.path)
            if end < self.path.stat().st_size:
                os.truncate(self.path, end)
        except OSError as exc:
            log.warning("%s: could not cut the torn last fragment after the failed write: %s", self.path, exc)
            return
        self.frames_kept = kept
        log.warning("%s: %d of %d frames kept (every complete fragment); the rest could not be written",
                    self.path, kept, self.frames_written)

    def __enter__(self) -> "VideoSink":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoSink({self.name!r}, fps={self.fps}, codec={self.codec!r}, frames={self.frames_written})"


class SegmentedVideoSink:
    """A video file output cut into files of about ``segment_s`` seconds each, for recordings that run for hours or
    days (a CCTV or robot recorder; a FAT32 card that takes no file over 4 GiB): ``rec.mp4`` is written as
    ``rec_000.mp4``, ``rec_001.mp4``, ..., or, when its name holds ``strftime`` fields (``rec_%Y%m%d_%H%M%S.mp4``),
    under the local time each file starts.

    Each file is a whole :class:`VideoSink` of its own (its own options, ``audio`` included: each file carries the
    sound of its frames), finalised before the next opens, so every finished file plays alone and a failure or a
    hard kill touches only the file being written. A new file starts with the first frame at or after its
    boundary in source time (``t_ns``), so the files hold every frame once, each at its own time from 0. A time
    code given as a string is the first file's; given as a function of the frame index (``RawFileSource.timecode``),
    each file gets the code of its own first frame.

    Attributes:
        paths: the files written so far, in order (the last one may be in progress).
        frames_written: frames written over all the files.
        frames_kept: after a failed write: frames the files keep (every finished file, and what the failed one kept).
    """

    def __init__(self, path: str | os.PathLike, segment_s: float, **video: object) -> None:
        target = os.fspath(path)
        if not is_video_file(target):
            raise ConfigError(f"--segment cuts video files, not a stream such as {target}")
        if not (isinstance(segment_s, (int, float)) and math.isfinite(segment_s) and segment_s > 0):
            raise ConfigError(f"segment length must be a positive number of seconds, got {segment_s!r}")
        self.pattern = Path(target)
        self.segment_ns = round(segment_s * 1e9)
        self._video = video
        self._timecode = video.pop("timecode", None)
        self.paths: list[Path] = []
        self.frames_written = 0
        self.frames_kept: int | None = None
        self._done_frames = 0  # frames in the finished files
        self._t_start: int | None = None  # t_ns of the current file's first frame
        pattern = self.pattern
        if "%" not in pattern.name and pattern.parent.is_dir():
            old = sorted(pattern.parent.glob(f"{glob.escape(pattern.stem)}_[0-9][0-9][0-9]*{pattern.suffix}"))
            if old:  # a previous recording's files: those this run does not reach would mix into this one's
                log.warning("%s already holds %d files of a recording named so (%s ... %s); this run replaces the "
                            "ones it writes and leaves the rest", pattern.parent, len(old), old[0].name, old[-1].name)
        self._current: VideoSink = self._open_next()  # checked writable now, before any frame

    @property
    def wants_yuv420p(self) -> bool:
        return self._current.wants_yuv420p

    def _name(self, k: int) -> Path:
        p = self.pattern
        if "%" not in p.name:
            return p.with_name(f"{p.stem}_{k:03d}{p.suffix}")
        name = p.with_name(time.strftime(p.name))
        if self.paths and name in self.paths:  # two files begun within one second
            name = name.with_name(f"{name.stem}_{k:03d}{name.suffix}")
        return name

    def _open_next(self) -> VideoSink:
        path = self._name(len(self.paths))
        code = self._timecode if callable(self._timecode) or not self.paths else None
        sink = VideoSink(path, **self._video, timecode=code)
        self.paths.append(path)
        return sink

    def write(self, frame: EnhancedFrame) -> None:
        """Encode one frame into the current file, first finishing it and opening the next at a boundary."""
        if self._t_start is None:
            self._t_start = frame.t_ns
        elif frame.t_ns - self._t_start >= self.segment_ns and self._current.frames_written:
            self._current.close()  # SinkError naming the file if it cannot be finalised
            self._done_frames += self._current.frames_written
            self._current = self._open_next()
            self._t_start = frame.t_ns
        try:
            self._current.write(frame)
        except SinkError:
            kept = self._current.frames_kept
            self.frames_kept = None if kept is None else self._done_frames + kept
            raise
        self.frames_written += 1

    def close(self) -> None:
        """Finalise the file being written. Idempotent."""
        self._current.close()

    def __enter__(self) -> "SegmentedVideoSink":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"SegmentedVideoSink({os.fspath(self.pattern)!r}, {self.segment_ns / 1e9:g} s, "
                f"{len(self.paths)} files, frames={self.frames_written})")


class ImageSequenceSink:
    """Writes each frame as one image file ``<prefix><index:06d>.<ext>`` in ``directory`` (created if missing), or
    one still under the name ``filename``.

    Args:
        directory: output folder.
        fmt: ``"png"``, ``"tiff"`` or ``"jpeg"`` (8-bit only, quality 95, full-resolution chroma).
        bits: 16 (default, for post-production) or 8. uint8 frames are scaled by 257 to 16 bits; uint16 frames are
            rounded to 8 bits when ``bits == 8``. JPEG is always 8 bits.
        prefix, digits: file name pattern; the number is the frame's source index, so a skipped frame leaves a gap.
        filename: write the one frame of a still to ``directory/filename`` (e.g. ``shot.png``) instead; a second
            frame is an error (a sequence wants a folder).
        keep_names: name each image after its source file (``DSC01234.ARW`` -> ``DSC01234.png``) instead of its
            number: for a folder of stills.

    Colour: files hold RGB in the usual order (OpenCV's BGR convention is handled here). Existing files with the
    same names are overwritten; if the folder already holds frame files of this pattern, a warning says so at
    construction (a previous run's frames that this one does not renumber stay beside the new ones). Each file is
    written under a temporary name and renamed, so a failed write (disk full) leaves no partial image: every frame
    file present is complete. ``close()`` is idempotent.

    Raises:
        SinkError: the folder cannot be created or written (at construction), or a file write fails.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        fmt: str = "png",
        bits: int = 16,
        prefix: str = "frame_",
        digits: int = 6,
        filename: str | None = None,
        keep_names: bool = False,
    ) -> None:
        fmt = {"tif": "tiff", "jpg": "jpeg"}.get(fmt.lower(), fmt.lower())
        if fmt not in _IMAGE_EXT:
            raise ConfigError(f"invalid image format {fmt!r}; valid: {', '.join(_IMAGE_EXT)}")
        if bits not in (8, 16):
            raise ConfigError(f"bits must be 8 or 16, got {bits}")
        self.directory = Path(directory)
        self.fmt, self.bits, self.prefix, self.digits = fmt, 8 if fmt == "jpeg" else bits, prefix, digits
        self.filename = filename
        self.keep_names = keep_names
        self._stems: dict[str, int] = {}  # with keep_names: the stems written, and the frame that took each
        self._said_clash = False
        self._ext = _IMAGE_EXT[fmt]
        if self.directory.exists() and not self.directory.is_dir():
            raise SinkError(f"cannot write frames to {self.directory}: it is a file, not a directory")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".redi-write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SinkError(f"cannot write frames to {self.directory}: {exc.strerror or exc}") from exc
        numbered = f"{glob.escape(prefix)}{'[0-9]' * digits}{self._ext}"
        old = [] if filename or keep_names else sorted(self.directory.glob(numbered))
        if old:  # a previous run's frames: those this run does not renumber would mix into the sequence
            log.warning("%s already holds %d frame files (%s ... %s); this run overwrites the ones it writes and "
                        "leaves the rest", self.directory, len(old), old[0].name, old[-1].name)
        self.frames_written = 0
        self._closed = False

    def path_for(self, index: int) -> Path:
        if self.filename is not None:
            return self.directory / self.filename
        return self.directory / f"{self.prefix}{index:0{self.digits}d}{self._ext}"

    def _path_of(self, frame: EnhancedFrame) -> Path:
        """Where ``frame`` goes: :meth:`path_for` its index, or with ``keep_names`` its source file's name
        (``DSC01234.ARW`` -> ``DSC01234.png``; frame k of a stack ``clip.npy`` -> ``clip_00000k.png``). Two sources
        with one stem (``a.dng``, ``a.nef``) would overwrite each other: the later gets its index too, said once."""
        if not self.keep_names or not frame.name or self.filename is not None:
            return self.path_for(frame.index)
        m = re.fullmatch(r"(?P<file>.+)\[(?P<k>[0-9]+)\]", frame.name)
        stem = f"{Path(m['file']).stem}_{int(m['k']):0{self.digits}d}" if m else Path(frame.name).stem
        first = self._stems.setdefault(stem, frame.index)
        if first != frame.index:
            if not self._said_clash:
                log.warning("%s: %s and an earlier frame share the name %s; such frames get their number too "
                            "(%s_%0*d%s)", self.directory, frame.name, stem, stem, self.digits, frame.index, self._ext)
                self._said_clash = True
            stem = f"{stem}_{frame.index:0{self.digits}d}"
        return self.directory / f"{stem}{self._ext}"

    def write(self, frame: EnhancedFrame) -> None:
        import cv2

        if self._closed:
            raise SinkError(f"{self.directory}: write after close")
        if self.filename is not None and self.frames_written:
            raise SinkError(f"{self.path_for(0)} holds one still; for a sequence give a folder (DIR/)")
        rgb = frame.rgb
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"expected (H, W, 3) uint8/uint16 RGB, got {rgb.shape} {rgb.dtype}")
        if self.bits == 16 and rgb.dtype == np.uint8:
            img = rgb.astype(np.uint16) * np.uint16(257)
        elif self.bits == 8 and rgb.dtype == np.uint16:
            img = ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
        else:
            img = rgb
        bgr = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)  # OpenCV files are BGR
        # TIFF uncompressed: on an enhanced 1080p frame OpenCV's default (LZW) took 161 ms and made the file 19%
        # larger than storing it (14.5 against 12.2 MB, 9 ms); the grain of amplified shadows does not compress.
        params = {"png": [cv2.IMWRITE_PNG_COMPRESSION, 1], "tiff": [cv2.IMWRITE_TIFF_COMPRESSION, 1],
                  "jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95,
                           cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]}[self.fmt]
        if self.fmt == "png" and bgr.dtype == np.uint16:
            # zlib's matching finds little in the low byte of 16-bit samples: Huffman coding alone is 1.8x faster
            # on a noisy 1080p frame (195 vs 357 ms) and no larger; on a smooth one 1.2x faster and 3% larger.
            params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]
        path = self._path_of(frame)
        ok, buf = cv2.imencode(self._ext, bgr, params)
        if not ok:
            raise SinkError(f"cannot encode {path}")
        # Written to a hidden temporary name and renamed: a full disk never leaves a torn image under a frame name.
        tmp = path.with_name(f".{path.name}.part")
        try:
            with open(tmp, "wb") as f:
                f.write(buf.data)
            os.replace(tmp, path)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise SinkError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self.frames_written += 1

    def close(self) -> None:
        """Nothing is buffered; marks the sink closed. Idempotent."""
        self._closed = True

    def __enter__(self) -> "ImageSequenceSink":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ImageSequenceSink({str(self.directory)!r}, {self.fmt}{self.bits}, frames={self.frames_written})"


class NullSink:
    """Discards frames (benchmarks); counts them. Optionally keeps the last one (``keep_last=True``) for tests."""

    def __init__(self, *, keep_last: bool = False) -> None:
        self.frames_written = 0
        self.keep_last = keep_last
        self.last: EnhancedFrame | None = None
        self.close_calls = 0

    def write(self, frame: EnhancedFrame) -> None:
        self.frames_written += 1
        if self.keep_last:
            self.last = frame

    def close(self) -> None:
        self.close_calls += 1

    def __enter__(self) -> "NullSink":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_PATTERN_RE = re.compile(r"^(?P<prefix>.*?)(?:%0?(?P<digits>\d*)d|\*)$")


#: The presets libx264 and libx265 accept, fastest first.
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")

_VIDEO_OPTS = {"codec", "crf", "qp", "preset", "pix_fmt", "threads", "fragmented", "pts_from", "yuv", "options",
               "audio", "timecode"}
_IMAGE_OPTS = {"image_format", "fmt", "bits", "prefix", "digits", "single", "keep_names"}


def open_sink(target: str | os.PathLike, fps: float | Fraction | str = 24.0, *, segment_s: float | None = None,
              **opts) -> VideoSink | SegmentedVideoSink | ImageSequenceSink | NullSink:
    """Choose a sink from the output path.

    * ``*.mp4``, ``*.mkv``, ``*.mov``, ``*.webm``, ``*.ts``, ``-`` (standard output) and ``udp://``, ``tcp://``,
      ``rtmp://``, ``rtmps://``, ``rtsp://`` URLs -> :class:`VideoSink`
    * an existing directory, or a path ending in ``/`` or with no suffix -> :class:`ImageSequenceSink` (PNG unless
      ``image_format``/``fmt`` says ``tiff``; 16 bit unless ``bits=8``)
    * ``dir/frame_%06d.png`` / ``dir/*.tif`` / ``dir/x.tiff`` pattern -> :class:`ImageSequenceSink` in ``dir``, format
      from the suffix (``.png``, ``.tif``/``.tiff``, ``.jpg``/``.jpeg``), prefix from the part before ``%d``/``*``;
      with ``single=True`` (the source is one still) a plain name such as ``shot.png`` is written as it is
    * ``"null"`` -> :class:`NullSink`

    ``segment_s``: video files are cut into files of about that many seconds (:class:`SegmentedVideoSink`); frame
    sequences, streams and ``null`` ignore it.

    ``opts`` may mix video options (codec, crf, preset, pix_fmt, threads, fragmented, pts_from, options) and image
    options (image_format or fmt, bits, prefix, digits); each sink takes the ones that apply to it, so one call
    site serves every output kind.

    Raises:
        ConfigError: a suffix that is none of these (lists the valid ones). SinkError: unwritable path.
        TypeError: an option that no sink knows.
    """
    unknown = set(opts) - _VIDEO_OPTS - _IMAGE_OPTS
    if unknown:
        raise TypeError(f"open_sink: unknown options {sorted(unknown)}")
    video = {k: v for k, v in opts.items() if k in _VIDEO_OPTS}
    image = {k: v for k, v in opts.items() if k in _IMAGE_OPTS}
    fmt = image.pop("image_format", None) or image.pop("fmt", None)
    image.pop("fmt", None)
    single = image.pop("single", False)
    s = os.fspath(target)
    if s == "null":
        return NullSink()
    p = Path(s)
    suffix = p.suffix.lower()
    if is_video_target(s):
        if segment_s is not None and is_video_file(s):
            return SegmentedVideoSink(s, segment_s, fps=fps, **video)
        return VideoSink(s, fps=fps, **video)  # an existing folder named x.mp4 is an error there, not PNGs
    if s.endswith(("/", os.sep)) or p.is_dir() or suffix == "":
        return ImageSequenceSink(p, fmt=str(fmt or "png"), **image)
    if suffix in IMAGE_SUFFIXES:
        if single and _PATTERN_RE.match(p.stem) is None:
            return ImageSequenceSink(p.parent, fmt=IMAGE_SUFFIXES[suffix], filename=p.name, **image)
        m = _PATTERN_RE.match(p.stem)
        prefix, digits = (m.group("prefix"), int(m.group("digits") or 6)) if m else (p.stem + "_", 6)
        image.setdefault("prefix", prefix)
        image.setdefault("digits", digits)
        return ImageSequenceSink(p.parent, fmt=IMAGE_SUFFIXES[suffix], **image)
    valid = ", ".join([*VIDEO_SUFFIXES, "-", "udp:// (or tcp, rtmp, rtmps, rtsp)", "DIR/", "DIR/frame_%06d.png",
                       "DIR/frame_%06d.tif", "null"])
    raise ConfigError(f"cannot tell the output kind of {s!r}; valid: {valid}")
