"""Decode one camera raw file (DNG, CinemaDNG, NEF, CR2, ARW, ...) with rawpy/LibRaw into a Bayer frame + metadata.

The only module that calls rawpy; LibRaw's errors are wrapped here, once, with the file and frame index named.
Each call opens its own LibRaw handle and closes it before returning, so concurrent calls from several threads
share nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import logging
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import rawpy
import tifffile

from redi_stream.errors import FrameError, UnsupportedSensorError
from redi_stream.frames import CFA, IDENTITY_3x3, RawMeta

from .colour import checked_cam_to_srgb, xyz_to_cam_to_cam_to_srgb
from .opcodes import OpcodeList, apply_gain_field, fix_bad_pixels, parsed_opcode_list, read_opcode_lists, shading_field
from .orient import shift_origin

log = logging.getLogger(__name__)

# Suffixes of files that hold camera raw data LibRaw may read (lower case). ``.raw`` is shared with headerless dumps.
LIBRAW_SUFFIXES = frozenset(
    ".dng .arw .srf .sr2 .nef .nrw .cr2 .cr3 .crw .raf .orf .rw2 .rwl .pef .ptx .srw .3fr .fff .iiq .mos .mef "
    ".mrw .erf .kdc .dcr .k25 .raw .rwz .gpr .bay .cap .eip .dcs .drf .mdc .x3f .nksc .ari .cs1 .sti".split()
)

_VIDEO_HINT = ("encoded video, not raw frames (the network needs the sensor's raw data); to try redi-stream on it, "
               "make a dark raw clip of it with: redi-stream make-dng {name} --out clip/ (or play it as a camera: "
               "--camera {name})")
_IMAGE_HINT = ("a processed image, not raw sensor data; make a dark raw clip of it with: redi-stream make-dng {name} "
               "--out clip/")
#: Files people point redi-stream at that are not raw frames, by suffix: what each is, and what to do instead.
_NOT_RAW = {
    **dict.fromkeys((".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mts", ".m2ts", ".ts", ".mxf"), _VIDEO_HINT),
    **dict.fromkeys((".jpg", ".jpeg", ".png", ".tif", ".tiff", ".heic", ".webp", ".bmp", ".exr"), _IMAGE_HINT),
    ".mlv": "Magic Lantern video (MLV); convert it to a DNG sequence first (mlv_dump --dng, or MLV App)",
    ".braw": "Blackmagic RAW, a closed format LibRaw does not read; record CinemaDNG for redi-stream",
    ".r3d": "REDCODE RAW, a closed format LibRaw does not read",
    ".crm": "Canon Cinema RAW Light, which LibRaw does not read",
}


def not_raw_hint(path: Path) -> str | None:
    """What ``path`` is when its suffix names something other than raw frames (video, a processed image, a closed
    cinema raw format), with what to do instead; None for other suffixes."""
    hint = _NOT_RAW.get(path.suffix.lower())
    return None if hint is None else f"{path.name} is " + hint.format(name=shlex.quote(os.fspath(path)))


# TIFF-based formats whose Make/Model tags tifffile can read (LibRaw through rawpy does not expose them).
_TIFF_SUFFIXES = frozenset(
    ".dng .nef .nrw .cr2 .arw .srf .sr2 .pef .srw .3fr .erf .mos .iiq .dcr .kdc .tif .tiff".split()
)

_LIBRAW_REASONS = (
    (rawpy.LibRawFileUnsupportedError, "not a raw format LibRaw can read"),
    (rawpy.LibRawIOError, "truncated or unreadable"),
    (rawpy.LibRawDataError, "corrupt raw data"),
    (rawpy.LibRawTooBigError, "image too big for LibRaw"),
    (rawpy.LibRawUnsufficientMemoryError, "out of memory while decoding"),
)


def _libraw_reason(exc: rawpy.LibRawError) -> str:
    for cls, reason in _LIBRAW_REASONS:
        if isinstance(exc, cls):
            break
    else:
        reason = "LibRaw cannot decode it"
    detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    return f"{reason} (LibRaw: {detail})"


def bayer_cfa(raw: Any, path: Path | str) -> CFA:
    """The 2x2 Bayer pattern of a LibRaw image, relative to the top-left pixel of ``raw_image_visible``.

    LibRaw's ``raw_pattern`` refers to the visible area's origin (checked on DNGs with odd ``ActiveArea``
    margins), so no margin correction is applied.

    Args:
        raw: an open ``rawpy.RawPy`` (or any object with ``raw_type``, ``raw_pattern``, ``color_desc``,
            ``num_colors``).
        path: the file, for messages.

    Raises:
        UnsupportedSensorError: not a Bayer mosaic (X-Trans, Foveon, linear/demosaiced DNG, 4-colour CFA).
    """
    pattern = raw.raw_pattern
    if raw.raw_type != rawpy.RawType.Flat or pattern is None:
        raise UnsupportedSensorError(
            f"{path}: not a colour-filter-array mosaic (linear/demosaiced DNG or Foveon-type sensor with "
            f"{raw.num_colors} colours per pixel); redi-stream needs a 2x2 Bayer raw"
        )
    pattern = np.asarray(pattern)
    if pattern.shape == (6, 6):
        raise UnsupportedSensorError(f"{path}: Fujifilm X-Trans sensor (6x6 colour pattern) is not supported; "
                                     "redi-stream needs a 2x2 Bayer raw")
    desc = raw.color_desc
    desc = desc.decode("ascii", errors="replace") if isinstance(desc, bytes) else str(desc)
    try:
        return CFA.from_pattern(pattern, desc)
    except (ValueError, IndexError) as exc:
        raise UnsupportedSensorError(
            f"{path}: colour pattern {pattern.tolist()} over {desc!r} is not an RGB 2x2 Bayer mosaic ({exc})"
        ) from None


def _camera_name(path: Path) -> str:
    """'Make Model' from the TIFF header of TIFF-based raws, else ''."""
    if path.suffix.lower() not in _TIFF_SUFFIXES:
        return ""
    try:
        with tifffile.TiffFile(path) as tf:
            tags = tf.pages.first.tags
            make = str(tags[271].value).strip("\0 ") if 271 in tags else ""
            model = str(tags[272].value).strip("\0 ") if 272 in tags else ""
    # The name is cosmetic: a header tifffile cannot parse (LibRaw could) just leaves it empty.
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError):
        return ""
    if model.lower().startswith(make.lower()):
        return model
    return f"{make} {model}".strip()


def _wb_gains(camera_wb: Any, daylight_wb: Any, path: Path, warnings: list[str]) -> tuple[float, float, float]:
    """(R, G, B) gains, G = 1, from LibRaw's (R, G, B, G2) multipliers; daylight, then unity, as fallbacks."""
    for source, label in ((camera_wb, None), (daylight_wb, "daylight")):
        if source is None:
            continue
        wb = np.asarray(source, dtype=np.float64).ravel()
        if label and wb.size >= 3 and np.all(wb[:3] == 1.0):
            continue  # LibRaw's placeholder when it has no colour data to derive a daylight balance from
        if wb.size >= 3 and np.all(np.isfinite(wb[:3])) and np.all(wb[:3] > 0):
            if label:
                warnings.append(f"no as-shot white balance in {path.name}; using the camera's daylight balance")
            return (float(wb[0] / wb[1]), 1.0, float(wb[2] / wb[1]))
    warnings.append(f"no white balance in {path.name}; using unity gains (colours will be camera-native)")
    return (1.0, 1.0, 1.0)


