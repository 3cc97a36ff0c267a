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
direction is constant in it.

Bad pixels: OpcodeList1 (applied to the stored samples, before linearisation) and OpcodeList2 may hold
FixBadPixelsConstant (ID 4: Constant, BayerPhase; every sample equal to Constant is bad, the way cameras mark the
defects they map out) and FixBadPixelsList (ID 5: BayerPhase, BadPointCount, BadRectCount, then (row, column) per
point and (top, left, bottom, right) per rectangle; uint32 each). LibRaw applies neither, and at the gains of a dark
scene a hot pixel left in becomes a bright coloured blot the network spreads over its neighbours. Coordinates are
those of the list's stage: OpcodeList1's the stored image, OpcodeList2's the active area. BayerPhase (0: the stage's
top-left sample is red, 1: green on a red row, 2: green on a blue row, 3: blue) says which samples are green. A bad
sample becomes the inverse-distance-weighted mean of its good same-colour neighbours within two samples (red and blue:
8, at (+-2, 0), (0, +-2), (+-2, +-2); green: those and the 4 diagonal greens at (+-1, +-1)), black-subtracted per 2x2
position so greens of the two rows may differ in black level; a sample with no good neighbour is left as stored.
OpcodeList2's fixes run before its gain maps. Other opcodes (warps, per-row deltas, ...) are reported by name.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

import numpy as np
import tifffile

from .tiffscan import all_ifds, is_raw_cfa

GAIN_MAP_ID = 9
FIX_BAD_PIXELS_CONSTANT_ID = 4
FIX_BAD_PIXELS_LIST_ID = 5
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


@dataclass(frozen=True)
class BadPixelsConstant:
    """One FixBadPixelsConstant opcode: samples equal to ``constant`` are bad."""

    constant: int
    bayer_phase: int


@dataclass(frozen=True)
class BadPixelsList:
    """One FixBadPixelsList opcode: ``points`` (K, 2) rows and columns, ``rects`` (R, 4) top, left, bottom, right
    (bottom and right exclusive), in the coordinates of the list's stage."""

    bayer_phase: int
    points: np.ndarray
    rects: np.ndarray


@dataclass(frozen=True)
class OpcodeList:
    """What an opcode list holds that a reader of Bayer data applies, and the names of the other opcodes."""

    gain_maps: tuple[GainMap, ...] = ()
    bad_pixels: tuple[BadPixelsConstant | BadPixelsList, ...] = ()
    others: tuple[str, ...] = ()


def parse_opcode_list(data: bytes) -> OpcodeList:
    """The GainMap and FixBadPixels opcodes of an opcode list, and the names of the other opcodes in it.

    Raises:
        ValueError: a list cut short, or an opcode whose sizes do not add up.
    """
    if len(data) < 4:
        raise ValueError("opcode list shorter than its count")
    (count,) = struct.unpack_from(">I", data, 0)
    pos, maps, fixes, others = 4, [], [], []
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
        elif opcode == FIX_BAD_PIXELS_CONSTANT_ID:
            if size != 8:
                raise ValueError(f"FixBadPixelsConstant with {size} bytes of parameters, not 8")
            fixes.append(BadPixelsConstant(*struct.unpack(">2I", params)))
        elif opcode == FIX_BAD_PIXELS_LIST_ID:
            fixes.append(_bad_pixels_list(params))
        else:
            others.append(OPCODE_NAMES.get(opcode, f"opcode {opcode}"))
    return OpcodeList(tuple(maps), tuple(fixes), tuple(others))


def _bad_pixels_list(params: bytes) -> BadPixelsList:
    if len(params) < 12:
        raise ValueError("FixBadPixelsList parameters cut short")
    phase, n_points, n_rects = struct.unpack_from(">3I", params, 0)
    if len(params) != 12 + 8 * n_points + 16 * n_rects:
        raise ValueError(f"FixBadPixelsList of {n_points} points and {n_rects} rectangles in {len(params)} bytes")
    points = np.frombuffer(params, ">u4", 2 * n_points, 12).astype(np.int64).reshape(n_points, 2)
    rects = np.frombuffer(params, ">u4", 4 * n_rects, 12 + 8 * n_points).astype(np.int64).reshape(n_rects, 4)
    return BadPixelsList(phase, points, rects)


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


# Inverse-distance weights of the same-colour neighbours a bad sample is interpolated from: red and blue samples
# have theirs two samples away (across, down, diagonally), green ones also the four diagonal greens next to them.
_NEIGHBOURS_RB = np.array([(-2, 0), (2, 0), (0, -2), (0, 2), (-2, -2), (-2, 2), (2, -2), (2, 2)], np.int64)
_NEIGHBOURS_G = np.concatenate([_NEIGHBOURS_RB, np.array([(-1, -1), (-1, 1), (1, -1), (1, 1)], np.int64)])
_CHUNK = 1 << 16  # bad samples interpolated at once (a huge rectangle stays within a few tens of MB)


def _listed_positions(fix: BadPixelsList, shape: tuple[int, int], origin: tuple[int, int]):
    """Rows and columns in the data of ``fix``'s points and rectangles (those inside it)."""
    h, w = shape
    rows, cols = [fix.points[:, 0] - origin[0]], [fix.points[:, 1] - origin[1]]
    for top, left, bottom, right in fix.rects:
        t, b = max(top - origin[0], 0), min(bottom - origin[0], h)
        lo, r = max(left - origin[1], 0), min(right - origin[1], w)
        if t < b and lo < r:
            rr, cc = np.mgrid[t:b, lo:r]
            rows.append(rr.ravel())
            cols.append(cc.ravel())
    rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
    inside = (rows_ >= 0) & (rows_ < h) & (cols_ >= 0) & (cols_ < w)
    return rows_[inside], cols_[inside]


