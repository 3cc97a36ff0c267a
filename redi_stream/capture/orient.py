"""Geometry of a stored mosaic: turn it the way its file says it is displayed (a camera held upright, a flipped
rig), and move its origin (a DNG's default crop).

Cameras store the sensor's rows as read out and record how to turn them in the Orientation tag (TIFF/EXIF, DNG),
which LibRaw reports as ``sizes.flip`` (dcraw's code). :func:`orient` turns the mosaic itself, before anything else
sees it, so the whole pipeline (unification, network, ISP, encoder) works on an upright frame and the video comes
out the way the photographer framed it. Turning a Bayer mosaic by whole pixels keeps it a Bayer mosaic; only its
pattern (and the per-position black levels) move, and which way depends on the parity of the frame's size.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from redi_stream.frames import CFA, RawMeta

#: LibRaw's ``flip`` for each TIFF/EXIF Orientation value 1..8.
FLIP_OF_ORIENTATION = {1: 0, 2: 1, 3: 3, 4: 2, 5: 4, 6: 6, 7: 7, 8: 5}


def orient(data: np.ndarray, meta: RawMeta) -> tuple[np.ndarray, RawMeta]:
    """Turn a decoded mosaic upright by ``meta.flip``.

    The code's bits, as LibRaw (dcraw's ``flip_index``) applies them: 2 reverses the rows, 1 the columns, then 4
    transposes. So 6 is a quarter turn clockwise, 5 anticlockwise, 3 a half turn.

    Args:
        data: (H, W) mosaic as stored.
        meta: its metadata; ``cfa`` and ``black_level`` describe ``data``.

    Returns:
        ``(data, meta)`` unchanged when ``meta.flip`` is 0; else a C-contiguous turned copy and the metadata of the
        turned mosaic: its pattern and per-position black levels, and ``flip`` 0.
    """
    flip = meta.flip
    if flip == 0:
        return data, meta
    h, w = data.shape
    view = data
    if flip & 2:
        view = view[::-1]
    if flip & 1:
        view = view[:, ::-1]
    if flip & 4:
        view = view.T
    # Where each 2x2 position of the turned mosaic comes from in the stored one (TL, TR, BL, BR).
    sources = []
    for i in (0, 1):
        for j in (0, 1):
            r, c = (j, i) if flip & 4 else (i, j)
            if flip & 2:
                r = h - 1 - r
            if flip & 1:
                c = w - 1 - c
            sources.append(2 * (r & 1) + (c & 1))
    return np.ascontiguousarray(view), _moved(meta, sources, flip=0)


def shift_origin(meta: RawMeta, top: int, left: int) -> RawMeta:
    """The metadata of a mosaic cut out of ``meta``'s from row ``top``, column ``left``: its 2x2 pattern and
    per-position black levels follow the parity of the new origin (even offsets change nothing)."""
    if not (top | left) & 1:
        return meta
    return _moved(meta, [2 * ((top + i) & 1) + ((left + j) & 1) for i in (0, 1) for j in (0, 1)])


def _moved(meta: RawMeta, sources: list[int], **changes) -> RawMeta:
    """``meta`` for a mosaic whose 2x2 positions (TL, TR, BL, BR) come from positions ``sources`` of the old one:
    the pattern and the per-position black levels follow their pixels."""
    cfa = CFA("".join(meta.cfa.value[p] for p in sources))
    black = tuple(meta.black_level[p] for p in sources)
    return dataclasses.replace(meta, cfa=cfa, black_level=black, **changes)