def _cam_to_srgb(rgb_xyz: np.ndarray, color_matrix: np.ndarray, path: Path, warnings: list[str]) -> np.ndarray:
    """Camera -> sRGB matrix, trying the sources in LibRaw's own order of preference.

    For DNGs LibRaw turns the embedded ``ColorMatrix`` into ``color_matrix`` (camera -> sRGB, rows summing to 1)
    and leaves ``rgb_xyz_matrix`` zero; for other raws ``rgb_xyz_matrix`` comes from LibRaw's camera table.
    """
    from_xyz = xyz_to_cam_to_cam_to_srgb(rgb_xyz)
    from_cm = checked_cam_to_srgb(color_matrix)
    first, second = (from_cm, from_xyz) if path.suffix.lower() == ".dng" else (from_xyz, from_cm)
    for m in (first, second):
        if m is not None:
            return m
    warnings.append(f"no colour matrix in {path.name}; using identity (colours will be camera-native)")
    return IDENTITY_3x3.copy()


class SizeOnlyError(FrameError):
    """A file LibRaw knows only by its size, where that is not trusted (see :func:`read_libraw`)."""


# Extensions whose files LibRaw must read by their header: a DNG always has one (TIFF), and a ``.raw`` with none is
# a headerless dump whose layout the user gives (``capture.headerless``). Under other camera extensions LibRaw's
# file-size table stays trusted: it lists headerless dumps that cameras saved under them.
_HEADER_REQUIRED = frozenset({".dng", ".raw"})
_TIFF_MAGIC = (b"II*\0", b"MM\0*")