def fix_bad_pixels(
    data: np.ndarray,
    black: tuple[float, float, float, float],
    fixes: tuple[BadPixelsConstant | BadPixelsList, ...],
    origin: tuple[int, int],
    linearization: np.ndarray | None = None,
) -> np.ndarray:
    """``data`` (H, W uint16 raw DN, black by 2x2 position) with the bad samples of ``fixes`` interpolated (see the
    module docstring); ``data`` itself when none is bad, else a new array.

    ``origin``: the coordinates, in the opcode list's stage, of ``data[0, 0]``. ``linearization``: the DNG's
    LinearizationTable when ``data`` has been through it (LibRaw applies it): FixBadPixelsConstant's constant is a
    stored value, so it is looked up there first.
    """
    h, w = data.shape
    bad = np.zeros((h, w), bool)
    groups = []
    for fix in fixes:
        if isinstance(fix, BadPixelsConstant):
            constant = fix.constant
            if linearization is not None and len(linearization):
                constant = int(linearization[min(constant, len(linearization) - 1)])
            rows, cols = np.nonzero(data == constant) if constant <= 65535 else (np.empty(0, np.int64),) * 2
        else:
            rows, cols = _listed_positions(fix, (h, w), origin)
        bad[rows, cols] = True
        groups.append((rows, cols, fix.bayer_phase))
    if not any(len(rows) for rows, _, _ in groups):
        return data
    blk = np.asarray(black, np.float64).reshape(2, 2)
    out = data.copy()
    for rows, cols, phase in groups:
        green = (rows + origin[0] + cols + origin[1] + (phase in (1, 2))) % 2 == 1
        for colour, offsets in ((~green, _NEIGHBOURS_RB), (green, _NEIGHBOURS_G)):
            r_all, c_all = rows[colour], cols[colour]
            weight = 1.0 / np.hypot(offsets[:, 0], offsets[:, 1])
            for k in range(0, len(r_all), _CHUNK):
                r, c = r_all[k : k + _CHUNK], c_all[k : k + _CHUNK]
                nr, nc = r[:, None] + offsets[:, 0], c[:, None] + offsets[:, 1]
                inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
                nr, nc = np.clip(nr, 0, h - 1), np.clip(nc, 0, w - 1)
                wgt = np.where(inside & ~bad[nr, nc], weight, 0.0)
                total = wgt.sum(axis=1)
                ok = total > 0
                signal = (wgt * (data[nr, nc] - blk[nr % 2, nc % 2])).sum(axis=1)[ok] / total[ok]
                r, c = r[ok], c[ok]
                out[r, c] = np.clip(np.rint(signal + blk[r % 2, c % 2]), 0, 65535).astype(np.uint16)
    return out


_OPCODE_LIST1, _OPCODE_LIST2, _ACTIVE_AREA, _LINEARIZATION_TABLE = 51008, 51009, 50829, 50712


@dataclass(frozen=True)
class DngOpcodeLists:
    """The opcode lists of a DNG's raw image, with what placing them needs."""

    list1: bytes | None
    list2: bytes | None
    active_area: tuple[int, int, int, int]  # top, left, bottom, right in the stored image
    linearization: np.ndarray | None  # LinearizationTable, if any


def read_opcode_lists(path) -> DngOpcodeLists | None:
    """OpcodeList1 and OpcodeList2 of a DNG's raw image (the IFD with NewSubfileType 0 and CFA data), its ActiveArea
    and LinearizationTable; None if it has neither list."""
    with tifffile.TiffFile(path) as tf:
        raw = next((p for p in all_ifds(tf.pages) if is_raw_cfa(p)), None)
        if raw is None or (_OPCODE_LIST1 not in raw.tags and _OPCODE_LIST2 not in raw.tags):
            return None
        area_tag = raw.tags.get(_ACTIVE_AREA)
        area = (0, 0, raw.imagelength, raw.imagewidth) if area_tag is None else tuple(int(v) for v in area_tag.value)
        table = raw.tags.get(_LINEARIZATION_TABLE)
        lists = [bytes(raw.tags[code].value) if code in raw.tags else None for code in (_OPCODE_LIST1, _OPCODE_LIST2)]
        return DngOpcodeLists(*lists, area,  # type: ignore[arg-type]
                              None if table is None else np.asarray(table.value, np.int64))


@functools.lru_cache(maxsize=4)
def parsed_opcode_list(opcodes: bytes) -> OpcodeList:
    """:func:`parse_opcode_list`, cached (a sequence's frames share their lists). Treat the result as read-only."""
    return parse_opcode_list(opcodes)


@functools.lru_cache(maxsize=2)
def shading_field(opcodes: bytes, height: int, width: int) -> np.ndarray | None:
    """:func:`gain_field` of an OpcodeList2 over an active area of ``height`` x ``width`` (read-only; cached).

    Raises:
        ValueError: as :func:`parse_opcode_list`.
    """
    field = gain_field(list(parsed_opcode_list(opcodes).gain_maps), height, width)
    if field is not None:
        field.flags.writeable = False
    return field
