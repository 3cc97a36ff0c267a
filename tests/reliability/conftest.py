"""tests/reliability: long runs, interruptions, sink/source/stage faults, out-of-memory tiling, fuzzing.

Makes the helper modules here (``rel_helpers``) and in ``tests/stream`` (``stream_fakes``) importable (pytest runs
with importlib mode), and imports cv2 before any ``av`` (PyAV's bundled libxcb hangs OpenCV windows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2  # noqa: F401 -- before av

_HERE = Path(__file__).resolve().parent
for _p in (_HERE, _HERE.parent / "stream"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
