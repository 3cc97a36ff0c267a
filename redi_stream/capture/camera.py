"""Camera devices: open, negotiate a pixel format, read one frame at a time, close. No threads, no kernels.

A *device* turns a camera spec into frames exactly as the hardware delivers them; :mod:`redi_stream.stream.camera`
runs it on a reader thread and turns its output into :class:`~redi_stream.frames.RawFrame` objects (unpacking
MIPI-packed raw with the numba kernels, re-mosaicking RGB). Two devices share one protocol::

    name: str                       # "camera 0", "camera /dev/video2", "fake camera 720p30", for messages
    layout: PixelLayout             # what read() returns (format, size, bits, CFA when known)
    fps: float                      # frame rate as negotiated (what the driver / file says)
    finite: bool                    # True for a video file: read() returns None at its end
    read() -> (array, t_ns) | None  # blocks until the next frame; t_ns = time.monotonic_ns() of the frame
    close() / with                  # idempotent

:class:`CameraDevice` uses OpenCV ``VideoCapture``: an integer index or a ``/dev/video*`` path (V4L2 on Linux),
or a file / URL (FFmpeg; for tests and demos). On V4L2 it asks the driver which pixel formats it offers
(``VIDIOC_ENUM_FMT``) and picks raw Bayer when there is one (highest bit depth first, unpacked before MIPI-packed),
with ``CAP_PROP_CONVERT_RGB`` off so OpenCV hands over the bytes untouched; otherwise it falls back to OpenCV's
BGR conversion (the live source re-mosaics that, with a warning). :class:`FakeBayerDevice` is a deterministic,
rate-limited synthetic sensor (``fake:720p30``) for tests, demos and benchmarks.

Errors are :class:`~redi_stream.errors.CaptureError` naming the device, raised fast: a missing ``/dev/videoN`` is
detected before OpenCV is asked, OpenCV's own warnings are silenced while it probes, and the open uses one backend
(V4L2 for devices, FFmpeg for files/URLs) instead of trying them all.
"""

from __future__ import annotations

import enum
import errno
import logging
import math
import os
import re
import struct
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from redi_stream.errors import CaptureError, ConfigError
from redi_stream.frames import CFA

log = logging.getLogger(__name__)

# -- pixel formats -----------------------------------------------------------------------------------------------


class PixelFormat(enum.StrEnum):
    """Memory layout of what a device's ``read()`` returns."""

    BAYER8 = "bayer8"  #: (H, W) uint8 mosaic
    BAYER16 = "bayer16"  #: (H, W) uint16 mosaic, ``bits`` significant bits, LSB-aligned (10/12/14/16)
    RAW10 = "raw10"  #: (H, stride) uint8, MIPI CSI-2 packed 10-bit (4 pixels in 5 bytes)
    RAW12 = "raw12"  #: (H, stride) uint8, MIPI CSI-2 packed 12-bit (2 pixels in 3 bytes)
    BGR = "bgr"  #: (H, W, 3) uint8, processed colour (ordinary webcams, video files)

    @property
    def is_raw(self) -> bool:
        return self is not PixelFormat.BGR


@dataclass(frozen=True)
class PixelLayout:
    """What a device delivers, as negotiated.

    Attributes:
        format: memory layout (see :class:`PixelFormat`).
        width, height: frame size in pixels.
        bits: significant bits per sample (8 for BGR).
        cfa: Bayer pattern when the format states it (``'pRAA'`` is RGGB), None when it does not (``'Y16 '``,
            ``'GREY'``: a mono format carrying a mosaic) or for BGR.
        fourcc: the negotiated V4L2/FFmpeg four-character code, e.g. ``'pRAA'``, ``'YUYV'``; ``''`` if unknown.
        black_level, white_level, wb_gains: what the device itself states about its sensor (the fake device
            does; V4L2 devices do not, so these are None and the user's ``--black``/``--white`` apply).
    """

    format: PixelFormat
    width: int
    height: int
    bits: int = 8
    cfa: CFA | None = None
    fourcc: str = ""
    black_level: float | None = None
    white_level: float | None = None
    wb_gains: tuple[float, float, float] | None = None

    def describe(self) -> str:
        kind = {
            PixelFormat.BAYER8: "8-bit Bayer",
            PixelFormat.BAYER16: f"{self.bits}-bit Bayer",
            PixelFormat.RAW10: "MIPI RAW10 Bayer",
            PixelFormat.RAW12: "MIPI RAW12 Bayer",
            PixelFormat.BGR: "processed RGB",
        }[self.format]
        cfa = f" {self.cfa.value}" if self.cfa is not None else (" (pattern not stated)" if self.format.is_raw else "")
        fourcc = f"'{self.fourcc}' " if self.fourcc else ""
        return f"{self.width}x{self.height} {fourcc}{kind}{cfa}"


