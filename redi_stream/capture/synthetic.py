"""Deterministic synthetic dark raw video made from a clean sRGB image (tests, demos, ``make-dng``).

Each frame is a simple unprocessing (Brooks et al., CVPR 2019) of a window of the image: inverse sRGB curve to
linear, divide by white-balance gains (identity colour matrix), darken by ``ratio``, mosaic, then Poisson shot
noise (in electrons, at ``gain_dn_per_e`` DN per electron) plus Gaussian read noise, black level, clipping and
rounding to uint16. Frame ``i`` draws its noise from ``np.random.Generator(np.random.PCG64([seed, i]))``, so a
frame's bytes depend only on the parameters and ``(seed, i)``, never on read order or thread.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from redi_stream.errors import CaptureError, ConfigError
from redi_stream.frames import CFA, IDENTITY_3x3, RawFrame, RawMeta

from .base import RandomAccessSource
from .colour import srgb_to_linear

#: (R, G, B) white-balance gains the synthetic camera needs (its raw is divided by them; the ISP multiplies back).
SYNTHETIC_WB_GAINS = (2.0, 1.0, 1.7)
MOTIONS = ("pan", "static")
DEMO_SIZE = (640, 960)
# How much larger than a frame the panned canvas is, per axis.
_PAN_MARGIN = 0.25
# Below this many expected electrons shot noise is drawn exactly (Poisson); above it from the normal approximation
# N(lambda, lambda): with read noise added the two differ by < 0.3 in skewness, and numpy's Poisson sampler costs
# ~45 ns a pixel (a 1080p frame would take > 100 ms).
_EXACT_POISSON_BELOW_E = 4.0


def default_image() -> np.ndarray:
    """scikit-image's ``astronaut`` (512x512 uint8 RGB, shipped inside the wheel; no download)."""
    from skimage import data

    return data.astronaut()


def demo_image() -> np.ndarray:
    """scikit-image's ``coffee`` (400x600 uint8 RGB, shipped inside the wheel; 2:3 like :data:`DEMO_SIZE`)."""
    from skimage import data

    return data.coffee()


def image_to_float(image: np.ndarray) -> np.ndarray:
    """Validate an sRGB image and convert it to float32 in [0, 1].

    Args:
        image: (H, W, 3) uint8, uint16 or float (values in [0, 1]; clipped).

    Raises:
        ConfigError: wrong shape or dtype, or non-finite values.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 2 or img.shape[1] < 2:
        raise ConfigError(f"image must be (H, W, 3) RGB with H, W >= 2, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float32) / np.float32(255.0)
    if img.dtype == np.uint16:
        return img.astype(np.float32) / np.float32(65535.0)
    if img.dtype.kind == "f":
        if not np.all(np.isfinite(img)):
            raise ConfigError("image holds NaN or infinity")
        return np.clip(img, 0.0, 1.0).astype(np.float32)
    raise ConfigError(f"image dtype must be uint8, uint16 or float in [0, 1], got {img.dtype}")


def resize_cover(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale ``image`` (H, W, C) float32 to cover ``size`` = (h, w) keeping its aspect, then centre-crop to it."""
    import cv2

    h0, w0 = image.shape[:2]
    h, w = size
    scale = max(h / h0, w / w0)
    rh, rw = max(h, round(h0 * scale)), max(w, round(w0 * scale))
    if (rh, rw) != (h0, w0):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        image = np.clip(cv2.resize(image, (rw, rh), interpolation=interp), 0.0, 1.0)
    y, x = (rh - h) // 2, (rw - w) // 2
    return np.ascontiguousarray(image[y : y + h, x : x + w])


