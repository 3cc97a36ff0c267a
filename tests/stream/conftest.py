"""tests/stream: make the sibling helper module ``stream_fakes`` importable (pytest runs with importlib mode)."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2  # noqa: F401 -- before any test module's `import av` (PyAV's bundled libxcb hangs OpenCV windows)

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
