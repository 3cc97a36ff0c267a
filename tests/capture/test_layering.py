"""capture/ stays a leaf: no torch, no kernels/model/stream, no threads (only stream/ starts threads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redi_stream.capture

FORBIDDEN = ("torch", "redi_stream.kernels", "redi_stream.model", "redi_stream.stream")


def test_using_capture_pulls_in_no_forbidden_module() -> None:
    code = (
        "import sys, redi_stream.capture as c\n"
        "c.SyntheticSource(n_frames=1, size=(32, 32)).read(0)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith({FORBIDDEN[1:]!r}))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""


def test_capture_source_starts_no_threads_and_imports_no_siblings() -> None:
    for path in Path(redi_stream.capture.__file__).parent.glob("*.py"):
        text = path.read_text()
        for needle in ("Thread(", "ThreadPoolExecutor", "import torch", "from redi_stream.kernels",
                       "from redi_stream.model", "from redi_stream.stream", "from ..kernels", "from ..model",
                       "from ..stream"):  # fmt: skip
            assert needle not in text, f"{path.name} contains {needle!r}"
