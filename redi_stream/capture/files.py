"""Raw frames from files: a folder, a glob, a list of paths or one file (DNG/CinemaDNG, camera raws, .npy, .raw)."""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import logging
import math
import operator
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from redi_stream.errors import CaptureError, ConfigError, FrameError
from redi_stream.frames import CFA, RawFrame, RawMeta

from .base import RandomAccessSource
from .dngfast import DngFastReader
from .headerless import (
    LIBRAW, HeaderlessParams, bayer_from_array, find_sidecar, normalised_to_dn, raw_frame_count, read_headerless,
)
from .libraw import LIBRAW_SUFFIXES, SizeOnlyError, not_raw_hint, read_libraw
from .orient import orient

log = logging.getLogger(__name__)

DEFAULT_FPS = 24.0
NPY_SUFFIX = ".npy"
#: Suffixes (lower case) taken as frames when a *folder* is listed; everything else there is ignored.
FRAME_SUFFIXES = LIBRAW_SUFFIXES | {NPY_SUFFIX}
_CINEMADNG_FRAMERATE_TAG = 51044
_CINEMADNG_TIMECODES_TAG = 51043
_DIGITS = re.compile(r"([0-9]+)")
_GLOB_MAGIC = re.compile(r"[*?\[]")


def is_glob(text: str) -> bool:
    """Whether a source spec is a glob pattern (``*``, ``?`` or ``[``) rather than a path."""
    return _GLOB_MAGIC.search(text) is not None


def natural_key(text: str) -> tuple[list[str | int], str]:
    """Sort key that orders embedded numbers by value: ``frame2`` < ``frame10``; ties broken by the plain text."""
    parts: list[str | int] = []
    for k, part in enumerate(_DIGITS.split(text)):
        parts.append(int(part) if k % 2 else part.casefold())
    return parts, text


def _other_case_hint(pattern: str) -> str:
    """For a glob that matched nothing: a note when names in its folder match it in another case (``*.DNG`` for
    ``x.dng``; globbing is case-sensitive here), else ``""``."""
    folder, name = os.path.split(os.path.expanduser(pattern))
    folded = sorted((n for n in os.listdir(folder or ".") if fnmatch.fnmatch(n.lower(), name.lower()))
                    if os.path.isdir(folder or ".") else (), key=natural_key)
    if not folded:
        return ""
    files = f"{len(folded)} file" + ("s" if len(folded) != 1 else "")
    return f" (the match is case-sensitive: {files} such as {folded[0]} would match in another case)"


