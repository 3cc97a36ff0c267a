"""The live camera source: a device read on its own thread, turned into RawFrames for the pipeline.

Threads and hand-offs::

    redi-camera    reads the device (``capture.camera``) as fast as it delivers, stamps nothing itself (the device
                   gives ``t_ns``), and puts ``(array, t_ns, seq, layout)`` into a 1-slot ``DROP_OLDEST`` mailbox:
                   the driver's queue is always drained at the sensor's rate, so a frame never waits in a kernel
                   buffer while the network is busy, and the newest frame always replaces an unread older one
                   (counted in :attr:`CameraSource.frames_dropped`).
    redi-capture   (the pipeline's) iterates :meth:`CameraSource.iter_frames`: takes the newest frame from the
                   mailbox and converts it -- unpack MIPI RAW10/12 (``kernels.unpack_raw10/12``), widen 8-bit
                   mosaics, or re-mosaic processed RGB (``kernels.mosaic_rgb``) -- into a ``RawFrame`` whose
                   ``t_ns`` is the device's capture time (``time.monotonic_ns`` clock; ``timestamps_monotonic``
                   tells the pipeline to measure latency from it). Its own capture->infer channel is also
                   ``DROP_OLDEST``.

Why a reader thread of our own rather than reading on ``redi-capture``: conversion (unpacking a 12 MP RAW10 frame
takes ~10 ms here) would otherwise sit between two device reads, and a V4L2 driver keeps up to four filled buffers
when the application falls behind -- frames that are already old when read. Reading on a thread that does nothing
else keeps the capture timestamp honest and the latency bounded by one frame in the mailbox.

Faults. A device that fails mid-stream (unplugged, network stream broken) is closed and reopened with exponential
backoff (0.1 s doubling to 2 s) for up to ``reconnect_s`` seconds; frames resume with the next sequence number. If
it does not come back, the reader stores a :class:`CaptureError` ("... not back within 10 s") and ends the
mailbox; ``iter_frames`` raises it on ``redi-capture``, so the pipeline stops as for any capture failure: frames
already enhanced are encoded and the recording is finalised. A video file used as a camera ends the stream at its
end. ``iter_frames(stop)`` returns within ~50 ms of ``stop`` being set, whatever the device is doing.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import kernels
from ..capture.camera import (
    CameraSpec,
    FakeBayerDevice,
    PixelFormat,
    PixelLayout,
    SpecKind,
    open_device,
    parse_camera_spec,
)
from ..capture.colour import srgb_to_linear
from ..errors import CaptureError, ConfigError, FrameError
from ..frames import CFA, IDENTITY_3x3, RawFrame, RawMeta, frames_text
from .channels import END, Channel, Policy
from .stats import RateMeter

log = logging.getLogger(__name__)

REMOSAIC_WHITE = 65535.0
"""Raw range of re-mosaicked RGB: linear light 0..1 scaled to 0..65535 DN, black 0."""

_POLL_S = 0.05
_JOIN_S = 2.0


def remosaic_warning(name: str) -> str:
    """The one-line warning a processed-RGB camera gets (logged once per run by the pipeline)."""
    return (f"{name} delivers processed RGB, not raw Bayer: re-mosaicking it (sRGB -> linear -> RGGB, identity "
            "colour); its own denoising, compression, tone curve and 8-bit rounding cannot be undone, so expect "
            "less than from a raw sensor")


class FrameConverter:
    """Device output of one :class:`PixelLayout` -> (H, W) uint16 mosaic + the frames' :class:`RawMeta`.

    Args:
        layout: what the device delivers.
        name: device name for messages and ``RawMeta.camera``.
        cfa, black, white: the user's ``--cfa``/``--black``/``--white`` (None: the device's statement, else a
            fallback with a warning in ``meta.warnings``).

    Called on one thread (``redi-capture``); owns its scratch buffers (re-mosaic only).
    """

    def __init__(self, layout: PixelLayout, name: str, *, cfa: CFA | str | None = None, black: float | None = None,
                 white: float | None = None) -> None:
        self.layout = layout
        h, w = layout.height, layout.width
        warnings: list[str] = []
        if layout.format is PixelFormat.BGR:
            if cfa is not None or black is not None or white is not None:
                warnings.append(f"{name} delivers processed RGB: --cfa/--black/--white do not apply")
            cfa_, black_, white_ = CFA.RGGB, 0.0, REMOSAIC_WHITE
            wb = (1.0, 1.0, 1.0)
            warnings.insert(0, remosaic_warning(name))
            # sRGB code -> linear DN, once; per frame it is a gather and a mosaic.
            self._lut = (srgb_to_linear(np.arange(256, dtype=np.float32) / np.float32(255.0))
                         * np.float32(REMOSAIC_WHITE)).astype(np.float32)  # fmt: skip
            self._lin = np.empty((h, w, 3), np.float32)
            self._mosaic = np.empty((h, w), np.float32)
        else:
            missing = []
            if cfa is not None:
                cfa_ = CFA(str(cfa).upper())
                if layout.cfa is not None and layout.cfa != cfa_:
                    warnings.append(f"--cfa {cfa_.value} overrides {name}'s stated {layout.cfa.value}")
            elif layout.cfa is not None:
                cfa_ = layout.cfa
            else:
                cfa_ = CFA.RGGB
                missing.append("Bayer pattern (assuming RGGB; pass --cfa)")
            if black is not None:
                black_ = float(black)
            elif layout.black_level is not None:
                black_ = float(layout.black_level)
            else:
                black_ = 0.0
                missing.append("black level (assuming 0; pass --black)")
            white_ = float(white if white is not None else
                           layout.white_level if layout.white_level is not None else 2**layout.bits - 1)
            if layout.wb_gains is not None:
                wb = tuple(float(g) for g in layout.wb_gains)  # type: ignore[assignment]
            else:
                wb = (1.0, 1.0, 1.0)
                missing.append("white balance (none applied)")
            if missing:
                warnings.append(f"{name} does not report its " + ", ".join(missing))
            if (h % 2 or w % 2) and layout.format.is_raw:
                warnings.append(f"{name}: odd frame size {w}x{h} for a Bayer mosaic")
        if not white_ > black_:
            raise ConfigError(f"{name}: white level {white_:g} must exceed the black level {black_:g} "
                              "(check --black/--white)")
        self.meta = RawMeta(cfa=cfa_, black_level=(black_,) * 4, white_level=white_,
                            wb_gains=wb,  # type: ignore[arg-type]
                            cam_to_srgb=IDENTITY_3x3.copy(), camera=name, warnings=tuple(warnings))

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        """Convert one device frame to a C-contiguous (H, W) uint16 array owned by the caller: a new array, or for
        16-bit containers the device's own array when it is already contiguous (``read()`` hands over a fresh
        array each time)."""
        lay = self.layout
        h, w = lay.height, lay.width
        fmt = lay.format
        if fmt is PixelFormat.BAYER16:
            if arr.shape != (h, w):
                raise ValueError(f"expected a {w}x{h} mosaic, got shape {arr.shape}")
            return np.ascontiguousarray(arr, dtype=np.uint16)
        if fmt is PixelFormat.BAYER8:
            if arr.shape != (h, w):
                raise ValueError(f"expected a {w}x{h} mosaic, got shape {arr.shape}")
            return arr.astype(np.uint16)
        if fmt is PixelFormat.RAW10 or fmt is PixelFormat.RAW12:
            out = np.empty((h, w), np.uint16)
            unpack = kernels.unpack_raw10 if fmt is PixelFormat.RAW10 else kernels.unpack_raw12
            return unpack(np.ascontiguousarray(arr), w, out)
        # Processed RGB (BGR order from OpenCV): sRGB -> linear DN by table, then one colour per pixel in RGGB.
        if arr.shape != (h, w, 3) or arr.dtype != np.uint8:
            raise ValueError(f"expected {w}x{h} BGR uint8, got {arr.dtype} {arr.shape}")
        np.take(self._lut, arr, out=self._lin)
        kernels.mosaic_rgb(self._lin[:, :, ::-1], CFA.RGGB, self._mosaic)
        self._mosaic += np.float32(0.5)
        return self._mosaic.astype(np.uint16)


@dataclass
class _Grab:
    """One device frame in the mailbox (owned by whoever holds it)."""

    array: np.ndarray
    t_ns: int
    seq: int
    layout: PixelLayout


class CameraSource:
    """A live camera as a pipeline source (``live = True``): frames from a device read on the ``redi-camera``
    thread.

    Args:
        open_device: opens (and reopens, after a failure) the device; raises CaptureError. Called once here, on
            the constructing thread, so a missing camera fails before anything starts.
        cfa, black, white: the user's overrides for sensors that do not report them (see :class:`FrameConverter`).
        reconnect_s: how long to keep trying to reopen a device that failed mid-stream (0: fail at once).
        backoff_s: (first, longest) wait between reopen attempts.

    Attributes (any thread may read them; they may be one frame stale):
        name, fps (negotiated), size (H, W), layout; frames_read, frames_dropped (mailbox), capture_fps
        (measured over the last second), reconnects.

    :meth:`iter_frames` may be called once (the pipeline's capture stage); :meth:`close` from the owner's thread,
    idempotent.
    """

    live = True
    timestamps_monotonic = True  # RawFrame.t_ns is time.monotonic_ns() at capture: latency is measured from it

    def __init__(
        self,
        open_device: Callable[[], Any],
        *,
        cfa: CFA | str | None = None,
        black: float | None = None,
        white: float | None = None,
        reconnect_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        if not reconnect_s >= 0:
            raise ConfigError(f"reconnect_s must be >= 0, got {reconnect_s}")
        self._open_device = open_device
        self._overrides = {"cfa": cfa, "black": black, "white": white}
        self.reconnect_s = float(reconnect_s)
        self.backoff_s = backoff_s
        self._device = open_device()
        self._device_lock = threading.Lock()
        self.name: str = self._device.name
        self.layout: PixelLayout = self._device.layout
        self.fps: float = float(self._device.fps)
        self.size = (self.layout.height, self.layout.width)
        self._converters: dict[PixelLayout, FrameConverter] = {}
        try:
            self._converter(self.layout)  # bad --black/--white fail now, not on the first frame
        except BaseException:
            self._device.close()
            raise
        # The hand-off: 1 slot, DROP_OLDEST -- the consumer always gets the newest frame.
        self._mailbox = Channel(f"{self.name}->capture", 1, Policy.DROP_OLDEST)
        self._rate = RateMeter(1.0)
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._iterated = False
        self._closed = False
        self.frames_read = 0
        self.frames_skipped_warming_up = 0
        self.startup_s = 0.0  # first device frame -> the pipeline ready for the second (see warmed_up)
        self._t_first_ns: int | None = None
        self.reconnects = 0

    # -- stats ---------------------------------------------------------------------------------------------------
    @property
    def frames_dropped(self) -> int:
        """Frames read from the device but replaced in the mailbox before the pipeline took them (after the
        enhancer's warm-up: those before are ``frames_skipped_warming_up``)."""
        return self._mailbox.dropped - self.frames_skipped_warming_up

    def warmed_up(self) -> None:
        """The pipeline's enhancer has warmed up on the first frame (it reads nothing meanwhile): the frames the
        mailbox replaced until now were skipped by design, not dropped because the pipeline fell behind. They
        include those of the first frame's conversion (kernel loading) before the pipeline took it; ``startup_s``
        is the whole span, from the device's first frame."""
        self.frames_skipped_warming_up = self._mailbox.dropped
        if self._t_first_ns is not None:
            self.startup_s = (time.monotonic_ns() - self._t_first_ns) / 1e9

    @property
    def capture_fps(self) -> float:
        """Device frames per second over the last second (0 until two frames arrived)."""
        return self._rate.fps

    @property
    def meta(self) -> RawMeta:
        return self._converter(self.layout).meta

    def describe(self) -> str:
        return self._device.describe()

    # -- iteration (redi-capture) --------------------------------------------------------------------------------
    def iter_frames(self, stop: threading.Event | None = None) -> Iterator[RawFrame]:
        """Start the reader and yield RawFrames until the device ends, fails for good, or ``stop`` is set.

        Raises:
            CaptureError: the device failed and did not come back within ``reconnect_s``.
            FrameError: a frame could not be converted (wrong size for the negotiated format).
        """
        if self._iterated:
            raise RuntimeError(f"{self.name}: iter_frames() may be called once")
        if self._closed:
            raise CaptureError(f"{self.name}: closed")
        self._iterated = True
        self._thread = threading.Thread(target=self._read_loop, name="redi-camera", daemon=True)
        self._thread.start()
        try:
            while stop is None or not stop.is_set():
                try:
                    grab = self._mailbox.get(timeout_s=_POLL_S)
                except TimeoutError:
                    continue
                if grab is END:
                    if self._error is not None:
                        raise self._error
                    return
                yield self._to_frame(grab)
        finally:
            self._stop_reader()

    def __iter__(self) -> Iterator[RawFrame]:
        return self.iter_frames()

    def _converter(self, layout: PixelLayout) -> FrameConverter:
        conv = self._converters.get(layout)
        if conv is None:
            conv = self._converters[layout] = FrameConverter(layout, self.name, **self._overrides)
        return conv

    def _to_frame(self, grab: _Grab) -> RawFrame:
        conv = self._converter(grab.layout)
        try:
            data = conv(grab.array)
        except ValueError as exc:
            raise FrameError(f"frame {grab.seq} ({self.name}): {exc}", index=grab.seq, name=self.name) from exc
        return RawFrame(data=data, meta=conv.meta, index=grab.seq, t_ns=grab.t_ns, name=self.name)

    # -- reader (redi-camera) ------------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        seq = 0
        try:
            while not self._quit.is_set():
                dev = self._device
                try:
                    got = dev.read()
                except CaptureError as exc:
                    if self._quit.is_set():
                        break
                    if getattr(dev, "finite", False) or self.reconnect_s <= 0:
                        raise
                    if not self._reconnect(exc):
                        break
                    continue
                if got is None:  # a video file standing in for a camera has ended
                    break
                arr, t_ns = got
                seq = max(seq, getattr(dev, "last_seq", seq))  # the fake sensor numbers its frames (misses show)
                self._rate.tick()
                if self._t_first_ns is None:
                    self._t_first_ns = time.monotonic_ns()
                self.frames_read += 1
                self._mailbox.put(_Grab(arr, t_ns, seq, dev.layout))
                seq += 1
        except BaseException as exc:  # noqa: BLE001 -- carried to redi-capture, re-raised there
            self._error = exc
        finally:
            self._mailbox.close()

    def _reconnect(self, exc: CaptureError) -> bool:
        """Reopen the device with backoff. True: reopened; False: asked to quit. Raises when time is up."""
        log.warning("%s; reconnecting for up to %g s", exc, self.reconnect_s)
        with self._device_lock:
            self._device.close()
        t0 = time.monotonic()
        delay, longest = self.backoff_s
        last: BaseException = exc
        while True:
            left = self.reconnect_s - (time.monotonic() - t0)
            if left <= 0:
                raise CaptureError(f"{self.name}: lost ({exc}) and not back within {self.reconnect_s:g} s") from last
            if self._quit.wait(min(delay, left)):
                return False
            try:
                dev = self._open_device()
            except CaptureError as e:
                last = e
                delay = min(delay * 2, longest)
                continue
            with self._device_lock:
                self._device = dev
            self.reconnects += 1
            if dev.layout != self.layout:
                log.warning("%s: reconnected as %s (was %s)", self.name, dev.layout.describe(), self.layout.describe())
                self.layout = dev.layout
                self.size = (dev.layout.height, dev.layout.width)
            log.warning("%s: reconnected after %.1f s", self.name, time.monotonic() - t0)
            return True

    def _stop_reader(self) -> None:
        self._quit.set()
        self._mailbox.cancel()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(_JOIN_S)
            if t.is_alive():
                log.error("thread redi-camera did not stop within %.1f s (device read blocked); left running", _JOIN_S)

    # -- lifetime ----------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the reader (if running) and release the device. Idempotent.

        If the reader is stuck in a device read it is left running (daemon) and the device is not released from
        this thread (that would race the read).
        """
        if self._closed:
            return
        self._closed = True
        self._stop_reader()
        t = self._thread
        if t is not None and t.is_alive():
            return
        with self._device_lock:
            self._device.close()

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CameraSource({self.name!r}, {self.layout.describe()} @ {self.fps:g} fps)"


class PipeSource:
    """Headerless raw frames piped in (``--camera -``, :class:`~redi_stream.capture.camera.PipeDevice`) as a
    source that loses nothing: read on ``redi-capture`` at the pipeline's pace, so a program writing faster waits
    at the pipe (a recording replayed with ``cat`` gives every frame), stamped ``k / fps``. Not live: the pipeline
    blocks instead of dropping, and does not skip frames while it warms up.

    Args:
        device: the opened :class:`PipeDevice`. cfa, black, white: see :class:`FrameConverter`.
    """

    live = False

    def __init__(self, device: Any, *, cfa: CFA | str | None = None, black: float | None = None,
                 white: float | None = None) -> None:
        self._device = device
        self.name = device.name
        self.layout = device.layout
        self.fps = float(device.fps)
        self.size = (self.layout.height, self.layout.width)
        self._converter = FrameConverter(self.layout, self.name, cfa=cfa, black=black, white=white)
        self.meta = self._converter.meta

    def describe(self) -> str:
        return self._device.describe()

    def iter_frames(self, stop: threading.Event | None = None) -> Iterator[RawFrame]:
        """Frames until the stream ends (or ``stop`` is set). Raises CaptureError / FrameError naming the input."""
        k = 0
        while stop is None or not stop.is_set():
            got = self._device.read()
            if got is None:
                return
            arr, t_ns = got
            try:
                data = self._converter(arr)
            except ValueError as exc:
                raise FrameError(f"frame {k} ({self.name}): {exc}", index=k, name=self.name) from exc
            yield RawFrame(data=data, meta=self.meta, index=k, t_ns=t_ns, name=self.name)
            k += 1

    def __iter__(self) -> Iterator[RawFrame]:
        return self.iter_frames()

    def close(self) -> None:
        self._device.close()

    def __enter__(self) -> PipeSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_camera(
    spec: str | int | CameraSpec,
    *,
    raw: Any = None,
    fps: float | None = None,
    fourcc: str | None = None,
    reconnect_s: float = 10.0,
) -> CameraSource:
    """Open ``--camera`` as a live source and log what was negotiated (and what was asked for, if it differs).

    Args:
        spec: index, ``/dev/video*``, URL, video file, or ``fake:720p30`` (see ``capture.camera.CameraSpec``).
        raw: the CLI's raw layout (``width``, ``height``, ``cfa``, ``black``, ``white`` attributes, each may be
            None): requested size and the sensor facts a device does not report.
        fps: requested frame rate. fourcc: requested pixel format (e.g. ``pRAA``, ``Y16``, ``MJPG``).
        reconnect_s: see :class:`CameraSource`.

    Raises:
        CaptureError: one line naming the device (no such device, busy, unsupported format, ...).
    """
    parsed = spec if isinstance(spec, CameraSpec) else parse_camera_spec(spec)
    width = getattr(raw, "width", None)
    height = getattr(raw, "height", None)
    cfa = getattr(raw, "cfa", None)
    if parsed.kind is SpecKind.STDIN:
        pipe = PipeSource(open_device(parsed, width=width, height=height, fps=fps, fourcc=fourcc,
                                      dtype=getattr(raw, "dtype", "<u2")),
                          cfa=cfa, black=getattr(raw, "black", None), white=getattr(raw, "white", None))
        log.info("%s", pipe.describe())
        return pipe
    opener = functools.partial(open_device, parsed, width=width, height=height, fps=fps, fourcc=fourcc,
                               mono_is_bayer=cfa is not None)
    # The first open runs before any thread of ours: OpenCV's direct stderr chatter can be silenced.
    first = [True]

    def open_once():
        if first[0]:
            first[0] = False
            return opener(quiet_stderr=True)
        return opener()

    src = CameraSource(open_once, cfa=cfa, black=getattr(raw, "black", None), white=getattr(raw, "white", None),
                       reconnect_s=0.0 if parsed.kind is SpecKind.FILE else reconnect_s)
    log.info("%s", src.describe())
    asked = []
    if width is not None and (width, height) != (src.layout.width, src.layout.height):
        asked.append(f"{width}x{height}")
    if fps is not None and abs(fps - src.fps) > 0.01 * fps:
        asked.append(f"{fps:g} fps")
    if asked:
        log.warning("%s: asked for %s; the device gives %dx%d @ %g fps", src.name, " @ ".join(asked),
                    src.layout.width, src.layout.height, src.fps)
    return src


def live_report(summary: Any, source: Any, *, window: bool = True) -> str:
    """One line for the end of a live run: capture rate, drops, capture->display latency, reconnects.

    ``window``: False when frames went to a ``NullPreview`` (headless): the latency is then capture -> the moment
    the main thread took the frame to show it, and is labelled so."""
    parts = []
    cap = getattr(source, "frames_read", None)
    if cap:
        parts.append(f"{frames_text(cap)} captured")
    total_drop = getattr(summary, "frames_dropped", 0) + getattr(summary, "frames_dropped_at_source", 0)
    if cap:
        parts.append(f"{total_drop} dropped ({100.0 * total_drop / cap:.1f} %)")
        # Read from the device but not taken by the pipeline when it stopped (--frames, Ctrl-C): the reader's frame
        # in hand and its mailbox's. With these the counts add up: captured = read + dropped at source + unread
        # + skipped during the warm-up.
        skipped = getattr(source, "frames_skipped_warming_up", 0)
        unread = cap - getattr(summary, "frames_in", cap) - getattr(summary, "frames_dropped_at_source", 0) - skipped
        if unread > 0:
            parts.append(f"{unread} not taken at the stop")
        if skipped:
            parts.append(f"{skipped} skipped while starting up ({getattr(source, 'startup_s', 0.0):.2f} s)")
    disp = summary.stages.get("display") if getattr(summary, "stages", None) else None
    if disp is not None and disp.count:
        what = "capture->display" if window else "capture->display hand-off (no window)"
        parts.append(f"{what} latency median {disp.p50_ms:.0f} ms, p95 {disp.p95_ms:.0f} ms")
    if summary.wall_s > 0:
        parts.append(f"output {summary.fps:.1f} fps (device {getattr(source, 'fps', 0):g} fps)")
    if getattr(source, "reconnects", 0):
        parts.append(f"{source.reconnects} reconnects")
    return "live: " + "; ".join(parts)


__all__ = ["CameraSource", "FakeBayerDevice", "FrameConverter", "live_report", "open_camera", "remosaic_warning"]
