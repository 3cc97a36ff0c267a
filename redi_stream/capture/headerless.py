"""Frames without a raw header: headerless ``.raw`` dumps and ``.npy`` Bayer arrays, and their parameters.

Where the parameters come from (one rule, first match wins):

1. ``raw_params`` given to :class:`~redi_stream.capture.RawFileSource` (applies to every headerless/npy frame);
2. a per-file sidecar beside the frame, named after it with ``.json`` appended: ``frame_0001.raw.json``;
3. a per-folder sidecar ``redi.json`` in the frame's folder;
4. for ``.npy`` only: defaults (RGGB, black 0, white = the array dtype's maximum; a float array whose values all lie in
   [0, 1] is taken as normalised, white 1, see :func:`normalised_to_dn`). A ``.raw`` without parameters
   goes to LibRaw, which reads camera ``.raw`` formats by their header (Panasonic, Leica, ...). A ``.raw`` with no
   header LibRaw knows is an error, also when LibRaw would accept it by its file size alone: LibRaw keeps a table of
   headerless camera dumps keyed on file size, and by it any 1920x1080 16-bit dump is read as a 16-bit GBRG frame,
   any 768x512 one as an 8-bit 1024x768 frame (see :func:`redi_stream.capture.libraw.read_libraw`).

A ``.raw`` file whose size after ``offset`` is a whole number of frames holds that many, one after another (what
``v4l2-ctl --stream-to`` and other recorders write): frame ``k`` is ``dump.raw[k]``.

A sidecar is a JSON object with the keys of :class:`HeaderlessParams`: ``width``, ``height``, ``cfa``, ``black``,
``white``, ``dtype``, ``offset``, ``bits`` (``width``/``height`` may be left out for ``.npy``). Example::

    {"width": 1920, "height": 1080, "cfa": "RGGB", "black": 64, "white": 1023, "dtype": "<u2"}

``{"decoder": "libraw"}`` instead (no other key) hands the ``.raw`` files it covers to LibRaw and accepts its reading
by file size: for the headerless camera formats in LibRaw's table (old phone and industrial-camera dumps).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from redi_stream.errors import ConfigError
from redi_stream.frames import CFA, RawMeta

FOLDER_SIDECAR_NAME = "redi.json"

#: ``HeaderlessParams.decoder`` values: read with the layout given, or let LibRaw read the file its own way.
HEADERLESS, LIBRAW = "headerless", "libraw"

# Accepted spellings -> canonical NumPy dtype string of the stored samples.
_DTYPES = {
    "u1": "u1", "uint8": "u1", "|u1": "u1",
    "<u2": "<u2", "uint16": "<u2", "u2": "<u2", "uint16le": "<u2",
    ">u2": ">u2", "uint16be": ">u2",
}  # fmt: skip
_VALID_DTYPES = "'u1' (uint8), '<u2' (uint16 little-endian), '>u2' (uint16 big-endian)"


def canonical_dtype(value: Any, what: str = "dtype") -> str:
    """The NumPy dtype string of a stored-sample spelling (``uint16`` -> ``'<u2'``).

    Raises:
        ConfigError: a type headerless frames cannot have (names ``what``, e.g. ``--raw-dtype``).
    """
    dtype = _DTYPES.get(str(value).lower())
    if dtype is None:
        raise ConfigError(f"unsupported {what} {value!r}; valid: {_VALID_DTYPES}")
    return dtype


def _positive_int_or_none(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class HeaderlessParams:
    """How to interpret a headerless raw frame (or the levels of an ``.npy`` frame).

    Attributes:
        width, height: frame size in pixels (columns, rows). Required for ``.raw``; for ``.npy`` ``None`` means
            "take it from the array" and a value must match the array.
        cfa: Bayer pattern of the frame as stored; a :class:`~redi_stream.frames.CFA` or its name (any case).
        black: black level in DN, one value or four per 2x2 position in reading order (TL, TR, BL, BR).
        white: saturation level in DN; ``None`` means ``2**bits - 1`` if ``bits`` is given, else the maximum of
            the stored dtype.
        dtype: stored sample type: ``'u1'``, ``'<u2'`` (default) or ``'>u2'`` (aliases ``uint8``, ``uint16``).
        offset: bytes to skip at the start of the file (a fixed-size header).
        bits: significant bits per sample (e.g. 10, 12, 14), used only for the default ``white``.
        decoder: ``"headerless"`` (default): read the file with the layout above. ``"libraw"``: ``.raw`` only, and
            with no other field given: LibRaw reads the file, trusting the layout it infers from the file size
            when the file has no header (see the module docstring).
    """

    width: int | None
    height: int | None
    cfa: CFA | str = CFA.RGGB
    black: float | tuple[float, float, float, float] = 0.0
    white: float | None = None
    dtype: str = "<u2"
    offset: int = 0
    bits: int | None = None
    decoder: str = HEADERLESS

    def __post_init__(self) -> None:
        if self.decoder not in (HEADERLESS, LIBRAW):
            raise ConfigError(f"unknown decoder {self.decoder!r}; valid: {HEADERLESS!r}, {LIBRAW!r}")
        if self.decoder == LIBRAW:
            given = [f.name for f in fields(self) if f.name != "decoder"
                     and getattr(self, f.name) != (None if f.default is MISSING else f.default)]
            if given:
                raise ConfigError(f"decoder {LIBRAW!r} takes the layout from LibRaw; remove {', '.join(given)}")
        object.__setattr__(self, "width", _positive_int_or_none("width", self.width))
        object.__setattr__(self, "height", _positive_int_or_none("height", self.height))
        try:
            cfa = CFA(str(self.cfa).upper())
        except ValueError:
            raise ConfigError(
                f"unknown CFA {self.cfa!r}; valid: {', '.join(c.value for c in CFA)}"
            ) from None
        object.__setattr__(self, "cfa", cfa)

        object.__setattr__(self, "dtype", canonical_dtype(self.dtype))

        black = self.black
        if isinstance(black, (int, float, np.integer, np.floating)) and not isinstance(black, bool):
            black = (float(black),) * 4
        else:
            try:
                black = tuple(float(b) for b in black)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                raise ConfigError(f"black must be a number or 4 numbers (TL, TR, BL, BR), got {self.black!r}") from None
            if len(black) != 4:
                raise ConfigError(f"black needs 1 or 4 values (TL, TR, BL, BR), got {len(black)}")
        if not all(math.isfinite(b) and b >= 0 for b in black):
            raise ConfigError(f"black levels must be finite and >= 0, got {black}")
        object.__setattr__(self, "black", black)

        if self.bits is not None:
            if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)) or not 1 <= self.bits <= 16:
                raise ConfigError(f"bits must be an integer from 1 to 16, got {self.bits!r}")
            object.__setattr__(self, "bits", int(self.bits))
        if self.white is not None:
            if isinstance(self.white, bool) or not isinstance(self.white, (int, float, np.integer, np.floating)):
                raise ConfigError(f"white must be a number, got {self.white!r}")
            white = float(self.white)
            if not math.isfinite(white) or white <= max(black):
                raise ConfigError(f"white level {self.white!r} must be finite and exceed the black level {max(black)}")
            object.__setattr__(self, "white", white)
        if isinstance(self.offset, bool) or not isinstance(self.offset, (int, np.integer)) or self.offset < 0:
            raise ConfigError(f"offset must be an integer >= 0, got {self.offset!r}")
        object.__setattr__(self, "offset", int(self.offset))

    @property
    def black_level(self) -> tuple[float, float, float, float]:
        """Black levels per 2x2 position (TL, TR, BL, BR)."""
        return self.black  # type: ignore[return-value]

    def white_level(self, stored_dtype: np.dtype | str | None = None) -> float:
        """The white level: ``white`` if given, else ``2**bits - 1``, else the maximum of ``stored_dtype``
        (default: this object's ``dtype``)."""
        if self.white is not None:
            return float(self.white)
        if self.bits is not None:
            return float(2**self.bits - 1)
        dt = np.dtype(stored_dtype if stored_dtype is not None else self.dtype)
        return float(np.iinfo(dt).max) if dt.kind in "ui" else 65535.0

    def frame_bytes(self) -> int:
        """Expected file size in bytes of a headerless frame: ``offset + width * height * itemsize``."""
        if self.width is None or self.height is None:
            raise ConfigError("a headerless .raw frame needs width and height")
        return self.offset + self.width * self.height * np.dtype(self.dtype).itemsize

    def meta(self, stored_dtype: np.dtype | str | None = None) -> RawMeta:
        """A :class:`RawMeta` with these levels and pattern (no white balance, identity colour matrix)."""
        white = self.white_level(stored_dtype)
        if white <= max(self.black_level):
            raise ConfigError(f"white level {white} must exceed the black level {max(self.black_level)}")
        return RawMeta(cfa=self.cfa, black_level=self.black_level, white_level=white)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "parameters") -> HeaderlessParams:
        """Build from a mapping with the field names as keys; unknown keys are an error (they are usually typos)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        kwargs = dict(data)
        kwargs.setdefault("width", None)
        kwargs.setdefault("height", None)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> HeaderlessParams:
        """Read a JSON sidecar (see the module docstring for the keys).

        Raises:
            ConfigError: the file cannot be read, is not valid JSON, or holds invalid values.
        """
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read sidecar {path}: {exc.strerror or exc}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"sidecar {path} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=f"sidecar {path}")


def find_sidecar(frame_path: Path) -> Path | None:
    """The sidecar that applies to ``frame_path`` by the module's rule (per-file, then per-folder), or None."""
    per_file = frame_path.with_name(frame_path.name + ".json")
    if per_file.is_file():
        return per_file
    per_folder = frame_path.with_name(FOLDER_SIDECAR_NAME)
    if per_folder.is_file():
        return per_folder
    return None


