"""The one exception hierarchy of redi-stream.

Every error raised on purpose derives from :class:`RediStreamError` and, where it means the same thing as a
builtin, from that builtin too, so ``except OSError`` still catches a :class:`CaptureError`. Third-party errors are
wrapped once, where the library is called, with the file, frame or device named in the message. The CLI prints
``str(exc)`` on one line and exits non-zero.
"""

from __future__ import annotations


class RediStreamError(Exception):
    """Base of every error redi-stream raises on purpose."""


class ConfigError(RediStreamError, ValueError):
    """An option or a combination of options is invalid; the message lists the valid choices."""


class CaptureError(RediStreamError, OSError):
    """A source could not be opened or read (missing path, camera busy, unplugged device)."""


class FrameError(CaptureError):
    """One frame is unusable (corrupt, truncated, wrong size or CFA); carries its index and name.

    Attributes:
        index: position of the frame in the source (0-based), or -1 if unknown.
        name: file name or device name of the frame.
    """

    def __init__(self, message: str, *, index: int = -1, name: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.name = name


class UnsupportedSensorError(CaptureError):
    """The file is not a Bayer mosaic (X-Trans, Foveon, linear DNG, RGB image)."""


class WeightsError(RediStreamError, ValueError):
    """A checkpoint cannot be read or does not match the network."""


class SinkError(RediStreamError, OSError):
    """The output cannot be written (unwritable path, disk full, encoder failure)."""


class PipelineError(RediStreamError, RuntimeError):
    """A pipeline stage failed; ``__cause__`` holds the stage's own exception.

    Attributes:
        stage: name of the stage that failed (``capture``, ``infer``, ``encode``, ``preview``).
    """

    def __init__(self, stage: str, message: str | None = None) -> None:
        super().__init__(message or f"{stage} failed")
        self.stage = stage


class Interrupted(RediStreamError, KeyboardInterrupt):
    """The run was stopped by SIGINT/SIGTERM after finalising the output."""
