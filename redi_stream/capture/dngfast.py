"""A fast, self-checking DNG decoder for frame sequences: tifffile reads the pixels, LibRaw vouches for them.

Why: opening a DNG with rawpy/LibRaw costs several milliseconds per frame even when the file is an uncompressed
16-bit mosaic that tifffile reads in well under one, and in a live pipeline that time is taken from the network.
The frames of one sequence normally differ only in their pixels, where those pixels lie, and time stamps.

How (:class:`DngFastReader`, one per source):

* A *reference* is the last frame LibRaw decoded in full (:func:`~.libraw.read_libraw_with_margins`), kept with its
  :class:`RawMeta`, where its visible area lies in the stored raw image (LibRaw's own margins) and the *fingerprint*
  of the file: byte order, file size, and the type, count and value of every tag of every IFD (IFD0, the other
  top-level IFDs and all SubIFDs, the EXIF IFD's contents included), except the tags in :data:`PER_FRAME_TAGS`:
  where the image data lies (strip/tile offsets and byte counts, SubIFD offsets) and per-frame time stamps and
  identifiers, which LibRaw only copies into fields redi-stream never reads.
* Only an *eligible* file is read this way: exactly one IFD holds the raw mosaic (NewSubfileType 0,
  PhotometricInterpretation CFA), stored uncompressed as one 16-bit unsigned sample per pixel, with no predictor,
  no LinearizationTable and no OpcodeList anywhere, in strips or in tiles as wide as the image (so row ``r``
  lies at the same place however a reader walks the file), those forming one contiguous run of exactly the size
  the geometry needs and lying wholly inside the file. The pixels are then one exact-length read.
* A later frame whose fingerprint equals the reference's gets the pixels tifffile read, cropped like the
  reference, and a copy of the reference's metadata. Any other frame (different fingerprint, not eligible, or any
  tifffile error at all) is decoded by LibRaw, which also gives truncated and corrupt files their usual
  :class:`~redi_stream.errors.FrameError`, and if eligible becomes the new reference.

Why this gives exactly LibRaw's output: for such a file LibRaw's ``raw_image`` is the stored samples as they are
(no decompression, curve or opcode touches them) and everything in :class:`RawMeta` comes from tags. Two files
that agree in every tag but the excluded ones, and in size and byte order, are parsed identically by LibRaw and
differ only in the samples it copies. This is checked, not assumed: whenever a reference is set, the pixels
tifffile reads from that very file, cropped at LibRaw's margins, must equal LibRaw's ``raw_image_visible`` bit for
bit; if they ever differ the fast path is switched off for the whole source. It is also switched off when the
reference's metadata carries warnings (they name their file), and when a DNG met before any reference is not
eligible (a compressed or packed sequence would only pay for the parse).

Cost bound: a frame that misses costs its LibRaw decode plus the tifffile read and the pixel check (~1.5 ms at
1920x1080), so a sequence whose metadata changes on every frame (per-frame white balance, say) would be slower
than LibRaw alone. After :data:`MISSES_BEFORE_PAUSE` misses in a row the reader therefore sends the next DNGs
straight to LibRaw for a pause (8 frames, doubling up to 64 while the misses go on), then tries two frames again
(one to become the reference, one to match it); a single match ends the pauses. Pauses change only speed.

Thread safety: :meth:`DngFastReader.read` may be called from many threads at once. The reference is replaced as a
whole under a lock; all file I/O and decoding happen outside it. Each call returns arrays only its caller holds.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from redi_stream.frames import RawMeta

from .libraw import read_libraw_with_margins
from .tiffscan import all_ifds, int_tag, is_raw_cfa

log = logging.getLogger(__name__)

#: Tags left out of the fingerprint: they change from frame to frame and do not change what LibRaw decodes
#: (data placement is checked separately; time stamps and IDs only fill LibRaw fields that redi-stream never reads).
PER_FRAME_TAGS = frozenset({
    273,  # StripOffsets
    279,  # StripByteCounts
    324,  # TileOffsets
    325,  # TileByteCounts
    330,  # SubIFDs (their offsets; the SubIFDs themselves are fingerprinted)
    306,  # DateTime
    36867, 36868,  # DateTimeOriginal, DateTimeDigitized (TIFF/EP in IFD0, or in the EXIF IFD)
    36880, 36881, 36882,  # OffsetTime, OffsetTimeOriginal, OffsetTimeDigitized
    37520, 37521, 37522,  # SubsecTime, SubsecTimeOriginal, SubsecTimeDigitized
    42016,  # ImageUniqueID
    50781,  # RawDataUniqueID
    50971,  # PreviewDateTime
    51043,  # TimeCodes (CinemaDNG)
})  # fmt: skip
# tifffile returns the EXIF IFD as a {name: value} dict.
_PER_FRAME_EXIF_NAMES = frozenset(
    name for code in PER_FRAME_TAGS if (name := tifffile.TIFF.EXIF_TAGS.get(code)) is not None
)
#: Fingerprint misses in a row (frames decoded by LibRaw although a reference existed) before pausing the fast path.
MISSES_BEFORE_PAUSE = 6  # above the decode pool's usual width, whose frames may all miss at one metadata change
_FIRST_PAUSE, _MAX_PAUSE = 8, 64  # frames
# LinearizationTable, OpcodeList1, OpcodeList2, OpcodeList3: they change samples, so rule the file out.
_SAMPLE_CHANGING_TAGS = {50712: "LinearizationTable", 51008: "OpcodeList1", 51009: "OpcodeList2",
                         51022: "OpcodeList3"}  # fmt: skip


@dataclass(frozen=True)
class _Parsed:
    """One eligible DNG as tifffile read it: fingerprint and the whole stored raw image."""

    fingerprint: tuple[Any, ...]
    pixels: np.ndarray  # (raw rows, raw columns) uint16, as stored


@dataclass(frozen=True)
class _Reference:
    """The last frame LibRaw decoded: its fingerprint, metadata and where its visible area lies."""

    fingerprint: tuple[Any, ...]
    meta: RawMeta  # a private copy: callers may change the arrays of the metas they are given
    top: int
    left: int
    height: int
    width: int


class DngFastReader:
    """Decode the DNG frames of one source: tifffile for files that match a LibRaw-verified reference, else LibRaw.

    Output is identical to :func:`~redi_stream.capture.libraw.read_libraw`'s (see the module docstring for why).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reference: _Reference | None = None
        self._disabled = False
        self._misses = 0  # fingerprint misses in a row
        self._pause_left = 0  # DNGs still to send straight to LibRaw
        self._next_pause = _FIRST_PAUSE

    @property
    def enabled(self) -> bool:
        """False once the fast path has been switched off for this source."""
        with self._lock:
            return not self._disabled

    def read(self, path: Path, index: int) -> tuple[np.ndarray, RawMeta]:
        """Decode one DNG like :func:`~redi_stream.capture.libraw.read_libraw`.

        Returns:
            ``(data, meta)``: (H, W) uint16 visible area, C-contiguous, owned by the caller, and its metadata.

        Raises:
            FrameError, UnsupportedSensorError: as :func:`~redi_stream.capture.libraw.read_libraw` (only LibRaw
                decides that a file is bad).
        """
        with self._lock:
            reference, skip = self._reference, self._disabled or self._pause_left > 0
            if self._pause_left > 0:
                self._pause_left -= 1
        if skip:
            return self._libraw(path, index)
        parsed = _parse_or_reason(path)
        if isinstance(parsed, _Parsed) and reference is not None:
            hit = parsed.fingerprint == reference.fingerprint
            self._count(hit)
            if hit:
                return _crop(parsed.pixels, reference), _copy_meta(reference.meta)
        data, meta, margins = read_libraw_with_margins(path, index)
        if isinstance(parsed, _Parsed):
            self._adopt(path, parsed, data, meta, margins)
        elif parsed is not None and reference is None:
            self._disable(f"{path.name} is not eligible ({parsed})")
        return data, meta

    # -- internals ------------------------------------------------------------------------------------------------

    @staticmethod
    def _libraw(path: Path, index: int) -> tuple[np.ndarray, RawMeta]:
        data, meta, _ = read_libraw_with_margins(path, index)
        return data, meta

    def _adopt(self, path: Path, parsed: _Parsed, data: np.ndarray, meta: RawMeta, margins: tuple[int, int]) -> None:
        """Make a frame LibRaw just decoded the reference, once tifffile's pixels are shown to equal LibRaw's."""
        if meta.warnings:
            self._disable(f"{path.name}'s metadata has warnings, which name their file")
            return
        top, left = margins
        height, width = data.shape
        stored = parsed.pixels
        if top < 0 or left < 0 or top + height > stored.shape[0] or left + width > stored.shape[1]:
            self._disable(f"{path.name}: LibRaw's {height}x{width} area at ({top}, {left}) is outside the "
                          f"{stored.shape[0]}x{stored.shape[1]} image tifffile read")  # fmt: skip
            return
        if not np.array_equal(stored[top : top + height, left : left + width], data):
            self._disable(f"{path.name}: tifffile's pixels differ from LibRaw's")
            return
        reference = _Reference(parsed.fingerprint, _copy_meta(meta), top, left, height, width)
        with self._lock:
            if not self._disabled:
                self._reference = reference

    def _count(self, hit: bool) -> None:
        """Keep the run of fingerprint misses; pause the fast path when it grows long (module docstring)."""
        with self._lock:
            if hit:
                self._misses, self._next_pause = 0, _FIRST_PAUSE
                return
            self._misses += 1
            if self._misses < MISSES_BEFORE_PAUSE:
                return
            self._pause_left, pause = self._next_pause, self._next_pause
            self._next_pause = min(2 * self._next_pause, _MAX_PAUSE)
            self._misses = MISSES_BEFORE_PAUSE - 2  # after the pause: one frame to adopt, one to match
        log.debug("DNG metadata keeps changing; the next %d frames go straight to LibRaw", pause)

    def _disable(self, why: str) -> None:
        with self._lock:
            if self._disabled:
                return
            self._disabled = True
            self._reference = None
        log.debug("fast DNG decoding off for this source: %s", why)