def _layout(raw: Any) -> tuple[int, int, float, bytes]:
    """What LibRaw made of a file: (raw width, raw height, white level, colour pattern)."""
    s = raw.sizes
    pattern = b"" if raw.raw_pattern is None else np.asarray(raw.raw_pattern).tobytes()
    return int(s.raw_width), int(s.raw_height), float(raw.white_level), pattern


@functools.lru_cache(maxsize=16)
def size_table_layout(size: int) -> tuple[int, int, float, bytes] | None:
    """LibRaw's reading of any file of ``size`` bytes, whatever it holds, or None if that size alone means nothing.

    LibRaw identifies headerless camera dumps (old phones, industrial sensors) by file size alone, from a table.
    Opening ``size`` zero bytes shows whether it would: a buffer with no header identifies only through that table.
    """
    raw = rawpy.RawPy()
    try:
        raw.open_buffer(io.BytesIO(bytes(size)))
        return _layout(raw)
    except rawpy.LibRawError:
        return None
    finally:
        raw.close()


def _refuse_size_only(raw: Any, path: Path, index: int) -> None:
    """FrameError if LibRaw read ``path`` as it would any file of its size (a header gives another reading).

    A file that starts with a TIFF header (every DNG) is taken as read by that header without probing: the probe
    costs a zero buffer of the file's size, once per size, and compressed DNG sequences change size every frame.
    """
    with open(path, "rb") as f:
        if f.read(4) in _TIFF_MAGIC:
            return
    layout = _layout(raw)
    if layout != size_table_layout(path.stat().st_size):
        return
    w, h, white, _ = layout
    guess = f"LibRaw would guess {w}x{h}, white {white:g} from the file size alone"
    layout_keys = "--raw-width/--raw-height/--raw-dtype/--cfa/--black/--white"
    if path.suffix.lower() == ".raw":
        why = (f"no raw header; {guess}. If it is a headerless dump, give its layout: {layout_keys}, or a sidecar "
               f'{path.name}.json or redi.json with keys width, height, cfa, black, white, dtype ({{"decoder": '
               f'"libraw"}} there accepts the guess)')
    else:
        why = (f"no {path.suffix[1:].upper()} header ({guess}); a headerless dump needs the .raw extension and its "
               f"layout ({layout_keys})")
    raise SizeOnlyError(f"frame {index} ({path}): {why}", index=index, name=path.name)


def read_libraw(path: Path, index: int, *, trust_file_size: bool | None = None) -> tuple[np.ndarray, RawMeta]:
    """Decode the raw mosaic and metadata of one file.

    Args:
        path: a raw file LibRaw can read.
        index: the frame's position in its source, for error messages.
        trust_file_size: False: refuse a file LibRaw recognises by its size alone (:func:`size_table_layout`), as
            it would any file of that size: a dump of 1920x1080 uint16 samples would be read as LibRaw's table
            says, a 16-bit GBRG frame. None (default): False for ``.dng`` and ``.raw``, else True.

    Returns:
        ``(data, meta)``: data is the visible area, (H, W) uint16, C-contiguous, owned by the caller (copied out of
        LibRaw before its handle closes); meta has per-position black levels, white level, CFA of the visible
        area, WB gains (G = 1), ``cam_to_srgb`` and the file's orientation as ``flip``, not yet applied (the
        data is as stored; :func:`~.orient.orient` turns it).

    Raises:
        FrameError: unreadable, truncated, corrupt, or inconsistent levels; known by its size alone when
            ``trust_file_size`` is False.
        UnsupportedSensorError: not a 2x2 Bayer mosaic.
    """
    data, meta, _ = read_libraw_with_margins(path, index, trust_file_size=trust_file_size)
    return data, meta


