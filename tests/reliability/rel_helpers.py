"""Shared checks for the reliability tests: exact frame accounting, decoding outputs, MP4 fragments, child runs."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                PYTHONUNBUFFERED="1")


def cli(*args: str, **popen) -> subprocess.Popen:
    """Start ``python -m redi_stream.cli ARGS`` (text pipes for stdout and stderr)."""
    return subprocess.Popen([sys.executable, "-m", "redi_stream.cli", *args], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def decoded_indices(path: Path, fps: float | Fraction) -> list[int]:
    """Decode every frame of a video and return each one's source index, recovered from its pts (the sinks take
    pts from ``t_ns = index / fps``). A lost frame shows as a gap, a duplicate as a repeat."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        out = []
        for f in c.decode(s):
            out.append(int(round(f.pts * f.time_base * Fraction(fps))))
    return out


def decoded_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def assert_accounted(summary, n_source: int | None = None) -> None:
    """Exact bookkeeping of one run: every frame taken in is written, dropped, discarded, or lost in the failing
    stage; with ``n_source`` (a file run that reached the end) also every source frame is in or skipped."""
    s = summary
    assert s.frames_in == s.frames_out + s.frames_dropped + s.frames_discarded + s.frames_failed, s
    if n_source is not None:
        assert s.frames_in + len(s.skipped) == n_source, s


def _boxes(data: bytes, start: int, end: int):
    """(type, payload_start, box_end, complete) of the ISO-BMFF boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind.decode("latin-1"), pos + header, pos + size, pos + size <= end
        pos += size


def mp4_fragments(path: Path) -> list[tuple[int, bool]]:
    """Fragments of a fragmented MP4 in file order: (samples declared by the moof's trun boxes, moof and its mdat
    both complete on disk). A file cut short by a full disk ends with an incomplete fragment (or none)."""
    data = Path(path).read_bytes()
    top = list(_boxes(data, 0, len(data)))
    frags: list[tuple[int, bool]] = []
    for i, (kind, p0, p1, complete) in enumerate(top):
        if kind != "moof":
            continue
        samples = 0
        if complete:
            for k2, q0, q1, _ in _boxes(data, p0, p1):
                if k2 != "traf":
                    continue
                for k3, r0, _r1, _ in _boxes(data, q0, q1):
                    if k3 == "trun":
                        samples += struct.unpack(">I", data[r0 + 4:r0 + 8])[0]
        mdat_ok = i + 1 < len(top) and top[i + 1][0] == "mdat" and top[i + 1][3]
        frags.append((samples, complete and mdat_ok))
    return frags