def collect_frame_paths(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Resolve a source spec to frame files.

    * a folder: its files with a raw-frame suffix (:data:`FRAME_SUFFIXES`, any case), hidden files (``.*``,
      e.g. macOS ``._x.dng``) excluded, in natural order;
    * one existing file: that file;
    * a glob pattern (``clip/*.dng``, ``**`` allowed): every matching file, in natural order of the full path;
    * a list of paths: those files, in the given order.

    Files named explicitly (by a glob, a list or directly) are kept whatever their suffix; a non-raw one fails
    when read (:class:`FrameError`).

    Raises:
        CaptureError: a missing path, an empty folder, a glob matching nothing, an empty list, a folder in a list.
    """
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        path = Path(text).expanduser()
        if path.is_dir():
            found = [
                p for p in path.iterdir()
                if not p.name.startswith(".") and p.suffix.lower() in FRAME_SUFFIXES and p.is_file()
            ]  # fmt: skip
            if not found:
                known = sorted((p for p in path.iterdir() if not p.name.startswith(".") and not_raw_hint(p)),
                               key=lambda p: natural_key(p.name))
                what = f": {not_raw_hint(known[0])}" if known else ""
                raise CaptureError(f"no raw frames in folder {path} (looked for {', '.join(sorted(FRAME_SUFFIXES))})"
                                   + what)
            return sorted(found, key=lambda p: natural_key(p.name))
        if path.is_file():
            return [path]
        if is_glob(text):
            matches = [Path(m) for m in glob.glob(os.path.expanduser(text), recursive=True)]
            files = [p for p in matches if p.is_file()]
            if not files:
                raise CaptureError(f"no files match {text}{_other_case_hint(text)}")
            return sorted(files, key=lambda p: natural_key(str(p)))
        raise CaptureError(f"no such file or folder: {text}")
    if isinstance(spec, (bytes, bytearray)) or not isinstance(spec, Sequence):
        raise TypeError(f"source must be a path, a glob pattern or a list of paths, got {type(spec).__name__}")
    paths = [Path(os.fspath(p)).expanduser() for p in spec]
    if not paths:
        raise CaptureError("empty list of frame files")
    for p in paths:
        if p.is_dir():
            raise CaptureError(f"{p} is a folder; a list must name frame files")
        if not p.exists():
            raise CaptureError(f"no such file: {p}")
    return paths


def npy_frame_count(path: Path) -> int | None:
    """Frames in a stacked ``.npy``: an (N, H, W) array whose last axis is wider than 4 (so (H, W, 3) RGB is not
    taken for one), read from its header (memory-mapped; no data is read). None for anything else: a single frame,
    or a file that :meth:`RawFileSource.read` will report."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        shape = arr.shape
        del arr
    except Exception:  # noqa: BLE001 - unreadable here means: decode it as one frame, and let that report it
        return None
    return int(shape[0]) if len(shape) == 3 and shape[2] > 4 else None


def _first_ifd_tag(path: Path, code: int):
    """The value of tag ``code`` in a TIFF/DNG file's first IFD, or None if absent or the header is unreadable (the
    CinemaDNG tags read here are optional metadata; ``read()`` reports a bad file itself)."""
    try:
        with tifffile.TiffFile(path) as tf:
            tag = tf.pages.first.tags.get(code)
            return None if tag is None else tag.value
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError):
        return None


def read_cinemadng_fps(path: Path) -> float | None:
    """The CinemaDNG ``FrameRate`` tag (51044) of a DNG's first IFD, or None if absent or unreadable."""
    value = _first_ifd_tag(path, _CINEMADNG_FRAMERATE_TAG)
    if value is None:
        return None
    try:
        num, den = (value[0], value[1]) if isinstance(value, (tuple, list)) else (value, 1)
        fps = float(num) / float(den)
    except (TypeError, ValueError, IndexError, ZeroDivisionError):
        return None
    return fps if math.isfinite(fps) and fps > 0 else None


#: An SMPTE time code as text: ``HH:MM:SS:FF``, or ``HH:MM:SS;FF`` when drop-frame.
TIMECODE_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])([:;])([0-9]{2})")


def timecode_from_smpte(code: bytes | Sequence[int]) -> str | None:
    """``HH:MM:SS:FF`` (``HH:MM:SS;FF`` when drop-frame) from the first 4 bytes of an SMPTE 12M time code as the
    CinemaDNG TimeCodes tag stores it (BCD frames, seconds, minutes, hours; flag bits masked off), or None when they
    are not a valid time code."""
    raw = bytes(bytearray(code[:4])) if len(code) >= 4 else b""
    if len(raw) != 4:
        return None
    fields = []
    for byte, tens_mask, top in zip(raw, (0x30, 0x70, 0x70, 0x30), (60, 60, 60, 24)):
        tens, units = (byte & tens_mask) >> 4, byte & 0x0F
        if units > 9 or tens * 10 + units >= top:
            return None
        fields.append(tens * 10 + units)
    frames, seconds, minutes, hours = fields
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{';' if raw[0] & 0x40 else ':'}{frames:02d}"


def read_cinemadng_timecode(path: Path) -> str | None:
    """The first time code of a DNG's CinemaDNG TimeCodes tag (51043), or None if absent, unreadable or invalid."""
    value = _first_ifd_tag(path, _CINEMADNG_TIMECODES_TAG)
    if value is None or isinstance(value, int):
        return None
    try:
        return timecode_from_smpte(value)
    except (TypeError, ValueError):
        return None


_NUMBERED = re.compile(r"^(?P<head>.*?)(?P<number>[0-9]+)(?P<tail>[^0-9]*)$")


def numbering_slots(paths: Sequence[Path]) -> list[int] | None:
    """Each file's place in its sequence's numbering, counted from the first: ``[0, 1, 2, 4]`` for
    ``A_0100.dng, A_0101.dng, A_0102.dng, A_0104.dng`` (``A_0103`` is missing). None unless every name is the same
    text around one last run of digits and the numbers rise."""
    slots: list[int] = []
    pattern: tuple[Path, str, str] | None = None
    for path in paths:
        m = _NUMBERED.match(path.name)
        if m is None:
            return None
        if pattern is None:
            pattern = (path.parent, m["head"], m["tail"])
        elif (path.parent, m["head"], m["tail"]) != pattern:
            return None
        slots.append(int(m["number"]))
    if not slots or any(b <= a for a, b in zip(slots, slots[1:])):
        return None
    return [n - slots[0] for n in slots]


def _checked_fps(fps: float) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    if not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps must be a positive finite number, got {fps!r}")
    return float(fps)


class RawFileSource(RandomAccessSource):
    """Raw Bayer frames from files, decoded on demand.

    Sources: a folder (its raw files, natural order, non-raw files and hidden files ignored), a glob pattern, a list
    of paths (kept in the given order) or one file. Formats: DNG/CinemaDNG and any 2x2-Bayer raw LibRaw reads,
    ``.npy`` (H, W) arrays or (N, H, W) stacks (N frames each, named ``clip.npy[k]``), and headerless ``.raw`` with
    :class:`HeaderlessParams` from ``raw_params`` or a JSON sidecar (rule in :mod:`redi_stream.capture.headerless`),
    one frame per file or a dump of N frames one after another (named ``dump.raw[k]``).
    Frames come out upright: a file's Orientation tag (a camera held vertically, a rig mounted upside down) turns the
    mosaic and its pattern (:mod:`.orient`).

    Thread safety: :meth:`read` may be called from any number of threads at once; each call opens, decodes and
    closes its own file handle and returns a frame it alone owns. The only shared state is frame 0's geometry,
    computed once under a lock, and the DNG fast path's reference frame (:class:`~.dngfast.DngFastReader`), replaced
    whole under its own lock.

    DNG frames go through :class:`~.dngfast.DngFastReader`: a file that matches the last frame LibRaw decoded in
    every tag but data offsets and time stamps is read with tifffile alone (bit-identical output, several times
    faster); any other file is decoded by LibRaw.

    Attributes:
        paths: the frame files in order.
        names: their file names.
        fps: ``fps`` if given, else the CinemaDNG FrameRate of the first DNG, else 24.0.
        tagged_fps: that FrameRate (the rate the clip was shot at), or None when the first DNG has none.
        live: always False (a file source never drops frames).
        name: the spec as given, for messages.
        alike: frames must all have frame 0's size and Bayer pattern (a video), checked per frame; False for a
            folder of separate photos, which may each differ.
    """

    live = False

    def __init__(
        self,
        spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        raw_params: HeaderlessParams | None = None,
        fps: float | None = None,
        alike: bool = True,
    ) -> None:
        if raw_params is not None and not isinstance(raw_params, HeaderlessParams):
            raise ConfigError(f"raw_params must be a HeaderlessParams, got {type(raw_params).__name__}")
        # A stacked .npy (N, H, W), or a headerless .raw dump of N frames, gives N frames: paths[i] is its file,
        # _member[i] the frame's place in it.
        self._raw_params = raw_params
        self.alike = alike
        self.paths: list[Path] = []
        self._member: list[int | None] = []
        for path in collect_frame_paths(spec):
            n = self._frames_in(path)
            self.paths.extend([path] * (1 if n is None else n))
            self._member.extend([None] if n is None else range(n))
        if not self.paths:
            raise CaptureError(f"no frames in {os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else spec}: "
                               "its .npy stacks are empty (shape (0, H, W))")
        self.names: list[str] = [p.name if k is None else f"{p.name}[{k}]" for p, k in zip(self.paths, self._member)]
        if isinstance(spec, (str, os.PathLike)):
            self.name: str = os.fspath(spec)
        else:
            self.name = f"{len(self.paths)} files from {self.paths[0].parent}"
        first_dng = next((p for p in self.paths if p.suffix.lower() == ".dng"), None)
        self.tagged_fps: float | None = read_cinemadng_fps(first_dng) if first_dng is not None else None
        self.fps = _checked_fps(fps) if fps is not None else (self.tagged_fps or DEFAULT_FPS)
        # A CinemaDNG clip is a video: its files are numbered frame by frame, and a number missing from the run is a
        # frame the camera (or a copy) lost. Frames then keep the time their number gives, so the video holds the
        # frame before a gap for its length and stays in step with the clip's sound.
        self._slots: list[int] | None = None
        if self.tagged_fps is not None and all(k is None for k in self._member):
            slots = numbering_slots(self.paths)
            if slots is not None and slots[-1] != len(slots) - 1:
                self._slots = slots
                self._report_gaps(slots)
        self._reference: tuple[int, int, CFA] | None = None
        self._reference_tried = False
        self._reference_lock = threading.Lock()
        self._dng = DngFastReader()
        self._closed = False

    # -- protocol -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"RawFileSource({self.name!r}, {len(self)} frames, {self.fps:g} fps)"

    def read(self, index: int) -> RawFrame:
        """Decode frame ``index`` (0-based) fully.

        Returns:
            A :class:`RawFrame` whose (H, W) uint16 data the caller owns; ``t_ns = round(index * 1e9 / fps)``,
            or for a CinemaDNG clip with numbers missing from its file names the time its number gives.

        Raises:
            IndexError: ``index`` outside ``[0, len)``.
            FrameError: the file is unreadable, truncated, corrupt, of the wrong size, or its size or CFA differs
                from frame 0's; the message names the index and the file.
            UnsupportedSensorError: not a 2x2 Bayer mosaic (X-Trans, Foveon, linear DNG).
            CaptureError: the source is closed.
        """
        i = operator.index(index)
        if not 0 <= i < len(self.paths):
            raise IndexError(f"frame index {index} out of range for {len(self.paths)} frames in {self.name}")
        if self._closed:
            raise CaptureError(f"{self.name} is closed")
        data, meta = self._decode(i)
        if self.alike and i == 0:
            self._set_reference(data.shape, meta.cfa)
        elif self.alike:
            self._check_consistent(i, data.shape, meta.cfa)
        slot = i if self._slots is None else self._slots[i]
        return RawFrame(data=data, meta=meta, index=i, t_ns=round(slot * 1e9 / self.fps), name=self.names[i])

    def append(self, paths: Sequence[str | os.PathLike[str]]) -> int:
        """Add frame files after the last one (a folder that is still being written, ``stream.follow``); returns
        how many frames they hold. Call from the thread that reads the new frames, before reading them."""
        added = 0
        for p in paths:
            path = Path(os.fspath(p))
            n = self._frames_in(path)
            self.paths.extend([path] * (1 if n is None else n))
            self._member.extend([None] if n is None else range(n))
            self.names.extend([path.name] if n is None else [f"{path.name}[{k}]" for k in range(n)])
            added += 1 if n is None else n
        if self._slots is not None:  # frames after a numbered clip's last one follow it one by one
            self._slots.extend(range(self._slots[-1] + 1, self._slots[-1] + 1 + added))
        return added

    def timecode(self, index: int = 0) -> str | None:
        """The SMPTE time code the camera stamped on frame ``index`` (CinemaDNG TimeCodes, ``HH:MM:SS:FF``), or None
        when its file has none (also for .npy and .raw frames)."""
        path = self.paths[operator.index(index)]
        if path.suffix.lower() != ".dng" or self._member[index] is not None:
            return None
        return read_cinemadng_timecode(path)

    # -- internals ------------------------------------------------------------------------------------------------

    def _report_gaps(self, slots: list[int]) -> None:
        """One warning for the numbers missing from a CinemaDNG clip: how many frames, and the first missing name."""
        first = next(k for k in range(1, len(slots)) if slots[k] != slots[k - 1] + 1)
        m = _NUMBERED.match(self.names[first - 1])
        digits = m["number"]
        lost = f"{m['head']}{int(digits) + 1:0{len(digits)}d}{m['tail']}"
        missing = slots[-1] + 1 - len(slots)
        log.warning("%s: %d frame%s missing from the numbering (the first is %s); the video holds the frame before "
                    "each gap for its length, so the timing and the sound stay as shot", self.name, missing,
                    "s" if missing != 1 else "", lost)

    def _decode(self, i: int) -> tuple[np.ndarray, RawMeta]:
        """Frame ``i`` upright (its file's orientation applied: :mod:`.orient`)."""
        return orient(*self._decode_stored(i))

    def _decode_stored(self, i: int) -> tuple[np.ndarray, RawMeta]:
        path = self.paths[i]
        suffix = path.suffix.lower()
        if suffix == NPY_SUFFIX:
            return self._decode_npy(i, path)
        if suffix == ".raw":
            params, source = self._params_for(i, path)
            if params is not None and params.decoder == LIBRAW:
                return read_libraw(path, i, trust_file_size=True)
            if params is not None:
                return self._decode_headerless(i, path, params, source)
            try:
                return read_libraw(path, i)
            except SizeOnlyError:
                raise  # says what to give
            except FrameError as exc:
                raise FrameError(
                    f"{exc}; if it is a headerless dump, give its layout (--raw-width, --raw-height, --cfa, "
                    f"--black, --white, --raw-dtype) or a sidecar {path.name}.json (keys width, height, cfa, "
                    f"black, white, dtype)",
                    index=i,
                    name=path.name,
                ) from exc.__cause__
        if suffix == ".dng":
            return self._dng.read(path, i)
        return read_libraw(path, i)

    def _frames_in(self, path: Path) -> int | None:
        """Frames in a file that holds several (a stacked .npy, a headerless .raw dump), else None."""
        suffix = path.suffix.lower()
        if suffix == NPY_SUFFIX:
            return npy_frame_count(path)
        if suffix == ".raw":
            try:
                params, _ = self._params_for(0, path)
            except FrameError:
                return None  # a bad sidecar: reported when the frame is read
            return raw_frame_count(path, params) if params is not None else None
        return None

    def _params_for(self, i: int, path: Path) -> tuple[HeaderlessParams | None, str]:
        if self._raw_params is not None:
            return self._raw_params, "raw_params"
        sidecar = find_sidecar(path)
        if sidecar is None:
            return None, ""
        try:
            return HeaderlessParams.from_json(sidecar), f"sidecar {sidecar.name}"
        except ConfigError as exc:
            raise FrameError(f"frame {i} ({path}): {exc}", index=i, name=path.name) from exc

    def _decode_headerless(
        self, i: int, path: Path, params: HeaderlessParams, source: str
    ) -> tuple[np.ndarray, RawMeta]:
        try:
            if params.width is None or params.height is None:
                raise ConfigError(f"{source} gives no width/height, which a headerless .raw frame needs")
            data = read_headerless(path, params, self._member[i])
            meta = params.meta()
        except (ValueError, OSError) as exc:  # ConfigError is a ValueError
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise FrameError(f"frame {i} ({self._where(i)}): {reason}", index=i, name=self.names[i]) from exc
        return data, meta

    def _decode_npy(self, i: int, path: Path) -> tuple[np.ndarray, RawMeta]:
        params, source = self._params_for(i, path)
        member = self._member[i]
        try:
            if member is None:
                arr = np.load(path, allow_pickle=False)
            else:  # one frame of a stack: only its bytes are read
                arr = np.array(np.load(path, mmap_mode="r", allow_pickle=False)[member])
            if not isinstance(arr, np.ndarray):
                raise ValueError("not a single array (.npz archives are not frames)")
            if params is None:
                params = HeaderlessParams(None, None)
            if params.decoder == LIBRAW:
                raise ValueError(f"{source} says decoder {LIBRAW!r}, which applies to .raw files only")
            arr, params, note = normalised_to_dn(arr, params)
            data = bayer_from_array(arr)
            h, w = data.shape
            if (params.height is not None and params.height != h) or (params.width is not None and params.width != w):
                raise ValueError(f"array is {h}x{w}, but {source} says {params.height}x{params.width}")
            meta = params.meta(arr.dtype)
            if note:  # one text for every frame, so a sequence logs it once
                meta = dataclasses.replace(meta, warnings=(*meta.warnings, f".npy frames: {note}"))
        except (ValueError, OSError, EOFError, IndexError) as exc:  # IndexError: a stack cut short since listed
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise FrameError(f"frame {i} ({self._where(i)}): {reason}", index=i, name=self.names[i]) from exc
        return data, meta

    def _where(self, i: int) -> str:
        """Frame ``i``'s file for messages, with its place in a stacked .npy or a .raw dump of several."""
        member = self._member[i]
        return str(self.paths[i]) if member is None else f"{self.paths[i]}[{member}]"

    def _set_reference(self, shape: tuple[int, ...], cfa: CFA) -> None:
        with self._reference_lock:
            if self._reference is None:
                self._reference = (int(shape[0]), int(shape[1]), cfa)
                self._reference_tried = True

    def _get_reference(self) -> tuple[int, int, CFA] | None:
        with self._reference_lock:
            if not self._reference_tried:
                self._reference_tried = True
                try:
                    data, meta = self._decode(0)
                except CaptureError:
                    # Frame 0 reports its own error when read; the other frames are then not compared.
                    return None
                self._reference = (int(data.shape[0]), int(data.shape[1]), meta.cfa)
            return self._reference

    def _check_consistent(self, i: int, shape: tuple[int, ...], cfa: CFA) -> None:
        ref = self._get_reference()
        if ref is None:
            return
        h, w, ref_cfa = ref
        if (shape[0], shape[1]) != (h, w) or cfa != ref_cfa:
            raise FrameError(
                f"frame {i} ({self._where(i)}) is {shape[0]}x{shape[1]} {cfa}, expected {h}x{w} {ref_cfa} like frame 0 "
                "(separate photos? --stills takes each as it is)",
                index=i,
                name=self.names[i],
            )