def srgb_to_camera_planes(srgb: np.ndarray, wb_gains: tuple[float, float, float] = SYNTHETIC_WB_GAINS) -> np.ndarray:
    """Unprocess sRGB to the synthetic camera's linear RGB: inverse sRGB curve, divide by WB gains.

    Args:
        srgb: (H, W, 3) float32 in [0, 1].

    Returns:
        (3, H, W) float32 planes (R, G, B) in [0, 1], C-contiguous (planes make per-position mosaicing cheap).
    """
    lin = srgb_to_linear(srgb)
    planes = np.empty((3, *lin.shape[:2]), dtype=np.float32)
    for c in range(3):
        np.multiply(lin[:, :, c], np.float32(1.0 / wb_gains[c]), out=planes[c])
    return planes


def mosaic_planes(
    planes: np.ndarray, cfa: CFA, y0: int = 0, x0: int = 0, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Sample a (3, Hc, Wc) image at one colour per pixel in pattern ``cfa``, from window origin (y0, x0).

    Returns:
        (H, W) float32 mosaic, ``size`` = (H, W) (default: the whole canvas).
    """
    h, w = size if size is not None else planes.shape[1:]
    out = np.empty((h, w), dtype=np.float32)
    for pos, colour in enumerate(cfa.colors):
        dy, dx = divmod(pos, 2)
        out[dy::2, dx::2] = planes[colour, y0 + dy : y0 + h : 2, x0 + dx : x0 + w : 2]
    return out


def add_raw_noise(
    bayer: np.ndarray,
    rng: np.random.Generator,
    *,
    ratio: float,
    white: float,
    black: float,
    gain_dn_per_e: float,
    read_noise_dn: float,
) -> np.ndarray:
    """Darken a clean linear mosaic and add sensor noise.

    Args:
        bayer: (H, W) float32 linear in [0, 1] (1 = white level above black at full exposure).
        rng: the frame's generator.
        ratio: exposure reduction (signal divided by it).
        white, black: levels in DN.
        gain_dn_per_e: system gain K (DN per electron); shot noise is Poisson in electrons.
        read_noise_dn: standard deviation of the Gaussian read noise in DN.

    Returns:
        (H, W) uint16 raw DN: ``clip(round(K * shot + read + black), 0, white)``.
    """
    k = np.float32(gain_dn_per_e)
    sigma = np.float32(read_noise_dn)
    signal = np.multiply(bayer, np.float32((white - black) / ratio))  # mean DN above black, = K * electrons
    noise = rng.standard_normal(bayer.shape, dtype=np.float32)
    # Shot and read noise in one normal draw: N(signal, K * signal + sigma^2) (in place: 2M-pixel temporaries cost).
    dn = np.multiply(signal, k)
    dn += sigma * sigma
    np.sqrt(dn, out=dn)
    dn *= noise
    dn += signal
    # Few expected electrons: exact Poisson counts instead (same noise sample for the read-noise part).
    low = np.flatnonzero(signal < k * np.float32(_EXACT_POISSON_BELOW_E))
    if low.size:
        electrons = signal.ravel()[low] / k
        flat = dn.ravel()  # a view: dn is C-contiguous
        flat[low] = rng.poisson(electrons).astype(np.float32) * k + noise.ravel()[low] * sigma
    dn += np.float32(black)
    np.rint(dn, out=dn)
    np.clip(dn, 0.0, white, out=dn)
    return dn.astype(np.uint16)


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DarkRawParams:
    """How a clean image becomes a dark noisy raw frame (shared by :class:`SyntheticSource` and ``make-dng``).

    Attributes:
        ratio: exposure reduction (100 -> a hundred times darker than the image).
        seed: noise seed; frame ``i`` uses ``PCG64([seed, i])``.
        cfa: Bayer pattern (a :class:`CFA` or its name).
        white, black: levels in DN (default 14-bit, black 512 like a Sony a7S II).
        gain_dn_per_e: system gain K in DN per electron (2.0 ~ high ISO on a 14-bit sensor).
        read_noise_dn: Gaussian read-noise standard deviation in DN.
    """

    ratio: float = 100.0
    seed: int = 0
    cfa: CFA | str = CFA.RGGB
    white: float = 16383
    black: float = 512
    gain_dn_per_e: float = 2.0
    read_noise_dn: float = 2.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", _check_positive("ratio", self.ratio))
        object.__setattr__(self, "gain_dn_per_e", _check_positive("gain_dn_per_e", self.gain_dn_per_e))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        try:
            object.__setattr__(self, "cfa", CFA(str(self.cfa).upper()))
        except ValueError:
            raise ConfigError(f"unknown CFA {self.cfa!r}; valid: {', '.join(c.value for c in CFA)}") from None
        read = float(self.read_noise_dn)
        if not (math.isfinite(read) and read >= 0):
            raise ConfigError(f"read_noise_dn must be >= 0, got {self.read_noise_dn!r}")
        object.__setattr__(self, "read_noise_dn", read)
        for name in ("white", "black"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
        if not (0 <= self.black < self.white <= 65535):
            raise ConfigError(f"need 0 <= black < white <= 65535, got black {self.black!r}, white {self.white!r}")
        object.__setattr__(self, "white", float(self.white))
        object.__setattr__(self, "black", float(self.black))

    def meta(self) -> RawMeta:
        """The frames' metadata: these levels and pattern, :data:`SYNTHETIC_WB_GAINS`, identity colour matrix."""
        return RawMeta(
            cfa=self.cfa,  # type: ignore[arg-type]
            black_level=(self.black,) * 4,  # type: ignore[arg-type]
            white_level=self.white,
            wb_gains=SYNTHETIC_WB_GAINS,
            cam_to_srgb=IDENTITY_3x3.copy(),
            camera="redi-stream synthetic",
        )

    def darken(self, bayer: np.ndarray, index: int) -> np.ndarray:
        """(H, W) float32 clean linear mosaic -> (H, W) uint16 dark noisy raw for frame ``index``."""
        rng = np.random.Generator(np.random.PCG64([self.seed, index]))
        return add_raw_noise(bayer, rng, ratio=self.ratio, white=self.white, black=self.black,
                             gain_dn_per_e=self.gain_dn_per_e, read_noise_dn=self.read_noise_dn)  # fmt: skip


class SyntheticSource(RandomAccessSource):
    """Dark raw Bayer frames synthesised from a clean sRGB image, panning over it (or static).

    Same protocol as :class:`~redi_stream.capture.RawFileSource`: ``len``, ``read(i)``, iteration, ``fps``,
    ``names`` (``synthetic_000012``), ``name``, ``live = False``, ``close()`` and ``with``. ``read`` is
    deterministic per ``(seed, i)`` and thread-safe (the canvas is read-only after construction).

    Args:
        image: (H, W, 3) sRGB, uint8/uint16 or float in [0, 1]; default scikit-image's astronaut.
        n_frames: number of frames.
        size: (H, W) of the frames; default the image's size.
        ratio: exposure reduction (100 -> a hundred times darker than the image).
        seed: noise seed.
        cfa: Bayer pattern of the frames.
        fps: frame rate for timestamps.
        motion: ``"pan"`` (window moves smoothly over a 25 % larger canvas, returning to its start) or
            ``"static"``.
        white, black, gain_dn_per_e, read_noise_dn: sensor model, see :class:`DarkRawParams` (kept in ``params``).

    The frames' meta has ``wb_gains`` = :data:`SYNTHETIC_WB_GAINS` and identity ``cam_to_srgb``.
    """

    live = False

    def __init__(
        self,
        image: np.ndarray | None = None,
        *,
        n_frames: int = 60,
        size: tuple[int, int] | None = None,
        ratio: float = 100.0,
        seed: int = 0,
        cfa: CFA | str = CFA.RGGB,
        fps: float = 24.0,
        motion: str = "pan",
        white: float = 16383,
        black: float = 512,
        gain_dn_per_e: float = 2.0,
        read_noise_dn: float = 2.5,
    ) -> None:
        if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
            raise ConfigError(f"n_frames must be a positive integer, got {n_frames!r}")
        if motion not in MOTIONS:
            raise ConfigError(f"unknown motion {motion!r}; valid: {', '.join(MOTIONS)}")
        self.params = DarkRawParams(ratio=ratio, seed=seed, cfa=cfa, white=white, black=black,
                                    gain_dn_per_e=gain_dn_per_e, read_noise_dn=read_noise_dn)  # fmt: skip
        self.cfa: CFA = self.params.cfa  # type: ignore[assignment]
        self.ratio, self.seed = self.params.ratio, self.params.seed
        self.fps = _check_positive("fps", fps)
        self.motion = motion
        self.n_frames = int(n_frames)

        srgb = image_to_float(default_image() if image is None else image)
        if size is None:
            size = srgb.shape[:2]
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s >= 2 for s in size):
            raise ConfigError(f"size must be (H, W) integers >= 2, got {size!r}")
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        h, w = self.size
        margin = _PAN_MARGIN if motion == "pan" else 0.0
        canvas_size = (math.ceil(h * (1 + margin)), math.ceil(w * (1 + margin)))
        # Read-only after this point: read() only slices it, which is what makes read() thread-safe.
        self._planes = srgb_to_camera_planes(resize_cover(srgb, canvas_size))
        self._planes.setflags(write=False)
        self.meta = self.params.meta()
        self.name = f"synthetic ({self.n_frames} frames {h}x{w} {self.cfa}, ratio {self.ratio:g}, seed {self.seed})"
        self.names = [f"synthetic_{i:06d}" for i in range(self.n_frames)]
        self._closed = False

    @classmethod
    def demo(cls, *, n_frames: int = 48, size: tuple[int, int] = DEMO_SIZE, ratio: float = 150.0, seed: int = 0,
             cfa: CFA | str = CFA.RGGB, fps: float = 24.0) -> SyntheticSource:
        """The embedded default clip of ``redi-stream demo``: 2 s at 24 fps, 640x960, panning over scikit-image's
        ``coffee`` photo, 150 times underexposed. Needs no download."""
        return cls(demo_image(), n_frames=n_frames, size=size, ratio=ratio, seed=seed, cfa=cfa, fps=fps, motion="pan")

    # -- protocol -------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.n_frames

    def __repr__(self) -> str:
        return f"SyntheticSource({self.name})"

    def window_origin(self, index: int) -> tuple[int, int]:
        """(y0, x0) of frame ``index``'s window in the canvas: x eases left to right, y dips and returns."""
        if self.motion == "static":
            return (0, 0)
        t = index / max(self.n_frames - 1, 1)
        span_y = self._planes.shape[1] - self.size[0]
        span_x = self._planes.shape[2] - self.size[1]
        y0 = round(span_y * 0.5 * (1.0 - math.cos(2.0 * math.pi * t)))
        x0 = round(span_x * 0.5 * (1.0 - math.cos(math.pi * t)))
        return (y0, x0)

    def clean(self, index: int) -> np.ndarray:
        """Ground truth of frame ``index``: (H, W, 3) float32 linear camera RGB in [0, 1] (before darkening, WB and
        noise; what a network that outputs linear camera RGB should recover, up to exposure)."""
        i = self._check_index(index)
        y0, x0 = self.window_origin(i)
        h, w = self.size
        return np.ascontiguousarray(self._planes[:, y0 : y0 + h, x0 : x0 + w].transpose(1, 2, 0))

    def read(self, index: int) -> RawFrame:
        """Synthesise frame ``index``: (H, W) uint16 dark noisy mosaic, owned by the caller. Thread-safe.

        Raises:
            IndexError: ``index`` outside ``[0, len)``.
            CaptureError: the source is closed.
        """
        i = self._check_index(index)
        if self._closed:
            raise CaptureError(f"{self.name} is closed")
        y0, x0 = self.window_origin(i)
        bayer = mosaic_planes(self._planes, self.cfa, y0, x0, self.size)
        data = self.params.darken(bayer, i)
        return RawFrame(data=data, meta=self.meta, index=i, t_ns=round(i * 1e9 / self.fps), name=self.names[i])

    def _check_index(self, index: int) -> int:
        i = operator.index(index)
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame index {index} out of range for {self.n_frames} frames")
        return i
