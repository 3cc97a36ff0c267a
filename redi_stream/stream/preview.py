"""Live preview: an OpenCV window with a measurement overlay and keys, or a :class:`NullPreview` for headless runs.

The pipeline drives a preview from the caller's (main) thread -- GUI toolkits want their main thread -- with the
newest enhanced frame from a ``Policy.LATEST`` mailbox, so a slow window never slows the pipeline; it just skips
frames. ``show`` returns False when the user closed the window or pressed ``q``/Esc; the pipeline then stops
cleanly (``RunSummary.ended_by == "preview"``). Between frames the pipeline calls ``poll`` so keys and the close
button work even when frames are slow.

Overlay (``o`` toggles it), measured, never estimated:

* ``display`` fps: frames actually shown per second (the window skips frames when it is the slowest part);
* ``capture`` fps: frames the source delivers per second (a camera's own measured rate);
* ``output`` fps: frames enhanced and written per second;
* ``model`` ms/frame: the enhancer's ``infer`` time for this frame (network, or demosaic for ``classic``);
* ``latency``: capture timestamp -> this ``show`` call, median of the last 30 frames (capture time is the
  device's for cameras, pipeline entry for files);
* ``drops``: frames a live source dropped because the pipeline was behind;
* ``gain``: amplification applied to this frame, and the user multiplier.

Keys: ``q``/Esc quit, space pause (freezes the display; the pipeline and any recording go on), ``s`` snapshot
(the full-resolution enhanced frame as PNG), ``+``/``-`` gain multiplier x1.25 / /1.25 (when the enhancer allows
it), ``o`` overlay on/off, ``b`` side by side: original (the raw frame rendered with no gain) | enhanced.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# True when PyAV was loaded before OpenCV in this process: OpenCV's Qt windows then hang (PyAV #978, #1050).
_AV_LOADED_FIRST = "av" in sys.modules and "cv2" not in sys.modules

from ..frames import EnhancedFrame, RawFrame
from .stats import RateMeter

log = logging.getLogger(__name__)

GAIN_STEP = 1.25
"""Factor one ``+``/``-`` key press applies to the gain multiplier."""

_FONT_SCALE = 0.55
_LINE_H = 22
_FLASH_S = 2.0
_WHITE = (255, 255, 255)
_AMBER = (0, 200, 255)


class NullPreview:
    """Shows nothing; never asks to stop. ``close()`` idempotent."""

    def show(self, frame: EnhancedFrame, fps: float) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> "NullPreview":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def render_raw(raw: RawFrame) -> np.ndarray:
    """The raw frame as it is, for the side-by-side "original": half resolution (one RGB pixel per 2x2 Bayer cell),
    black-subtracted and normalised, white balance (clipped at 1, as ``kernels.apply_isp`` clips it) and colour matrix
    applied, sRGB curve, **no gain**.

    Returns:
        (H/2, W/2, 3) uint8 BGR (new array).
    """
    meta = raw.meta
    data = raw.data
    h2, w2 = data.shape[0] // 2, data.shape[1] // 2
    scale = np.float32(1.0 / max(meta.white_level - max(meta.black_level), 1.0))
    rgb = np.zeros((h2, w2, 3), np.float32)
    for pos, colour in enumerate(meta.cfa.colors):
        dy, dx = divmod(pos, 2)
        plane = data[dy : 2 * h2 : 2, dx : 2 * w2 : 2].astype(np.float32)
        plane -= np.float32(meta.black_level[pos])
        plane *= scale * np.float32(meta.wb_gains[colour]) * np.float32(0.5 if colour == 1 else 1.0)
        rgb[:, :, colour] += plane
    np.minimum(rgb, np.float32(1.0), out=rgb)  # the ISP's highlight clip: a saturated light stays white
    rgb = rgb @ meta.cam_to_srgb.T.astype(np.float32)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    srgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    return np.ascontiguousarray((srgb[:, :, ::-1] * 255.0 + 0.5).astype(np.uint8))


class WindowPreview:
    """An OpenCV HighGUI window showing each frame (scaled to fit ``max_size``) with a measurement overlay.

    Args:
        title: window title.
        max_size: (width, height) the shown image is scaled down to fit (display cost stays small at 4K).
        gain_control: an object with a settable ``gain_multiplier`` (the enhancer), for the ``+``/``-`` keys;
            None disables them.
        snapshot_dir: where ``s`` writes PNGs (default: the current directory).
        overlay: start with the overlay shown.

    Main thread only (construct, ``show``, ``poll``, ``close``). ``close()`` destroys the window; idempotent.
    Attributes ``paused``, ``overlay``, ``side_by_side`` reflect the keys; ``last_image`` is the last composed BGR
    image (what the window shows); ``snapshots`` lists the files written.
    """

    wants_raw = True  # the pipeline attaches EnhancedFrame.raw, for the side-by-side view

    def __init__(
        self,
        title: str = "redi-stream",
        max_size: tuple[int, int] = (1280, 720),
        *,
        gain_control: Any | None = None,
        snapshot_dir: str | os.PathLike | None = None,
        overlay: bool = True,
    ) -> None:
        import cv2

        self._cv2 = cv2
        self.title = title
        self.max_size = max_size
        self.gain_control = gain_control
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else Path.cwd()
        self.overlay = overlay
        self.side_by_side = False
        self.paused = False
        self.snapshots: list[Path] = []
        self.last_image: np.ndarray | None = None
        self._status: Callable[[], Any] | None = None
        self._display_rate = RateMeter(1.0)
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=30)
        self._last: tuple[EnhancedFrame, float] | None = None
        self._flash: tuple[str, float] | None = None
        self._opened = False
        self._closed = False

    # -- pipeline hooks ----------------------------------------------------------------------------------------
    def bind_status(self, status: Callable[[], Any]) -> None:
        """Called by the pipeline with ``Pipeline.status`` (capture fps, drops) for the overlay."""
        self._status = status

    def show(self, frame: EnhancedFrame, fps: float) -> bool:
        """Display ``frame`` (unless paused) and handle keys; False if the user closed the window or quit."""
        if self._closed:
            return False
        if not self.paused:
            if frame.t_capture_ns:
                self._latency_ms.append((time.monotonic_ns() - frame.t_capture_ns) / 1e6)
            self._display_rate.tick()
            self._last = (frame, fps)
            if not self._display(self.compose(frame, fps)):
                return False
        return self._events()

    def poll(self) -> bool:
        """Handle keys and window events while no new frame arrives; False if the user closed or quit."""
        if self._closed:
            return False
        if not self._opened:
            return True
        if self._flash is not None and time.monotonic() > self._flash[1]:
            self._flash = None
            self._redraw()
        return self._events()

    # -- drawing (pure; no window needed) ----------------------------------------------------------------------
    def compose(self, frame: EnhancedFrame, fps: float) -> np.ndarray:
        """The image the window shows for ``frame``: scaled, side by side if asked, overlay drawn. (H, W, 3) BGR u8."""
        cv2 = self._cv2
        rgb = frame.rgb
        if rgb.dtype == np.uint16:
            rgb = (rgb >> 8).astype(np.uint8)  # display only: truncation is fine
        side = self.side_by_side and frame.raw is not None
        max_w, max_h = self.max_size
        if side:
            max_w //= 2
        h, w = rgb.shape[:2]
        scale = min(1.0, max_w / w, max_h / h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if scale < 1.0:
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # a new array: the frame itself is not drawn on
        if side:
            orig = cv2.resize(render_raw(frame.raw), size, interpolation=cv2.INTER_AREA)  # type: ignore[arg-type]
            if self.overlay:
                _label(orig, "original (no gain)", (8, size[1] - 10))
                _label(bgr, "enhanced", (8, size[1] - 10))
            bgr = np.concatenate([orig, bgr], axis=1)
        if self.overlay:
            self._draw_overlay(bgr, frame, fps)
        elif self.paused:
            _label(bgr, "PAUSED", (10, 24), _AMBER)
        return bgr

    def overlay_lines(self, frame: EnhancedFrame, fps: float) -> list[str]:
        """The overlay's text, one string per line."""
        st = self._status() if self._status is not None else None
        cap = f"{st.capture_fps:4.1f}" if st is not None else "  - "
        drops = f"{st.frames_dropped}" if st is not None else "-"
        infer_ns = frame.timings_ns.get("infer")
        model = f"{infer_ns / 1e6:5.1f} ms/frame" if infer_ns is not None else "  - "
        lat = f"{float(np.median(self._latency_ms)):4.0f} ms" if self._latency_ms else "  - "
        mult = getattr(self.gain_control, "gain_multiplier", None)
        gain = f"gain {frame.gain:.1f}x" + (f" (multiplier {mult:.2f})" if mult is not None else "")
        lines = [
            f"display {self._display_rate.fps:4.1f} fps   capture {cap} fps   output {fps:4.1f} fps",
            f"model {model}   latency {lat}   drops {drops}",
            f"{gain}   frame {frame.index}" + ("   PAUSED" if self.paused else ""),
        ]
        return lines

    def _draw_overlay(self, bgr: np.ndarray, frame: EnhancedFrame, fps: float) -> None:
        cv2 = self._cv2
        lines = self.overlay_lines(frame, fps)
        if self._flash is not None and time.monotonic() <= self._flash[1]:
            lines.append(self._flash[0])
        width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, 1)[0][0] for t in lines) + 16
        box_h = _LINE_H * len(lines) + 10
        x1, y1 = min(width, bgr.shape[1]), min(box_h, bgr.shape[0])
        roi = bgr[:y1, :x1]
        roi[...] = (roi.astype(np.uint16) * 2 // 7).astype(np.uint8)  # darken to ~30 %: readable on any scene
        for i, text in enumerate(lines):
            colour = _AMBER if (text.endswith("PAUSED") or i >= 3) else _WHITE
            cv2.putText(bgr, text, (8, 20 + _LINE_H * i), cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, colour, 1,
                        cv2.LINE_AA)
        help_text = "q quit  space pause  s snapshot  +/- gain  o overlay  b original|enhanced"
        (tw, th), _ = cv2.getTextSize(help_text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        if bgr.shape[1] >= tw + 16 and bgr.shape[0] >= box_h + 40:
            y = bgr.shape[0] - 8
            band = bgr[y - th - 8 : y + 6, : tw + 16]
            band[...] = (band.astype(np.uint16) * 2 // 7).astype(np.uint8)
            cv2.putText(bgr, help_text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _WHITE, 1, cv2.LINE_AA)

    # -- keys ---------------------------------------------------------------------------------------------------
    def handle_key(self, key: int) -> bool:
        """Act on one key code (``cv2.waitKey`` & 0xFF); False means quit."""
        if key in (ord("q"), ord("Q"), 27):
            return False
        if key == ord(" "):
            self.paused = not self.paused
            self._redraw()
        elif key in (ord("s"), ord("S")):
            self.snapshot()
        elif key in (ord("+"), ord("=")):
            self._step_gain(GAIN_STEP)
        elif key in (ord("-"), ord("_")):
            self._step_gain(1.0 / GAIN_STEP)
        elif key in (ord("o"), ord("O")):
            self.overlay = not self.overlay
            self._redraw()
        elif key in (ord("b"), ord("B")):
            self.side_by_side = not self.side_by_side
            if self.side_by_side and self._last is not None and self._last[0].raw is None:
                self._say("original not available for this source")
            self._redraw()
        return True

    def snapshot(self) -> Path | None:
        """Write the last shown frame (full resolution, no overlay) as PNG; returns the path (None: nothing shown
        yet or the write failed, which is logged and flashed, not raised)."""
        if self._last is None:
            return None
        frame = self._last[0]
        path = self.snapshot_dir / f"redi-snapshot-{time.strftime('%Y%m%d-%H%M%S')}-{frame.index:06d}.png"
        ok = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            ok = bool(self._cv2.imwrite(str(path), self._cv2.cvtColor(frame.rgb, self._cv2.COLOR_RGB2BGR)))
        except (OSError, self._cv2.error) as exc:
            log.error("snapshot %s failed: %s", path, exc)
        if not ok:
            self._say(f"snapshot failed: {path}")
            return None
        self.snapshots.append(path)
        log.info("snapshot: %s", path)
        self._say(f"saved {path.name}")
        return path

    def _step_gain(self, factor: float) -> None:
        ctl = self.gain_control
        if ctl is None or not hasattr(ctl, "gain_multiplier"):
            self._say("gain is fixed for this run")
            return
        ctl.gain_multiplier = ctl.gain_multiplier * factor
        self._say(f"gain multiplier {ctl.gain_multiplier:.2f} (from the next frame)")

    def _say(self, text: str) -> None:
        self._flash = (text, time.monotonic() + _FLASH_S)
        self._redraw()

    def _redraw(self) -> None:
        if self._last is not None and self._opened and not self._closed:
            self._display(self.compose(*self._last))  # a closed window is noticed by the next _events()

    # -- window -------------------------------------------------------------------------------------------------
    def _display(self, bgr: np.ndarray) -> bool:
        """Show ``bgr``; False (nothing shown) if the user has closed the window -- imshow would reopen it."""
        cv2 = self._cv2
        if self._opened and not self._visible():
            return False
        if not self._opened:
            _default_qt_fonts()
            # GUI_NORMAL: no toolbar/status bar under the image (Qt builds); KEEPRATIO: resizing keeps the aspect.
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            cv2.resizeWindow(self.title, bgr.shape[1], bgr.shape[0])
            self._opened = True
        self.last_image = bgr
        cv2.imshow(self.title, bgr)
        return True

    def _visible(self) -> bool:
        cv2 = self._cv2
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:  # the window was destroyed by the user
            return False

    def _events(self) -> bool:
        key = self._cv2.waitKey(1)
        if key != -1 and not self.handle_key(key & 0xFF):
            return False
        return self._visible()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._opened:
            try:
                self._cv2.destroyWindow(self.title)
                # The GUI backend unmaps the window only while its events are processed; one pump is not always
                # enough, and a window left on screen would cover whatever is shown next.
                for _ in range(5):
                    self._cv2.waitKey(1)
            except self._cv2.error:
                pass

    def __enter__(self) -> "WindowPreview":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _label(img: np.ndarray, text: str, org: tuple[int, int], colour=_WHITE) -> None:
    import cv2

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, colour, 1, cv2.LINE_AA)


def _default_qt_fonts() -> None:
    """opencv-python's wheel points Qt at its own fonts folder (``QT_QPA_FONTDIR``, set when cv2 is imported),
    which it does not ship, and Qt prints four warnings per window; point Qt at the system's fonts instead when that
    folder is missing. Set before the first window creates the Qt application."""
    current = os.environ.get("QT_QPA_FONTDIR")
    if current and os.path.isdir(current):
        return
    for d in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype", "/usr/share/fonts"):
        if os.path.isdir(d):
            os.environ["QT_QPA_FONTDIR"] = d
            return


def display_available() -> bool:
    """Whether a window can be opened: an X/Wayland display on Linux/BSD; assumed on macOS and Windows."""
    if sys.platform.startswith(("linux", "freebsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def make_preview(
    enabled: bool = True,
    *,
    title: str = "redi-stream",
    gain_control: Any | None = None,
    snapshot_dir: str | os.PathLike | None = None,
) -> WindowPreview | NullPreview:
    """A window preview when ``enabled`` and a display exists; else a :class:`NullPreview` (with a warning when a
    preview was asked for but cannot be shown). ``gain_control``/``snapshot_dir``: see :class:`WindowPreview`."""
    if not enabled:
        return NullPreview()
    if not display_available():
        log.warning("no display (DISPLAY is not set): running without the preview window (--no-preview hides this)")
        return NullPreview()
    if _AV_LOADED_FIRST:
        log.warning("PyAV was imported before OpenCV; OpenCV windows may hang (import redi_stream.stream or cv2 "
                    "before av)")
    return WindowPreview(title, gain_control=gain_control, snapshot_dir=snapshot_dir)