# V4L2 fourcc -> (format, bits, CFA or None for mono formats that may carry a mosaic).
V4L2_RAW_FOURCCS: dict[str, tuple[PixelFormat, int, CFA | None]] = {
    "BA81": (PixelFormat.BAYER8, 8, CFA.BGGR), "GBRG": (PixelFormat.BAYER8, 8, CFA.GBRG),
    "GRBG": (PixelFormat.BAYER8, 8, CFA.GRBG), "RGGB": (PixelFormat.BAYER8, 8, CFA.RGGB),
    "BG10": (PixelFormat.BAYER16, 10, CFA.BGGR), "GB10": (PixelFormat.BAYER16, 10, CFA.GBRG),
    "BA10": (PixelFormat.BAYER16, 10, CFA.GRBG), "RG10": (PixelFormat.BAYER16, 10, CFA.RGGB),
    "BG12": (PixelFormat.BAYER16, 12, CFA.BGGR), "GB12": (PixelFormat.BAYER16, 12, CFA.GBRG),
    "BA12": (PixelFormat.BAYER16, 12, CFA.GRBG), "RG12": (PixelFormat.BAYER16, 12, CFA.RGGB),
    "BG14": (PixelFormat.BAYER16, 14, CFA.BGGR), "GB14": (PixelFormat.BAYER16, 14, CFA.GBRG),
    "GR14": (PixelFormat.BAYER16, 14, CFA.GRBG), "RG14": (PixelFormat.BAYER16, 14, CFA.RGGB),
    "BYR2": (PixelFormat.BAYER16, 16, CFA.BGGR), "GB16": (PixelFormat.BAYER16, 16, CFA.GBRG),
    "GR16": (PixelFormat.BAYER16, 16, CFA.GRBG), "RG16": (PixelFormat.BAYER16, 16, CFA.RGGB),
    "pBAA": (PixelFormat.RAW10, 10, CFA.BGGR), "pGAA": (PixelFormat.RAW10, 10, CFA.GBRG),
    "pgAA": (PixelFormat.RAW10, 10, CFA.GRBG), "pRAA": (PixelFormat.RAW10, 10, CFA.RGGB),
    "pBCC": (PixelFormat.RAW12, 12, CFA.BGGR), "pGCC": (PixelFormat.RAW12, 12, CFA.GBRG),
    "pgCC": (PixelFormat.RAW12, 12, CFA.GRBG), "pRCC": (PixelFormat.RAW12, 12, CFA.RGGB),
    "Y16 ": (PixelFormat.BAYER16, 16, None), "Y12 ": (PixelFormat.BAYER16, 12, None),
    "Y10 ": (PixelFormat.BAYER16, 10, None), "GREY": (PixelFormat.BAYER8, 8, None),
}  # fmt: skip
MONO_FOURCCS = frozenset(k for k, v in V4L2_RAW_FOURCCS.items() if v[2] is None)


def normalize_fourcc(text: str) -> str:
    """``'y16'`` -> ``'Y16 '``, ``'rg12'`` -> ``'RG12'``: padded to 4 characters; a case-insensitive spelling of a
    known raw code is corrected when that is unambiguous (``'pgAA'`` and ``'pGAA'`` differ only in case)."""
    t = str(text)
    if not 1 <= len(t) <= 4 or not t.isascii() or not t.isprintable():
        raise ConfigError(f"a FOURCC is 1-4 printable ASCII characters, got {text!r}")
    t = t.ljust(4)
    known = (*V4L2_RAW_FOURCCS, "YUYV", "MJPG", "UYVY", "NV12", "BGR3", "RGB3")
    if t in known:
        return t
    matches = [k for k in known if k.upper() == t.upper()]
    return matches[0] if len(matches) == 1 else t


def fourcc_to_str(code: float | int) -> str:
    """OpenCV's ``CAP_PROP_FOURCC`` (a float) -> 4 characters ('' for 0 or garbage)."""
    c = int(code) & 0xFFFFFFFF
    if c == 0:
        return ""
    s = "".join(chr((c >> (8 * i)) & 0xFF) for i in range(4))
    return s if s.isascii() and s.isprintable() else ""


def fourcc_to_int(text: str) -> int:
    t = text.ljust(4)
    return ord(t[0]) | (ord(t[1]) << 8) | (ord(t[2]) << 16) | (ord(t[3]) << 24)


def pick_raw_fourcc(offered: list[str], *, mono_is_bayer: bool = False) -> str | None:
    """The best raw Bayer format among those a device offers: most bits first, then unpacked before MIPI-packed
    (no CPU unpacking), stated CFA before mono. Mono formats (``Y16 ``, ``GREY``) count only with
    ``mono_is_bayer`` (the user gave ``--cfa``: the mono stream is a mosaic)."""
    best, best_key = None, None
    for f in offered:
        info = V4L2_RAW_FOURCCS.get(f)
        if info is None or (info[2] is None and not mono_is_bayer):
            continue
        fmt, bits, cfa = info
        key = (bits, fmt in (PixelFormat.BAYER8, PixelFormat.BAYER16), cfa is not None)
        if best_key is None or key > best_key:
            best, best_key = f, key
    return best


# -- specs -------------------------------------------------------------------------------------------------------


class SpecKind(enum.StrEnum):
    INDEX = "index"
    DEVICE = "device"  # a /dev/video* path
    FILE = "file"  # a video file (tests, demos): finite, paced at its frame rate
    URL = "url"  # rtsp://, http://, ...: a live stream
    FAKE = "fake"
    STDIN = "stdin"  # "-": headerless raw frames piped in by a capture program


