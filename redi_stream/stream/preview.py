"""Live preview: an OpenCV window with an fps overlay, or a :class:`NullPreview` for headless runs.

The pipeline drives a preview from the caller's (main) thread -- GUI toolkits want their main thread -- with the
newest enhanced frame from a ``Policy.LATEST`` mailbox, so a slow window never slows the pipeline; it just skips
frames. ``show`` returns False when the user closed the window or pressed ``q``/Esc; the pipeline then stops
cleanly (``RunSummary.ended_by == "preview"``).
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

# True when PyAV was loaded before OpenCV in this process: OpenCV's Qt windows then hang (PyAV #978, #1050).
_AV_LOADED_FIRST = "av" in sys.modules and "cv2" not in sys.modules

from ..frames import EnhancedFrame

log = logging.getLogger(__name__)


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


class WindowPreview:
    """An OpenCV HighGUI window showing each frame (scaled to fit ``max_size``) with the output fps drawn on it.

    Args:
        title: window title.
        max_size: (width, height) the shown image is scaled down to fit (display cost stays small at 4K).

    Main thread only (construct, ``show``, ``close``). ``close()`` destroys the window; idempotent.
    """

    def __init__(self, title: str = "redi-stream", max_size: tuple[int, int] = (1280, 720)) -> None:
        import cv2

        self._cv2 = cv2
        self.title = title
        self.max_size = max_size
        self._opened = False
        self._closed = False

    def show(self, frame: EnhancedFrame, fps: float) -> bool:
        """Display ``frame``; False if the user closed the window or pressed q/Esc."""
        cv2 = self._cv2
        if self._closed:
            return False
        rgb = frame.rgb
        if rgb.dtype == np.uint16:
            rgb = (rgb >> 8).astype(np.uint8)  # display only: truncation is fine
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_size[0] / w, self.max_size[1] / h)
        if scale < 1.0:
            rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # a new array: the frame itself is not drawn on
        text = f"{fps:5.1f} fps  frame {frame.index}  gain {frame.gain:.0f}x"
        cv2.putText(bgr, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(bgr, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
        if not self._opened:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
            self._opened = True
        cv2.imshow(self.title, bgr)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:  # the window was destroyed by the user
            return False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._opened:
            try:
                self._cv2.destroyWindow(self.title)
                self._cv2.waitKey(1)
            except self._cv2.error:
                pass

    def __enter__(self) -> "WindowPreview":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def display_available() -> bool:
    """Whether a window can be opened: an X/Wayland display on Linux/BSD; assumed on macOS and Windows."""
    if sys.platform.startswith(("linux", "freebsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def make_preview(enabled: bool = True, *, title: str = "redi-stream") -> WindowPreview | NullPreview:
    """A window preview when ``enabled`` and a display exists; else a :class:`NullPreview` (with a warning when a
    preview was asked for but cannot be shown)."""
    if not enabled:
        return NullPreview()
    if not display_available():
        log.warning("no display (DISPLAY is not set): running without the preview window")
        return NullPreview()
    if _AV_LOADED_FIRST:
        log.warning("PyAV was imported before OpenCV; OpenCV windows may hang (import redi_stream.stream or cv2 "
                    "before av)")
    return WindowPreview(title)