def raw_frame_count(path: Path, params: HeaderlessParams) -> int | None:
    """Frames in a headerless dump of several (``v4l2-ctl --stream-to``, a recorder writing frame after frame):
    a file whose size after ``offset`` is a whole number N > 1 of frames. None for anything else (one frame, or a
    size :func:`read_headerless` will report)."""
    if params.decoder != HEADERLESS or params.width is None or params.height is None:
        return None
    frame = params.frame_bytes() - params.offset
    try:
        body = path.stat().st_size - params.offset
    except OSError:
        return None
    n, rest = divmod(body, frame)
    return n if n > 1 and rest == 0 else None


def read_headerless(path: Path, params: HeaderlessParams, member: int | None = None) -> np.ndarray:
    """Read a headerless frame: the file's one frame, or frame ``member`` of a dump of several
    (:func:`raw_frame_count`).

    Returns:
        (height, width) uint16, C-contiguous, owned by the caller.

    Raises:
        ValueError: the file size is not ``params.frame_bytes()`` (message states expected and actual bytes), or
            the dump no longer holds frame ``member``.
        OSError: the file cannot be read.
    """
    expected = params.frame_bytes()
    actual = path.stat().st_size
    if member is None and actual != expected:
        raise ValueError(
            f"file is {actual} bytes, expected {expected} for {params.height}x{params.width} {params.dtype}"
            + (f" after a {params.offset}-byte header" if params.offset else "")
            + " (or a whole number of such frames)"
        )
    assert params.width is not None and params.height is not None
    count = params.width * params.height
    offset = params.offset + (member or 0) * (expected - params.offset)
    data = np.fromfile(path, dtype=np.dtype(params.dtype), count=count, offset=offset)
    if data.size != count:  # the file shrank between stat and read
        raise ValueError(f"file holds {data.size} samples" + (f" for frame {member}" if member is not None else "")
                         + f", expected {count}")
    return np.ascontiguousarray(data.reshape(params.height, params.width).astype(np.uint16, copy=False))


