"""DNG OpcodeList2 gain maps: the lens-shading correction phones and drones store in their DNGs.

A DNG may carry, in its OpcodeList2 tag, GainMap opcodes that a reader multiplies into the raw data after
linearisation and before demosaicing: the camera's vignetting (and colour shading) correction, a few dozen gains
per Bayer phase interpolated over the frame. LibRaw leaves them unapplied (its ``raw_image`` is the stored data), so
without this module such a frame is several stops darker in the corners than its maker meant.

Format (DNG 1.3+, big-endian throughout): a uint32 count, then per opcode its ID, DNG version, flags and parameter
byte count (uint32 each) and the parameters. GainMap (ID 9): the area (top, left, bottom, right), plane, planes,
row pitch, column pitch (uint32 each); MapPointsV, MapPointsH (uint32); MapSpacingV, MapSpacingH, MapOriginV,
MapOriginH (float64); MapPlanes (uint32); then MapPointsV x MapPointsH x MapPlanes float32 gains, row by row.

Where a gain applies: the area is in the coordinates of the active area (the ``ActiveArea`` tag's origin). A pixel
at row ``r`` sits at the relative position ``(r + 0.5) / H`` (pixel centres, ``H`` the active area's height; the same
for columns), which lands between map points ``(v - MapOriginV) / MapSpacingV``; the gain is interpolated bilinearly
and held constant beyond the first and last points (the convention of Adobe's DNG SDK). A map with one point in a
direction is constant in it. Only GainMap is applied; other opcodes (bad-pixel fixes, warps) are reported by name.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np
import tifffile

from .tiffscan import all_ifds, is_raw_cfa

GAIN_MAP_ID = 9
#: Names of the DNG opcodes, for the message about those not applied.
OPCODE_NAMES = {
    1: "WarpRectilinear", 2: "WarpFisheye", 3: "FixVignetteRadial", 4: "FixBadPixelsConstant",
    5: "FixBadPixelsList", 6: "TrimBounds", 7: "MapTable", 8: "MapPolynomial", 9: "GainMap", 10: "DeltaPerRow",
    11: "DeltaPerColumn", 12: "ScalePerRow", 13: "ScalePerColumn",
}  # fmt: skip
_GAIN_MAP_HEAD = struct.Struct(">10I4dI")  # area (4), plane, planes, pitches (2), points (2) | spacing, origin | planes


@dataclass(frozen=True)
class GainMap:
    """One GainMap opcode (field names as the DNG specification's)."""

    top: int
    left: int
    bottom: int
    right: int
    plane: int
    planes: int
    row_pitch: int
    col_pitch: int
    spacing_v: float
    spacing_h: float
    origin_v: float
    origin_h: float
    gains: np.ndarray  # (MapPointsV, MapPointsH, MapPlanes) float32


def parse_opcode_list(data: bytes) -> tuple[list[GainMap], list[str]]:
    """The GainMap opcodes of an opcode list, and the names of the other opcodes in it.

    Raises:
        ValueError: a list cut short, or a GainMap whose sizes do not add up.
    """
    if len(data) < 4:
        raise ValueError("opcode list shorter than its count")
    (count,) = struct.unpack_from(">I", data, 0)
    pos, maps, others = 4, [], []
    for _ in range(count):
        if pos + 16 > len(data):
            raise ValueError("opcode list cut short")
        opcode, _version, _flags, size = struct.unpack_from(">4I", data, pos)
        pos += 16
        params = data[pos : pos + size]
        if len(params) != size:
            raise ValueError("opcode list cut short")
        pos += size
        if opcode == GAIN_MAP_ID:
            maps.append(_gain_map(params))
        else:
            others.append(OPCODE_NAMES.get(opcode, f"opcode {opcode}"))
    return maps, others


def _gain_map(params: bytes) -> GainMap:
    if len(params) < _GAIN_MAP_HEAD.size:
        raise ValueError("GainMap parameters cut short")
    (top, left, bottom, right, plane, planes, row_pitch, col_pitch, points_v, points_h,
     spacing_v, spacing_h, origin_v, origin_h, map_planes) = _GAIN_MAP_HEAD.unpack_from(params, 0)  # fmt: skip
    n = points_v * points_h * map_planes
    if n < 1 or len(params) != _GAIN_MAP_HEAD.size + 4 * n:
        raise ValueError(f"GainMap of {points_v}x{points_h}x{map_planes} points in {len(params)} bytes")
    if points_v == 1:
        spacing_v, origin_v = 1.0, 0.0
    if points_h == 1:
        spacing_h, origin_h = 1.0, 0.0
    if spacing_v <= 0 or spacing_h <= 0 or row_pitch < 1 or col_pitch < 1:
        raise ValueError("GainMap with a spacing or pitch below 1")
    gains = np.frombuffer(params, ">f4", n, _GAIN_MAP_HEAD.size).astype(np.float32)
    if not (np.all(np.isfinite(gains)) and np.all(gains >= 0)):
        raise ValueError("GainMap with gains that are not finite and >= 0")
    return GainMap(top, left, bottom, right, plane, planes, row_pitch, col_pitch, spacing_v, spacing_h, origin_v,
                   origin_h, gains.reshape(points_v, points_h, map_planes))  # fmt: skip


def _weights(positions: np.ndarray, size: int, origin: float, spacing: float, points: int) -> np.ndarray:
    """(len(positions), points) bilinear weights of the map points for pixels at ``positions`` of ``size``."""
    index = ((positions + 0.5) / size - origin) / spacing
    index = np.clip(index, 0.0, points - 1.0)
    lo = np.minimum(np.floor(index).astype(np.int64), max(points - 2, 0))
    frac = index - lo
    w = np.zeros((len(positions), points), np.float64)
    rows = np.arange(len(positions))
    w[rows, lo] = 1.0 - frac
    if points > 1:
        w[rows, lo + 1] += frac
    return w


def gain_field(maps: list[GainMap], height: int, width: int) -> np.ndarray | None:
    """The product of ``maps`` over a one-plane (CFA) image of ``height`` x ``width``: float32, 1 where no map
    applies; None when none applies (no map, or maps for other planes)."""
    field = None
    for m in maps:
        if m.plane != 0:
            continue  # a CFA image has one plane
        rows = np.arange(m.top, min(m.bottom, height), m.row_pitch)
        cols = np.arange(m.left, min(m.right, width), m.col_pitch)
        if len(rows) == 0 or len(cols) == 0:
            continue
        pv, ph = m.gains.shape[:2]
        wr = _weights(rows.astype(np.float64), height, m.origin_v, m.spacing_v, pv)
        wc = _weights(cols.astype(np.float64), width, m.origin_h, m.spacing_h, ph)
        values = (wr @ m.gains[:, :, 0].astype(np.float64) @ wc.T).astype(np.float32)
        if field is None:
            field = np.ones((height, width), np.float32)
        field[np.ix_(rows, cols)] *= values
    return field


def apply_gain_field(data: np.ndarray, black: tuple[float, float, float, float], field: np.ndarray) -> np.ndarray:
    """``(data - black) * field + black`` per pixel (black by 2x2 position), rounded into uint16.

    The gains scale the signal above black, as a reader applies them to linearised data; the result is still raw DN
    for the rest of the pipeline (values past the white level clip there, as they would after the map).
    """
    h, w = data.shape
    blk = np.asarray(black, np.float32).reshape(2, 2)
    blk = np.tile(blk, (-(-h // 2), -(-w // 2)))[:h, :w]
    out = (data.astype(np.float32) - blk) * field + blk
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)


_OPCODE_LIST2, _ACTIVE_AREA = 51009, 50829


def read_opcode_list2(path) -> tuple[bytes, tuple[int, int, int, int]] | None:
    """The OpcodeList2 bytes of a DNG's raw image (the IFD with NewSubfileType 0 and CFA data) and its ActiveArea
    (top, left, bottom, right in the stored image), or None if it has no such list."""
    with tifffile.TiffFile(path) as tf:
        raw = next((p for p in all_ifds(tf.pages) if is_raw_cfa(p)), None)
        if raw is None or _OPCODE_LIST2 not in raw.tags:
            return None
        area_tag = raw.tags.get(_ACTIVE_AREA)
        area = (0, 0, raw.imagelength, raw.imagewidth) if area_tag is None else tuple(int(v) for v in area_tag.value)
        return bytes(raw.tags[_OPCODE_LIST2].value), area  # type: ignore[return-value]


@functools.lru_cache(maxsize=2)
def shading_field(opcodes: bytes, height: int, width: int) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """:func:`gain_field` of an OpcodeList2 over an active area of ``height`` x ``width`` (read-only; cached, as a
    sequence's frames share their list), and the names of the opcodes not applied.

    Raises:
        ValueError: as :func:`parse_opcode_list`.
    """
    maps, others = parse_opcode_list(opcodes)
    field = gain_field(maps, height, width)
    if field is not None:
        field.flags.writeable = False
    return field, tuple(others)