def _copy_meta(meta: RawMeta) -> RawMeta:
    """An equal RawMeta that shares no mutable array with ``meta``."""
    return dataclasses.replace(meta, cam_to_srgb=meta.cam_to_srgb.copy())


def _crop(stored: np.ndarray, ref: _Reference) -> np.ndarray:
    """The reference's visible area of ``stored`` (a fresh array nobody else holds) as C-contiguous uint16."""
    if stored.shape == (ref.height, ref.width) and stored.dtype == np.uint16 and stored.flags.c_contiguous:
        return stored  # the whole stored image is visible: no copy
    area = stored[ref.top : ref.top + ref.height, ref.left : ref.left + ref.width]
    return np.array(area, dtype=np.uint16, order="C", copy=True)


def _parse_or_reason(path: Path) -> _Parsed | str | None:
    """Read ``path`` with tifffile: a :class:`_Parsed` if eligible, else why not (str), or None on any error."""
    try:
        return _parse(path)
    except Exception as exc:  # noqa: BLE001 - any failure just means LibRaw decodes this file (and judges it)
        log.debug("tifffile cannot read %s (%s: %s); LibRaw decodes it", path.name, type(exc).__name__, exc)
        return None


def _parse(path: Path) -> _Parsed | str:
    with tifffile.TiffFile(path) as tf:
        if tf.is_bigtiff:
            return "BigTIFF"
        file_size = tf.filehandle.size
        ifds = list(all_ifds(tf.pages))
        raws = [p for p in ifds if is_raw_cfa(p)]
        if len(raws) != 1:
            return f"{len(raws)} raw CFA images"
        raw = raws[0]
        for page in ifds:
            for code, name in _SAMPLE_CHANGING_TAGS.items():
                if code in page.tags:
                    return f"has a {name}"
        reason = _layout_problem(raw, file_size)
        if reason:
            return reason
        fingerprint = (tf.byteorder, file_size, tuple(_ifd_fingerprint(p) for p in ifds))
        return _Parsed(fingerprint, _read_samples(tf, raw))