_FAKE_RE = re.compile(
    r"^fake(?::(?:(?P<p>\d+)p(?P<pfps>\d+(?:\.\d+)?)?|(?P<w>\d+)x(?P<h>\d+)(?:@(?P<fps>\d+(?:\.\d+)?))?))?"
    r"(?::(?P<fmt>[^:]{1,4}))?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class CameraSpec:
    """A parsed ``--camera`` value.

    Accepted forms: ``0`` (index), ``/dev/video2``, a video file path, a URL (``rtsp://...``), ``-`` (headerless
    raw frames on standard input, :class:`PipeDevice`), and
    ``fake[:720p30|:1280x720@30][:FOURCC|:bgr]`` (a synthetic sensor; FOURCC one of ``RG12`` (default), ``RG10``,
    ``RG16``, ``RGGB``, ``pRAA``, ``pRCC`` or another Bayer code).
    """

    kind: SpecKind
    value: int | str
    text: str
    fake_size: tuple[int, int] | None = None  # (H, W)
    fake_fps: float | None = None
    fake_fourcc: str | None = None

    @property
    def label(self) -> str:
        if self.kind is SpecKind.STDIN:
            return "standard input"
        if self.kind is SpecKind.FAKE:
            return f"fake camera {self.text.partition(':')[2] or '720p30'}"
        return f"camera {self.text}"


def parse_camera_spec(text: str | int) -> CameraSpec:
    """Parse ``--camera``. Raises ConfigError for an empty or malformed value."""
    if isinstance(text, bool):
        raise ConfigError(f"invalid camera {text!r}")
    if isinstance(text, int):
        text = str(text)
    t = str(text).strip()
    if not t:
        raise ConfigError("--camera needs an index (0), a device path (/dev/video0), a URL, a video file "
                          "or fake:720p30")
    if re.fullmatch(r"\d+", t):
        return CameraSpec(SpecKind.INDEX, int(t), t)
    if t == "-":
        return CameraSpec(SpecKind.STDIN, t, t)
    if t.lower().startswith("fake"):
        m = _FAKE_RE.match(t)
        if m is None:
            raise ConfigError(f"invalid fake camera {t!r}; e.g. fake, fake:720p30, fake:1280x720@30, fake:720p30:pRAA, "
                              "fake:720p30:bgr")
        if m["p"]:
            h = int(m["p"])
            size = (h, (h * 16 + 8) // 9 // 2 * 2)
            fps = float(m["pfps"] or 30)
        elif m["w"]:
            size = (int(m["h"]), int(m["w"]))
            fps = float(m["fps"] or 30)
        else:
            size, fps = (720, 1280), 30.0
        fmt = m["fmt"]
        if fmt is not None and fmt.lower() != "bgr":
            fmt = normalize_fourcc(fmt)
            if fmt not in V4L2_RAW_FOURCCS or fmt in MONO_FOURCCS:
                raise ConfigError(f"fake camera format {fmt!r}: valid: bgr or a Bayer FOURCC such as RG12, RG10, RG16, "
                                  "RGGB, BA81, pRAA, pRCC")
        elif fmt is not None:
            fmt = "bgr"
        if not (2 <= size[0] <= 8192 and 2 <= size[1] <= 8192) or size[0] % 2 or size[1] % 2:
            raise ConfigError(f"fake camera size must be even and in 2..8192, got {size[1]}x{size[0]}")
        if not 0 < fps <= 1000:
            raise ConfigError(f"fake camera fps must be in (0, 1000], got {fps:g}")
        return CameraSpec(SpecKind.FAKE, t, t, fake_size=size, fake_fps=fps, fake_fourcc=fmt)
    if t.startswith("/dev/"):
        return CameraSpec(SpecKind.DEVICE, t, t)
    if "://" in t:
        return CameraSpec(SpecKind.URL, t, t)
    return CameraSpec(SpecKind.FILE, t, t)


# -- V4L2 queries (Linux; pure ioctl, no extra dependency) -------------------------------------------------------

_VIDIOC_QUERYCAP = 0x80685600  # _IOR('V', 0, struct v4l2_capability): 104 bytes
_VIDIOC_ENUM_FMT = 0xC0405602  # _IOWR('V', 2, struct v4l2_fmtdesc): 64 bytes
_V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
_V4L2_CAP_VIDEO_CAPTURE = 0x00000001
_V4L2_CAP_DEVICE_CAPS = 0x80000000


@dataclass(frozen=True)
class V4l2Info:
    """What the driver says about a ``/dev/video*`` node."""

    card: str
    driver: str
    can_capture: bool
    formats: tuple[str, ...]


def query_v4l2(path: str, *, ioctl: Callable | None = None) -> V4l2Info | None:
    """Card name, capture capability and offered pixel formats of a V4L2 node; None if it cannot be asked
    (not Linux, not a V4L2 node, no permission). ``ioctl`` is injectable for tests (``fcntl.ioctl`` signature)."""
    if ioctl is None:
        if not sys.platform.startswith("linux"):
            return None
        import fcntl

        ioctl = fcntl.ioctl
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        try:
            buf = ioctl(fd, _VIDIOC_QUERYCAP, bytes(104))
        except OSError:
            return None
        driver, card = (bytes(buf[0:16]).split(b"\0")[0].decode(errors="replace"),
                        bytes(buf[16:48]).split(b"\0")[0].decode(errors="replace"))  # fmt: skip
        caps, device_caps = struct.unpack_from("<II", buf, 84)
        if caps & _V4L2_CAP_DEVICE_CAPS:
            caps = device_caps
        formats: list[str] = []
        for index in range(64):
            req = struct.pack("<II", index, _V4L2_BUF_TYPE_VIDEO_CAPTURE) + bytes(56)
            try:
                out = ioctl(fd, _VIDIOC_ENUM_FMT, req)
            except OSError:
                break  # EINVAL: no more formats
            (code,) = struct.unpack_from("<I", out, 44)
            name = fourcc_to_str(code)
            if name:
                formats.append(name)
        return V4l2Info(card=card, driver=driver, can_capture=bool(caps & _V4L2_CAP_VIDEO_CAPTURE),
                        formats=tuple(formats))
    finally:
        os.close(fd)


def device_users(path: str) -> list[str]:
    """``"pid (command)"`` of other processes holding ``path`` open (from /proc; only those we may inspect)."""
    users: list[str] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return users
    try:
        target = os.path.realpath(path)
    except OSError:
        return users
    me = os.getpid()
    for d in proc.iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            for fd in (d / "fd").iterdir():
                if os.readlink(fd) == target:
                    comm = (d / "comm").read_text().strip()
                    users.append(f"pid {d.name} ({comm})")
                    break
        except OSError:
            continue
    return users


def shape_frame(img: np.ndarray, layout: PixelLayout, name: str = "camera") -> np.ndarray:
    """View what OpenCV returned as the array ``layout`` describes (no copy when it already is).

    With ``CAP_PROP_CONVERT_RGB`` off, OpenCV's V4L2 backend returns most raw codes as one (1, bytesused) uint8
    row (``Y16 ``/``Y10 ``: (H, W) uint16, ``GREY``: (H, W) uint8); lines may be padded to a larger stride.

    Returns:
        BAYER8: (H, W) uint8; BAYER16: (H, W) uint16 (little-endian samples); RAW10/RAW12: (H, stride) uint8;
        BGR: the image as is.

    Raises:
        CaptureError: the buffer does not hold ``H`` lines of at least the layout's line length.
    """
    h, w = layout.height, layout.width
    if layout.format is PixelFormat.BGR:
        if img.ndim != 3 or img.shape[2] != 3:
            raise CaptureError(f"{name}: expected a BGR image, got shape {img.shape}")
        return img
    want = np.uint16 if layout.format is PixelFormat.BAYER16 else np.uint8
    if img.shape == (h, w) and img.dtype == want:
        return img
    flat = np.ascontiguousarray(img).reshape(-1).view(np.uint8)
    if h <= 0 or flat.size % h:
        raise CaptureError(f"{name}: a frame of {flat.size} bytes is not {h} whole lines")
    stride = flat.size // h
    lines = flat.reshape(h, stride)
    if layout.format is PixelFormat.BAYER8:
        if stride < w:
            raise CaptureError(f"{name}: {stride} bytes per line for a {w}-pixel 8-bit line")
        return lines[:, :w]
    if layout.format is PixelFormat.BAYER16:
        if stride < 2 * w or stride % 2:
            raise CaptureError(f"{name}: {stride} bytes per line for a {w}-pixel 16-bit line")
        return lines.view("<u2")[:, :w]
    need = -(-w // 4) * 5 if layout.format is PixelFormat.RAW10 else -(-w // 2) * 3
    if stride < need:
        raise CaptureError(f"{name}: {stride} bytes per line for a {w}-pixel {layout.format.value} line "
                           f"(needs {need})")
    return lines


# -- OpenCV device ------------------------------------------------------------------------------------------------


@contextmanager
def _quiet_opencv(cv2, *, stderr: bool):
    """Silence OpenCV's log while it probes a device; with ``stderr`` also fd 2, because its V4L2 backend writes
    there directly (perror). Only the caller knows whether fd 2 may be borrowed (no other thread printing)."""
    old = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    saved = None
    if stderr:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:
            saved = None
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        cv2.utils.logging.setLogLevel(old)


class CameraDevice:
    """A camera (or a video file / URL standing in for one) read through OpenCV ``VideoCapture``.

    Args:
        spec: ``--camera`` value or a parsed :class:`CameraSpec` (not ``fake``: see :func:`open_device`).
        width, height: requested frame size (both or neither); the driver may pick another (see ``layout``).
        fps: requested frame rate; the negotiated one is ``fps``.
        fourcc: requested pixel format (``'pRAA'``, ``'Y16 '``, ``'MJPG'``, ...); it must be offered, else
            CaptureError listing what is.
        raw: look for a raw Bayer format (default). False: let OpenCV convert to BGR.
        mono_is_bayer: a mono raw format (``Y16 ``/``GREY``) carries a Bayer mosaic (the user gave ``--cfa``).
        pace: files only: deliver frames at the file's frame rate, like a camera (default True).
        quiet_stderr: also silence fd 2 while opening (only safe when no other thread writes to stderr).

    ``read`` and ``close`` belong to one thread at a time (the live source's reader thread once it runs).
    """

    def __init__(
        self,
        spec: str | int | CameraSpec,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        raw: bool = True,
        mono_is_bayer: bool = False,
        pace: bool = True,
        quiet_stderr: bool = False,
    ) -> None:
        import cv2

        self._cv2 = cv2
        self.spec = spec if isinstance(spec, CameraSpec) else parse_camera_spec(spec)
        if self.spec.kind is SpecKind.FAKE:
            raise ConfigError("fake cameras are FakeBayerDevice; use open_device()")
        if (width is None) != (height is None):
            raise ConfigError("give both the camera width and height, or neither")
        self.name = self.spec.label
        self.finite = self.spec.kind is SpecKind.FILE
        self.requested = {"width": width, "height": height, "fps": fps, "fourcc": fourcc}
        self.card = ""
        self._pace = pace and self.finite
        self._cap = None
        self._closed = False
        self._t0_ns: int | None = None
        self._n_read = 0
        fourcc = normalize_fourcc(fourcc) if fourcc and not self.finite else None  # a file's format is its own

        path = self._device_path()
        info = None
        if path is not None:
            self._check_node(path)
            info = query_v4l2(path)
            if info is not None:
                self.card = info.card
                if not info.can_capture:
                    raise CaptureError(f"{self.name}: {path} ({info.card}) is not a video capture node (UVC cameras "
                                       "also create metadata nodes: try the next index)")
                if fourcc and info.formats and fourcc not in info.formats:
                    raise CaptureError(f"{self.name}: format '{fourcc}' is not offered; {info.card or path} offers: "
                                       + ", ".join(f"'{f}'" for f in info.formats))
        elif self.finite and not Path(self.spec.text).exists():
            raise CaptureError(f"{self.name}: no such device or file")

        target = self.spec.value
        if self.spec.kind is SpecKind.INDEX and sys.platform.startswith("linux"):
            api = cv2.CAP_V4L2
        elif self.spec.kind is SpecKind.DEVICE:
            api = cv2.CAP_V4L2
        elif self.spec.kind in (SpecKind.FILE, SpecKind.URL):
            api = cv2.CAP_FFMPEG
        else:
            api = cv2.CAP_ANY
        params: list[int] = []
        if self.spec.kind is SpecKind.URL:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        with _quiet_opencv(cv2, stderr=quiet_stderr):
            cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
            if not cap.isOpened():
                cap.release()
                raise CaptureError(self._why_not_opened(path))
            self._cap = cap
            try:
                self.layout, self.fps = self._negotiate(info, width, height, fps, fourcc, raw, mono_is_bayer)
            except BaseException:
                self.close()
                raise

    # -- open helpers ---------------------------------------------------------------------------------------------
    def _device_path(self) -> str | None:
        if self.spec.kind is SpecKind.INDEX and sys.platform.startswith("linux"):
            return f"/dev/video{self.spec.value}"
        if self.spec.kind is SpecKind.DEVICE:
            return str(self.spec.value)
        return None

    def _check_node(self, path: str) -> None:
        if not os.path.exists(path):
            raise CaptureError(f"{self.name}: no such device ({path} does not exist)")
        if not os.access(path, os.R_OK | os.W_OK):
            raise CaptureError(f"{self.name}: permission denied on {path} (add your user to the 'video' group)")

    def _why_not_opened(self, path: str | None) -> str:
        if path is not None:
            users = device_users(path)
            if users:
                return f"{self.name}: busy: {path} is in use by {', '.join(users)}"
            try:
                os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    return f"{self.name}: busy ({path} is in use by another program)"
                return f"{self.name}: cannot open {path}: {exc.strerror}"
            return (f"{self.name}: cannot start capturing from {path} (busy in another program, or no pixel format "
                    "OpenCV can read)")
        if self.spec.kind is SpecKind.URL:
            return f"{self.name}: cannot open the stream (unreachable, or not a video stream)"
        return f"{self.name}: cannot open (not a video file OpenCV/FFmpeg can read)"

    def _negotiate(self, info: V4l2Info | None, width, height, fps, fourcc, raw: bool,
                   mono_is_bayer: bool) -> tuple[PixelLayout, float]:
        cv2, cap = self._cv2, self._cap
        is_v4l2 = self._device_path() is not None
        if fourcc is None and raw and is_v4l2 and info is not None:
            fourcc = pick_raw_fourcc(list(info.formats), mono_is_bayer=mono_is_bayer)
        raw_code = fourcc if fourcc in V4L2_RAW_FOURCCS else None
        if raw_code is not None:
            # Bytes untouched: OpenCV would otherwise demosaic (or scale Y16 down to 8 bits) on its own.
            cap.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        if fourcc is not None and not self.finite:
            ok = cap.set(cv2.CAP_PROP_FOURCC, fourcc_to_int(fourcc))
            got = fourcc_to_str(cap.get(cv2.CAP_PROP_FOURCC))
            if not ok or (got and got != fourcc):
                offered = ", ".join(f"'{f}'" for f in info.formats) if info and info.formats else "unknown"
                raise CaptureError(f"{self.name}: format '{fourcc}' not accepted by the driver (offers: {offered})")
        if width is not None and not self.finite:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
        if fps is not None and not self.finite:
            cap.set(cv2.CAP_PROP_FPS, float(fps))
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(got_fps) and 0 < got_fps <= 1000):
            got_fps = float(fps or 30.0)
        got_code = fourcc_to_str(cap.get(cv2.CAP_PROP_FOURCC))
        if raw_code is not None:
            fmt, bits, cfa = V4L2_RAW_FOURCCS[raw_code]
            layout = PixelLayout(fmt, w, h, bits, cfa, raw_code)
        else:
            layout = PixelLayout(PixelFormat.BGR, w, h, 8, None, got_code)
        if w <= 0 or h <= 0:
            # Some backends report 0 until the first frame: read one to learn the size.
            ok, img = cap.read()
            if not ok or img is None:
                raise CaptureError(f"{self.name}: opened but delivers no frames")
            layout = replace(layout, width=img.shape[1], height=img.shape[0])
        return layout, got_fps

    # -- reading ----------------------------------------------------------------------------------------------------
    def read(self) -> tuple[np.ndarray, int] | None:
        """Block until the next frame; return ``(array, t_ns)`` owned by the caller, or None at a file's end.

        ``array`` is shaped per :attr:`layout`: (H, W) uint8/uint16 mosaic, (H, stride) uint8 packed, or
        (H, W, 3) uint8 BGR. ``t_ns`` is ``time.monotonic_ns()`` when the frame was captured: the driver's buffer
        timestamp on V4L2 when it is on the monotonic clock (it is for UVC and most drivers), else when it reached
        us.

        Raises:
            CaptureError: the device failed (unplugged, stream broken) or is closed.
        """
        if self._closed or self._cap is None:
            raise CaptureError(f"{self.name}: closed")
        cap = self._cap
        if self._pace:
            self._wait_for_slot()
        if not cap.grab():
            if self.finite:
                return None
            raise CaptureError(f"{self.name}: no frame (unplugged or stream broken)")
        t_ns = time.monotonic_ns()
        ok, img = cap.retrieve()
        if not ok or img is None:
            if self.finite:
                return None
            raise CaptureError(f"{self.name}: frame could not be retrieved")
        if self._device_path() is not None:
            t_ns = self._driver_timestamp(t_ns)
        self._n_read += 1
        return self._shape(img), t_ns

    def _wait_for_slot(self) -> None:
        now = time.monotonic_ns()
        if self._t0_ns is None:
            self._t0_ns = now
        due = self._t0_ns + round(self._n_read * 1e9 / self.fps)
        if due > now:
            time.sleep((due - now) / 1e9)

    def _driver_timestamp(self, now_ns: int) -> int:
        ms = self._cap.get(self._cv2.CAP_PROP_POS_MSEC)
        t = int(ms * 1e6) if ms and math.isfinite(ms) else 0
        return t if 0 <= now_ns - t < 2_000_000_000 else now_ns

    def _shape(self, img: np.ndarray) -> np.ndarray:
        if self.layout.format is PixelFormat.BGR and img.ndim == 2:
            img = self._cv2.cvtColor(img, self._cv2.COLOR_GRAY2BGR)
        return shape_frame(img, self.layout, self.name)

    def describe(self) -> str:
        card = f" ({self.card})" if self.card else ""
        return f"{self.name}{card}: {self.layout.describe()} @ {self.fps:g} fps"

    def close(self) -> None:
        """Release the device. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> CameraDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CameraDevice({self.spec.text!r})"


# -- fake sensor ---------------------------------------------------------------------------------------------------


def pack_raw10(px: np.ndarray) -> np.ndarray:
    """(H, W) uint16 codes 0..1023 -> (H, ceil(W/4)*5) uint8 MIPI RAW10 (what ``kernels.unpack_raw10`` reads)."""
    h, w = px.shape
    g = -(-w // 4)
    p = np.zeros((h, 4 * g), np.uint16)
    p[:, :w] = px
    p = p.reshape(h, g, 4)
    out = np.empty((h, g, 5), np.uint8)
    out[:, :, :4] = (p >> 2).astype(np.uint8)
    out[:, :, 4] = ((p[:, :, 0] & 3) | ((p[:, :, 1] & 3) << 2) | ((p[:, :, 2] & 3) << 4) | ((p[:, :, 3] & 3) << 6))
    return out.reshape(h, 5 * g)


def pack_raw12(px: np.ndarray) -> np.ndarray:
    """(H, W) uint16 codes 0..4095 -> (H, ceil(W/2)*3) uint8 MIPI RAW12 (what ``kernels.unpack_raw12`` reads)."""
    h, w = px.shape
    g = -(-w // 2)
    p = np.zeros((h, 2 * g), np.uint16)
    p[:, :w] = px
    p = p.reshape(h, g, 2)
    out = np.empty((h, g, 3), np.uint8)
    out[:, :, :2] = (p >> 4).astype(np.uint8)
    out[:, :, 2] = (p[:, :, 0] & 15) | ((p[:, :, 1] & 15) << 4)
    return out.reshape(h, 3 * g)


class FakeBayerDevice:
    """A synthetic sensor delivering dark, noisy Bayer frames at a fixed rate (tests, demos, benchmarks).

    Frames are :class:`~redi_stream.capture.SyntheticSource` frames of scikit-image's ``coffee`` photo (ratio
    ``ratio`` darker, 12-bit levels black 256 / white 4095 by default), ``patterns`` of them made once at open and
    then played forwards and backwards, in the format ``fourcc`` (any Bayer code of :data:`V4L2_RAW_FOURCCS`,
    including MIPI-packed ``pRAA``/``pRCC``; or ``"bgr"``: the clean photo as 8-bit BGR, like a webcam).

    ``read`` is rate-limited like a sensor: frame ``n`` is captured at ``t0 + n / fps`` (its ``t_ns``); a reader
    that falls behind gets the newest frame already captured and the skipped ones are counted in
    ``frames_missed`` (a sensor does not wait). The last frame's sequence number is ``last_seq``. ``unplug_after``
    makes ``read`` fail (CaptureError) after that many frames, for fault tests. ``clock``/``sleep`` are injectable
    (``time.monotonic_ns`` / ``time.sleep``).
    """

    finite = False

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        fps: float = 30.0,
        *,
        fourcc: str = "RG12",
        ratio: float = 60.0,
        patterns: int = 16,
        seed: int = 0,
        unplug_after: int | None = None,
        name: str | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from .synthetic import SyntheticSource, demo_image, image_to_float, resize_cover

        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ConfigError(f"fake camera size must be even and >= 2, got {width}x{height}")
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise ConfigError(f"fake camera fps must be in (0, 1000], got {fps}")
        if patterns < 1:
            raise ConfigError(f"patterns must be >= 1, got {patterns}")
        self.fps = float(fps)
        self.name = name or f"fake camera {width}x{height}@{fps:g}"
        self.unplug_after = unplug_after
        self._clock, self._sleep = clock, sleep
        self.frames_missed = 0
        self.last_seq = -1
        self._seq = 0
        self._t0_ns: int | None = None
        self._closed = False

        if fourcc.lower() == "bgr":
            srgb = resize_cover(image_to_float(demo_image()), (height, width))
            bgr = np.ascontiguousarray((srgb[:, :, ::-1] * 255.0 + 0.5).astype(np.uint8))
            self.layout = PixelLayout(PixelFormat.BGR, width, height, 8, None, "BGR3")
            frames = [bgr]
        else:
            code = normalize_fourcc(fourcc)
            if code not in V4L2_RAW_FOURCCS or code in MONO_FOURCCS:
                raise ConfigError(f"fake camera format {fourcc!r}; valid: bgr or a Bayer FOURCC, e.g. RG12, pRAA")
            fmt, bits, cfa = V4L2_RAW_FOURCCS[code]
            white = float(2**bits - 1)
            black = float(round(white / 16))  # 256 for 12 bits, 64 for 10: typical sensor pedestals
            src = SyntheticSource(demo_image(), n_frames=patterns, size=(height, width), ratio=ratio, seed=seed,
                                  cfa=cfa, fps=fps, white=white, black=black,
                                  gain_dn_per_e=max(white / 16383 * 2.0, 0.05))  # fmt: skip
            self.layout = PixelLayout(fmt, width, height, bits, cfa, code, black, white, src.meta.wb_gains)
            frames = []
            for i in range(patterns):
                data = src.read(i).data
                if fmt is PixelFormat.BAYER8:
                    data = data.astype(np.uint8)
                elif fmt is PixelFormat.RAW10:
                    data = pack_raw10(data)
                elif fmt is PixelFormat.RAW12:
                    data = pack_raw12(data)
                data.setflags(write=False)
                frames.append(data)
        # Forwards then backwards: a smooth back-and-forth pan with no jump.
        self._frames = frames + frames[-2:0:-1]

    @classmethod
    def from_spec(cls, spec: CameraSpec, *, width: int | None = None, height: int | None = None,
                  fps: float | None = None, fourcc: str | None = None, **kw) -> FakeBayerDevice:
        """A fake device for a ``fake:...`` spec; explicit width/height/fps/fourcc override the spec's."""
        h, w = spec.fake_size or (720, 1280)
        if width is not None and height is not None:
            w, h = int(width), int(height)
        return cls(w, h, float(fps or spec.fake_fps or 30.0), fourcc=fourcc or spec.fake_fourcc or "RG12",
                   name=spec.label, **kw)

    def read(self) -> tuple[np.ndarray, int]:
        """Wait for the next frame slot; return a copy of the frame (owned by the caller) and its time."""
        if self._closed:
            raise CaptureError(f"{self.name}: closed")
        if self.unplug_after is not None and self._seq >= self.unplug_after:
            raise CaptureError(f"{self.name}: no frame (unplugged)")
        now = self._clock()
        if self._t0_ns is None:
            self._t0_ns = now
        period = 1e9 / self.fps
        due = self._t0_ns + round(self._seq * period)
        if due > now:
            self._sleep((due - now) / 1e9)
        elif now - due >= period:
            missed = int((now - due) // period)
            self._seq += missed
            self.frames_missed += missed
        seq = self._seq
        self._seq += 1
        self.last_seq = seq
        # The frame's own slot time: a late reader sees how long it sat in the sensor's buffer.
        t_ns = self._t0_ns + round(seq * period)
        return self._frames[seq % len(self._frames)].copy(), t_ns

    def describe(self) -> str:
        return f"{self.name}: {self.layout.describe()} @ {self.fps:g} fps (synthetic)"

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> FakeBayerDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PipeDevice:
    """Headerless raw frames piped in by a capture program (``--camera -``): frame after frame of exactly one
    layout, as ``v4l2-ctl --stream-to=-`` or a camera SDK's sample writes them.

    Args:
        width, height: frame size in pixels (required: a pipe says nothing about its frames).
        fourcc: their layout, any raw code of :data:`V4L2_RAW_FOURCCS`: ``RG12`` (16-bit samples holding 12 bits,
            RGGB), ``pRAA`` (MIPI-packed 10-bit), ``Y16`` (16-bit samples, pattern from ``--cfa``), ...; default
            ``Y16`` for ``dtype`` ``<u2`` and ``GREY`` (8-bit) for ``u1``.
        fps: the rate the program delivers (default 30): frame ``k`` is stamped ``k / fps``. A pipe is read at the
            reader's pace (a writer ahead of it waits), so arrival times say nothing about capture times.
        fd: the file descriptor to read (standard input).

    ``read`` blocks until a whole frame has arrived; at the end of the stream it returns None (a stream that ends
    inside a frame is said so once). ``finite``: an error or the end of the stream stops the run, with no
    reconnecting.
    """

    finite = True

    def __init__(self, width: int | None, height: int | None, *, fourcc: str | None = None, dtype: str = "<u2",
                 fps: float | None = None, fd: int = 0) -> None:
        self.name = "standard input"
        if width is None or height is None:
            raise ConfigError("--camera - reads headerless raw frames from standard input: give their size "
                              "(--raw-width, --raw-height) and layout (--fourcc RG12, pRAA, ..., or --cfa)")
        if os.isatty(fd):
            raise ConfigError("--camera -: standard input is a terminal; pipe raw frames into it (capture-program | "
                              "redi-stream --camera - --raw-width W --raw-height H ...)")
        if fourcc is None and dtype not in ("<u2", "u1"):
            raise ConfigError(f"--camera -: samples {dtype!r} are not read from a pipe; valid: <u2, u1, or a --fourcc")
        code = normalize_fourcc(fourcc) if fourcc else ("GREY" if dtype == "u1" else "Y16 ")
        if code not in V4L2_RAW_FOURCCS:
            raise ConfigError(f"--camera -: format {fourcc!r} is not a raw Bayer layout; valid: "
                              + ", ".join(sorted(c.strip() for c in V4L2_RAW_FOURCCS)))
        fmt, bits, cfa = V4L2_RAW_FOURCCS[code]
        self.layout = PixelLayout(fmt, int(width), int(height), bits, cfa, code)
        self.fps = float(fps) if fps else 30.0
        self._fps_given = fps is not None
        line = {PixelFormat.BAYER8: width, PixelFormat.BAYER16: 2 * width, PixelFormat.RAW10: -(-width // 4) * 5,
                PixelFormat.RAW12: -(-width // 2) * 3}[fmt]
        self._line = line
        self.frame_bytes = line * height
        self._fd = fd
        self._closed = False
        self.frames_read = 0

    def read(self) -> tuple[np.ndarray, int] | None:
        """The next whole frame (an array the caller owns, as :func:`shape_frame` lays it out) and its time
        (``k / fps``); None at the end of the stream."""
        if self._closed:
            raise CaptureError(f"{self.name}: closed")
        buf = bytearray(self.frame_bytes)
        view = memoryview(buf)
        got = 0
        while got < self.frame_bytes:
            try:
                n = os.readv(self._fd, [view[got:]])
            except OSError as exc:
                raise CaptureError(f"{self.name}: {exc.strerror or exc}") from exc
            if n == 0:
                break
            got += n
        if got < self.frame_bytes:
            if got:
                log.warning("%s: the stream ended inside frame %d (%d of %d bytes); that part is dropped", self.name,
                            self.frames_read, got, self.frame_bytes)
            return None
        t_ns = round(self.frames_read * 1e9 / self.fps)
        self.frames_read += 1
        lines = np.frombuffer(buf, np.uint8).reshape(self.layout.height, self._line)
        if self.layout.format is PixelFormat.BAYER16:
            return lines.view("<u2"), t_ns
        return lines, t_ns

    def describe(self) -> str:
        rate = f"{self.fps:g} fps" + ("" if self._fps_given else " (say --fps if the program runs at another)")
        return f"{self.name}: {self.layout.describe()}, {self.frame_bytes} bytes a frame, {rate}"

    def close(self) -> None:
        self._closed = True  # standard input belongs to the process: left open

    def __enter__(self) -> PipeDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_device(spec: str | int | CameraSpec, *, width: int | None = None, height: int | None = None,
                fps: float | None = None, fourcc: str | None = None, raw: bool = True, mono_is_bayer: bool = False,
                quiet_stderr: bool = False, dtype: str = "<u2") -> CameraDevice | FakeBayerDevice | PipeDevice:
    """Open the device a ``--camera`` value names (``fake:...`` -> :class:`FakeBayerDevice`, ``-`` ->
    :class:`PipeDevice` with ``dtype`` its default sample type)."""
    spec = spec if isinstance(spec, CameraSpec) else parse_camera_spec(spec)
    if spec.kind is SpecKind.STDIN:
        return PipeDevice(width, height, fourcc=fourcc, dtype=dtype, fps=fps)
    if spec.kind is SpecKind.FAKE:
        return FakeBayerDevice.from_spec(spec, width=width, height=height, fps=fps, fourcc=fourcc)
    return CameraDevice(spec, width=width, height=height, fps=fps, fourcc=fourcc, raw=raw,
                        mono_is_bayer=mono_is_bayer, quiet_stderr=quiet_stderr)
