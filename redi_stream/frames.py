"""Plain data passed between the parts of redi-stream: Bayer patterns, raw metadata, raw and enhanced frames.

Nothing here imports torch, numba or any I/O library. Frames are host (NumPy) data only; they are the only
objects that cross thread boundaries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class CFA(enum.StrEnum):
    """A 2x2 Bayer pattern named in reading order from the top-left pixel.

    ``RGGB`` means row 0 is R G and row 1 is G B. OpenCV names the same pattern ``BayerBG``; convert only at the
    call that needs OpenCV (:meth:`opencv_code_suffix`).
    """

    RGGB = "RGGB"
    BGGR = "BGGR"
    GRBG = "GRBG"
    GBRG = "GBRG"

    @property
    def offset(self) -> tuple[int, int]:
        """(dy, dx): rows and columns to prepend (by reflection) so the mosaic starts with an R pixel.

        Reflect padding keeps the Bayer phase of every pixel, so prepending ``dy`` rows and ``dx`` columns turns
        this pattern into RGGB without dropping any pixel (Bayer pattern unification, Liu et al. 2019).
        """
        return _CFA_OFFSETS[self]

    @property
    def colors(self) -> tuple[int, int, int, int]:
        """Colour index (0 R, 1 G, 2 B) of the 2x2 positions in reading order (TL, TR, BL, BR)."""
        return tuple("RGB".index(c) for c in self.value)  # type: ignore[return-value]

    @classmethod
    def from_pattern(cls, pattern: np.ndarray, color_desc: str = "RGBG") -> "CFA":
        """Build from a 2x2 array of colour indices into ``color_desc`` (LibRaw's ``raw_pattern``/``color_desc``).

        Raises:
            ValueError: the pattern is not a 2x2 Bayer pattern of two greens, one red and one blue.
        """
        pattern = np.asarray(pattern)
        if pattern.shape != (2, 2):
            raise ValueError(f"not a 2x2 Bayer pattern (shape {pattern.shape})")
        if not all(0 <= int(i) < len(color_desc) for i in pattern.ravel()):
            raise ValueError(f"Bayer pattern {pattern.ravel().tolist()} indexes outside colour description "
                             f"{color_desc!r}")
        letters = "".join(color_desc[int(i)] for i in pattern.ravel())
        try:
            return cls(letters)
        except ValueError:
            raise ValueError(f"not a Bayer pattern: {letters!r}; valid: {', '.join(c.value for c in cls)}") from None


_CFA_OFFSETS = {CFA.RGGB: (0, 0), CFA.GRBG: (0, 1), CFA.GBRG: (1, 0), CFA.BGGR: (1, 1)}

# Rec.709/sRGB primaries: identity used when a file has no usable colour matrix.
IDENTITY_3x3 = np.eye(3, dtype=np.float32)


@dataclass(frozen=True)
class RawMeta:
    """What is needed to turn a raw mosaic into colour: levels, pattern, white balance, colour matrix.

    Attributes:
        cfa: Bayer pattern of the frame as stored (before unification).
        black_level: per 2x2 *position* in reading order (TL, TR, BL, BR), in raw DN. Capture converts LibRaw's
            per-colour-index list to positions.
        white_level: saturation level in raw DN (same for all channels).
        wb_gains: (R, G, B) multipliers that white-balance camera RGB, normalised so G == 1.
        cam_to_srgb: (3, 3) float32 matrix, linear white-balanced camera RGB -> linear sRGB, rows sum to 1.
        camera: "make model" if known, else "".
        warnings: human-readable notes about fallbacks taken while reading metadata (e.g. no colour matrix).
        flip: how the file says the stored mosaic is turned for display, as LibRaw's ``sizes.flip`` (0 none, 3 180°,
            6 90° clockwise, 5 90° anticlockwise; 1, 2, 4, 7 mirrored). Only a decoder's own result carries a
            non-zero value: :func:`redi_stream.capture.orient.orient` turns the mosaic and sets it to 0, so every
            frame a source hands out is upright with 0 here.
    """

    cfa: CFA
    black_level: tuple[float, float, float, float]
    white_level: float
    wb_gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    cam_to_srgb: np.ndarray = field(default_factory=lambda: IDENTITY_3x3.copy())
    camera: str = ""
    warnings: tuple[str, ...] = ()
    flip: int = 0

    def __post_init__(self) -> None:
        if self.flip not in range(8):
            raise ValueError(f"flip must be a LibRaw orientation code 0..7, got {self.flip!r}")
        if len(self.black_level) != 4:
            raise ValueError(f"black_level needs 4 values (one per 2x2 position), got {len(self.black_level)}")
        if not all(np.isfinite(v) for v in (*self.black_level, self.white_level)):
            raise ValueError(f"black and white levels must be finite, got {self.black_level} and {self.white_level}")
        if not self.white_level > max(self.black_level):
            raise ValueError(f"white level {self.white_level} must exceed black level {max(self.black_level)}")
        m = np.asarray(self.cam_to_srgb, dtype=np.float32)
        if m.shape != (3, 3) or not np.all(np.isfinite(m)):
            raise ValueError(f"cam_to_srgb must be a finite 3x3 matrix, got shape {m.shape}")
        object.__setattr__(self, "cam_to_srgb", m)

    @property
    def black_level_array(self) -> np.ndarray:
        """float32 (4,) black levels by position, for kernels."""
        return np.asarray(self.black_level, dtype=np.float32)


@dataclass
class RawFrame:
    """One raw Bayer frame on the host.

    Attributes:
        data: (H, W) uint16 mosaic in raw DN, C-contiguous, owned by this frame (never a view into a decoder's
            buffer).
        meta: levels, pattern and colour of this frame.
        index: 0-based position in the source.
        t_ns: capture or presentation timestamp in nanoseconds (monotonic within a source; for files
            ``index * 1e9 / fps``).
        name: file name or device name, for messages.
    """

    data: np.ndarray
    meta: RawMeta
    index: int
    t_ns: int
    name: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]


@dataclass
class EnhancedFrame:
    """One output frame on the host.

    Attributes:
        rgb: (H, W, 3) uint8 or uint16 sRGB (display-referred), same H, W as the raw frame. An enhancer told that
            only the planes are consumed (``RediEnhancer(rgb=False)``) leaves a read-only all-zero view here.
        index, t_ns, name: copied from the raw frame.
        gain: amplification applied (after smoothing and the user multiplier).
        timings_ns: per-stage wall time for this frame, e.g. {"decode": ..., "infer": ..., "isp": ...}.
        t_capture_ns: monotonic clock (time.monotonic_ns) when the raw frame was captured (live sources that
            stamp it) or entered the pipeline, for latency; 0 when not measured (a live source's first frame,
            whose wait is the enhancer's warm-up, reported apart).
        raw: the raw frame this was made from, kept only for a preview that asks for it (side-by-side view);
            otherwise None.
        yuv420p: BT.709 limited-range (Y, U, V) uint8 planes of ``rgb`` ((H, W), (H/2, W/2), (H/2, W/2)), when the
            enhancer made them alongside ``rgb`` (uint8 output, even H and W); a yuv420p video sink encodes these
            instead of converting ``rgb`` again. Else None.
    """

    rgb: np.ndarray
    index: int
    t_ns: int
    name: str = ""
    gain: float = 1.0
    timings_ns: dict[str, int] = field(default_factory=dict)
    t_capture_ns: int = 0
    raw: RawFrame | None = None
    yuv420p: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


def frames_text(n: int, kind: str = "") -> str:
    """``"1 frame"``, ``"2 frames"``, ``"1 DNG frame"`` (``kind="DNG"``): a frame count for messages."""
    noun = f"{kind} frame" if kind else "frame"
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