def _layout_problem(raw: Any, file_size: int) -> str:
    """Why the raw IFD's samples cannot be taken as they are stored, or '' if they can."""
    checks = (
        (259, 1, 1, "compressed"),  # Compression: none
        (277, 1, 1, "not one sample per pixel"),  # SamplesPerPixel
        (258, 1, 16, "not 16 bits per sample"),  # BitsPerSample
        (339, 1, 1, "samples not unsigned integers"),  # SampleFormat
        (317, 1, 1, "has a predictor"),  # Predictor
        (266, 1, 1, "reversed bit order"),  # FillOrder
    )
    for code, default, wanted, reason in checks:
        if int_tag(raw, code, default) != wanted:
            return reason
    height, width = raw.imagelength, raw.imagewidth
    if height < 1 or width < 1:
        return "empty image"
    if raw.is_tiled:
        # Only tiles as wide as the image: then every reader finds row r at the same place, whether it walks the
        # tiles or reads rows straight on. (LibRaw reads a single tile wider than the image as if it were not.)
        tile_h, tile_w = raw.tilelength, raw.tilewidth
        if tile_w != width or tile_h < 1:
            return f"{tile_w}x{tile_h} tiles in a {width}-wide image"
        n = -(-height // tile_h)
        sizes = [tile_h * tile_w * 2] * n
    else:
        rows = min(raw.rowsperstrip or height, height)
        n = -(-height // rows)
        sizes = [min(rows, height - k * rows) * width * 2 for k in range(n)]
    offsets, counts = tuple(raw.dataoffsets), tuple(raw.databytecounts)
    if counts != tuple(sizes) or len(offsets) != n:
        return "image data segments not of the sizes the geometry needs"
    if any(offsets[k] + counts[k] != offsets[k + 1] for k in range(n - 1)):
        return "image data not stored as one contiguous run"
    if offsets[0] < 8 or offsets[0] + sum(sizes) > file_size:
        return "image data outside the file (truncated?)"
    return ""


def _read_samples(tf: tifffile.TiffFile, raw: Any) -> np.ndarray:
    """The stored raw image as a new (rows, columns) native uint16 array, for a raw IFD :func:`_layout_problem`
    passed: its strips or full-width tiles are one contiguous run from ``dataoffsets[0]`` holding the rows in
    order, so the image is the run's first rows x columns samples, read with one exact-length read (tifffile's
    ``FileHandle.read_array``, which raises on a short read) straight into the returned array."""
    height, width = raw.imagelength, raw.imagewidth
    out = np.empty((height, width), np.uint16)
    return tf.filehandle.read_array(np.dtype(tf.byteorder + "u2"), height * width, raw.dataoffsets[0], out=out)


def _ifd_fingerprint(page: Any) -> tuple[Any, ...]:
    return tuple(
        (tag.code, int(tag.dtype), tag.count, _frozen(tag.value))
        for tag in page.tags.values()
        if tag.code not in PER_FRAME_TAGS
    )


def _frozen(value: Any) -> Any:
    """A comparable, immutable form of a tag value (arrays, lists and the EXIF/GPS IFDs' dicts included).

    A dict (a sub-IFD tifffile parsed into ``{name: value}``) loses the entries named like :data:`PER_FRAME_TAGS`.
    """
    if isinstance(value, dict):
        kept = ((str(k), _frozen(v)) for k, v in value.items() if k not in _PER_FRAME_EXIF_NAMES)
        return ("dict", tuple(sorted(kept)))
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value