def read_libraw_with_margins(
    path: Path, index: int, *, trust_file_size: bool | None = None
) -> tuple[np.ndarray, RawMeta, tuple[int, int]]:
    """:func:`read_libraw`, plus where the visible area lies in the stored raw image.

    Returns:
        ``(data, meta, (top, left))``: data and meta as from :func:`read_libraw`; ``top``/``left`` are LibRaw's
        ``sizes.top_margin``/``left_margin``, so ``data`` is ``raw_image[top:top + H, left:left + W]``. (For a DNG
        LibRaw rounds an odd ``ActiveArea`` origin up to even, so the tag alone does not give them.)

    Raises:
        as :func:`read_libraw`.
    """
    if path.suffix.lower() == ".x3f":
        raise UnsupportedSensorError(f"{path}: Foveon X3F sensors are not supported; redi-stream needs a 2x2 Bayer raw")
    try:
        with rawpy.imread(str(path)) as raw:
            if trust_file_size is None:
                trust_file_size = path.suffix.lower() not in _HEADER_REQUIRED
            if not trust_file_size:
                _refuse_size_only(raw, path, index)
            cfa = bayer_cfa(raw, path)
            visible = raw.raw_image_visible
            margins = (int(raw.sizes.top_margin), int(raw.sizes.left_margin))
            crop = _dng_default_crop(raw.sizes, visible.shape, margins) if path.suffix.lower() == ".dng" else None
            if crop is not None:
                top, left, height, width = crop
                visible = visible[top : top + height, left : left + width]
            data = np.array(visible, dtype=np.uint16, order="C", copy=True)
            flip = int(raw.sizes.flip)
            pattern = np.asarray(raw.raw_pattern)
            black_by_colour = [float(b) for b in raw.black_level_per_channel]
            white = float(raw.white_level)
            camera_white = raw.camera_white_level_per_channel
            camera_wb = raw.camera_whitebalance
            daylight_wb = raw.daylight_whitebalance
            rgb_xyz = np.array(raw.rgb_xyz_matrix, dtype=np.float64)
            color_matrix = np.array(raw.color_matrix, dtype=np.float64)
    except (UnsupportedSensorError, FrameError):
        raise  # OSErrors too, but they already say what is wrong
    except rawpy.LibRawError as exc:
        if not path.exists():  # LibRaw reports a missing file as an I/O error; say what happened
            raise FrameError(f"frame {index} ({path}): no such file (removed after the frames were listed)",
                             index=index, name=path.name) from exc
        hint = ""
        if path.suffix.lower() not in LIBRAW_SUFFIXES:
            hint = f"; {not_raw_hint(path) or (path.suffix or 'no extension') + ' is not a raw-frame extension'}"
        raise FrameError(f"frame {index} ({path}): {_libraw_reason(exc)}{hint}", index=index, name=path.name) from exc
    except OSError as exc:
        reason = f"cannot read: {exc.strerror or exc}"
        raise FrameError(f"frame {index} ({path}): {reason}", index=index, name=path.name) from exc

    warnings: list[str] = []
    # LibRaw lists black by colour index (the values in raw_pattern); RawMeta wants it by 2x2 position.
    black = tuple(black_by_colour[int(c)] for c in pattern.ravel())
    if white <= 0 and camera_white is not None and max(camera_white) > 0:
        white = float(max(camera_white))
    wb = _wb_gains(camera_wb, daylight_wb, path, warnings)
    cam_to_srgb = _cam_to_srgb(rgb_xyz, color_matrix, path, warnings)
    try:
        meta = RawMeta(
            cfa=cfa,
            black_level=black,  # type: ignore[arg-type]
            white_level=white,
            wb_gains=wb,
            cam_to_srgb=cam_to_srgb,
            camera=_camera_name(path),
            warnings=tuple(warnings),
            flip=flip if flip in range(8) else 0,
        )
    except ValueError as exc:
        raise FrameError(f"frame {index} ({path}): bad metadata: {exc}", index=index, name=path.name) from exc
    if crop is not None:
        meta = shift_origin(meta, crop[0], crop[1])
        margins = (margins[0] + crop[0], margins[1] + crop[1])
    if path.suffix.lower() == ".dng":
        data, meta = _apply_dng_opcodes(path, data, meta, margins)
    return data, meta, margins