def normalised_to_dn(arr: np.ndarray, params: HeaderlessParams) -> tuple[np.ndarray, HeaderlessParams, str]:
    """A float array of normalised values (white 1) as 16-bit DN, with its levels scaled alike.

    A float ``.npy`` is normalised when its parameters give a white level of at most 1, or give none and every value
    lies in [0, 1] (as DN such a frame would hold nothing but zeros and ones). It is then scaled by ``65535 / white``
    so that ``bayer_from_array`` keeps 16 bits of it. Anything else is returned as it is.

    Returns:
        ``(arr, params, note)``: the array and parameters to use, and a note for the frame's warnings ("" when
        nothing was scaled).
    """
    if arr.dtype.kind != "f" or arr.size == 0 or not np.all(np.isfinite(arr)):
        return arr, params, ""  # integers, or a float array bayer_from_array will refuse with its own reason
    white = params.white
    if white is None and (params.bits is not None or float(arr.max()) > 1.0 or float(arr.min()) < 0.0):
        return arr, params, ""
    if white is not None and white > 1.0:
        return arr, params, ""
    white = 1.0 if white is None else float(white)
    scale = 65535.0 / white
    scaled = np.clip(arr.astype(np.float64) * scale, 0.0, 65535.0)
    black = tuple(b * scale for b in params.black_level)
    note = f"float values taken as normalised (white {white:g}) and scaled to 16 bits"
    return scaled, replace(params, black=black, white=65535.0), note


def bayer_from_array(arr: np.ndarray) -> np.ndarray:
    """Validate and convert an array loaded from ``.npy`` to a Bayer frame.

    Integers must lie in [0, 65535]; floats must be finite DN values in [0, 65535] and are rounded. A (H, W, 1)
    array is squeezed.

    Returns:
        (H, W) uint16, C-contiguous.

    Raises:
        ValueError: wrong number of dimensions, dtype, or values out of range.
    """
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"expected a (H, W) Bayer mosaic, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"empty array of shape {arr.shape}")
    kind = arr.dtype.kind
    if kind == "u" and arr.dtype.itemsize <= 2:
        return np.ascontiguousarray(arr, dtype=np.uint16)
    if kind in "ui":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"{arr.dtype} values span [{lo}, {hi}], outside the uint16 range [0, 65535]")
        return np.ascontiguousarray(arr, dtype=np.uint16)
    if kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError("float array holds NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"float values span [{lo}, {hi}]; expected raw DN in [0, 65535]")
        return np.ascontiguousarray(np.rint(arr), dtype=np.uint16)
    raise ValueError(f"unsupported dtype {arr.dtype}; expected unsigned/signed integers or floats in raw DN")