def _apply_dng_opcodes(
    path: Path, data: np.ndarray, meta: RawMeta, origin: tuple[int, int]
) -> tuple[np.ndarray, RawMeta]:
    """Apply what a DNG's OpcodeList1 and OpcodeList2 hold for Bayer data and LibRaw leaves out (:mod:`.opcodes`):
    bad-pixel fixes (lists 1 and 2), then lens-shading gain maps (list 2).

    ``origin``: where ``data`` starts in the stored image. OpcodeList1 is placed in the stored image, OpcodeList2
    in the ActiveArea; the gain maps are evaluated over the ActiveArea and the window ``data`` covers is taken, so
    a DefaultCrop (or LibRaw's even-rounded margins) keeps every pixel's own gain and every bad pixel its place.
    A list that cannot be read is left out with a warning; the frame is still decoded.
    """
    try:
        found = read_opcode_lists(path)
    except Exception as exc:  # noqa: BLE001 - tifffile on a damaged IFD: decode without the lists, and say so
        return data, _warn(meta, f"its opcode lists could not be read ({exc}); bad-pixel fixes and lens-shading gain "
                                 "maps not applied")
    if found is None:
        return data, meta
    top, left, bottom, right = found.active_area
    for number, raw_list, stage_origin, lost in (
        (1, found.list1, origin, "bad-pixel fixes"),
        (2, found.list2, (origin[0] - top, origin[1] - left), "bad-pixel fixes and lens-shading gain maps"),
    ):
        if raw_list is None:
            continue
        try:
            ops: OpcodeList = parsed_opcode_list(raw_list)
            field = shading_field(raw_list, bottom - top, right - left) if number == 2 else None
        except Exception as exc:  # noqa: BLE001 - a malformed list: decode without it, and say so
            meta = _warn(meta, f"its OpcodeList{number} could not be read ({exc}); {lost} not applied")
            continue
        if ops.others:
            log.debug("%s: OpcodeList%d also holds %s, not applied", path.name, number, ", ".join(ops.others))
        if ops.bad_pixels:
            data = fix_bad_pixels(data, meta.black_level, ops.bad_pixels, stage_origin,
                                  found.linearization if number == 1 else None)
        if field is not None:
            oy, ox = stage_origin
            h, w = data.shape
            if 0 <= oy and 0 <= ox and oy + h <= field.shape[0] and ox + w <= field.shape[1]:
                data = apply_gain_field(data, meta.black_level, field[oy : oy + h, ox : ox + w])
            else:
                meta = _warn(meta, "its gain maps do not cover the decoded area; lens-shading gain maps not applied")
    return data, meta


def _warn(meta: RawMeta, note: str) -> RawMeta:
    return dataclasses.replace(meta, warnings=(*meta.warnings, f"DNG: {note}"))


def _dng_default_crop(
    sizes: Any, visible: tuple[int, int], margins: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """A DNG's DefaultCrop as ``(top, left, height, width)`` inside the visible area, or None when it keeps all of it.

    LibRaw reports the crop in raw-image coordinates (``sizes.crop_*``: ActiveArea origin plus DefaultCropOrigin,
    rounded up to even so the Bayer phase stays, the size shrunk to match). Every DNG reader shows only this
    rectangle: the rest is the camera's border pixels, often dark or smeared. A crop outside the visible area (a
    malformed tag) is ignored.
    """
    try:
        top = int(sizes.crop_top_margin) - margins[0]
        left = int(sizes.crop_left_margin) - margins[1]
        height, width = int(sizes.crop_height), int(sizes.crop_width)
    except AttributeError:  # a rawpy without the fields
        return None
    vh, vw = visible
    if height <= 0 or width <= 0 or top < 0 or left < 0 or top + height > vh or left + width > vw:
        return None
    if (top, left, height, width) == (0, 0, vh, vw):
        return None
    return top, left, height, width
