"""Training and evaluation datasets: clean photos (for synthesis), SID Sony raw pairs, generic paired folders.

All datasets are plain indexable objects (no DataLoader workers: training draws batches on the training thread
with a per-iteration seeded ``numpy.random.Generator``, which is what makes resume exact). Each has

* ``__len__`` and ``sample(i, rng)`` -> one random, augmented crop of item ``i`` (tensors, CPU), and
* ``center(i)`` -> the deterministic centre crop used for validation.

Augmentation is **Bayer-preserving**. Clean photos are flipped / transposed as RGB *before* mosaicing, which
cannot disturb a CFA phase. For real raw pairs the mosaic is flipped/transposed first and the crop origin's parity
is then chosen so that the crop starts on an R pixel (transposing RGGB gives RGGB; a flip is undone by a one-pixel
shift of the crop), and the target gets exactly the same geometry.

Raw files are read with ``rawpy`` imported inside the reading function (I/O local to training; ``model/`` does not
import ``capture/``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from redi_stream.amplifier import INPUT_CEILING
from redi_stream.errors import CaptureError, ConfigError
from redi_stream.frames import CFA

#: File name endings read as clean photos.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: Crops are multiples of this (the network's size multiple).
CROP_MULTIPLE = 32


def list_images(sources: str | Path | Iterable[str | Path], extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files of ``sources`` (directories are listed, non-recursively, sorted; files are kept as given).

    Raises:
        ConfigError: a source does not exist, or no image was found (the message names the sources).
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    names = []
    for src in sources:
        p = Path(src)
        names.append(str(p))
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix.lower() in extensions and f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"image source not found: {p}")
    if not files:
        raise ConfigError(f"no images ({', '.join(extensions)}) in {', '.join(names)}")
    return files


def read_image_rgb(path: Path) -> np.ndarray:
    """Decode an image with OpenCV -> (H, W, 3) RGB, uint8 or uint16 as stored (grey is repeated to 3 channels).

    Raises:
        CaptureError: OpenCV cannot decode the file.
    """
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise CaptureError(f"cannot decode image {path}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    if img.dtype not in (np.uint8, np.uint16):
        raise CaptureError(f"{path}: unsupported image dtype {img.dtype} (need 8- or 16-bit)")
    return np.ascontiguousarray(img[:, :, ::-1])


def _to_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / float(np.iinfo(img.dtype).max)


def _augment(img: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Transpose / vertical flip / horizontal flip of an (H, W, ...) array per the three booleans ``flags``."""
    if flags[0]:
        img = img.swapaxes(0, 1)
    if flags[1]:
        img = img[::-1]
    if flags[2]:
        img = img[:, ::-1]
    return img


class CleanImageDataset:
    """Clean sRGB photos decoded once and kept in memory (uint8/uint16), served as square crops.

    Args:
        sources: directories and/or image files (see :func:`list_images`).
        crop: requested square crop side. BSDS500 photos are 481x321 (either orientation), smaller than the
            paper's 512: the crop actually used (:attr:`crop_size`) is ``min(crop, largest multiple of 32 that
            fits every image's shorter side)``, i.e. 320 for BSDS500. A square crop makes landscape and portrait
            photos batchable together; random transposes keep both orientations in the data.
        max_images: keep only the first ``max_images`` files (sorted order), e.g. for a fixed validation subset.
        augment: random flips and transposes in :meth:`sample`.

    Raises:
        ConfigError: no images, or an image smaller than 32x32.
        CaptureError: an image cannot be decoded.
    """

    def __init__(
        self,
        sources: str | Path | Iterable[str | Path],
        *,
        crop: int = 512,
        max_images: int | None = None,
        augment: bool = True,
    ) -> None:
        files = list_images(sources)
        if max_images is not None:
            files = files[: int(max_images)]
        self.files: list[Path] = files
        self.images: list[np.ndarray] = [read_image_rgb(f) for f in files]
        shortest = min(min(im.shape[:2]) for im in self.images)
        fit = shortest // CROP_MULTIPLE * CROP_MULTIPLE
        if fit < CROP_MULTIPLE:
            raise ConfigError(f"images must be at least {CROP_MULTIPLE}x{CROP_MULTIPLE}; smallest side is {shortest}")
        if crop < CROP_MULTIPLE or crop % CROP_MULTIPLE:
            raise ConfigError(f"crop must be a positive multiple of {CROP_MULTIPLE}, got {crop}")
        self.requested_crop = int(crop)
        self.crop_size = min(int(crop), fit)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, i: int, rng: np.random.Generator) -> Tensor:
        """Random crop of photo ``i`` (random transpose/flips if ``augment``) -> (3, c, c) float32 sRGB in [0, 1]."""
        img = self.images[i]
        c = self.crop_size
        flags = rng.integers(0, 2, size=3).astype(bool)
        y0 = int(rng.integers(0, img.shape[0] - c + 1))
        x0 = int(rng.integers(0, img.shape[1] - c + 1))
        patch = img[y0 : y0 + c, x0 : x0 + c]
        if self.augment:
            patch = _augment(patch, flags)
        return torch.from_numpy(_to_float(np.ascontiguousarray(patch))).permute(2, 0, 1).contiguous()

    def center(self, i: int, size: tuple[int, int] | None = None) -> Tensor:
        """Centre crop of photo ``i`` -> (3, h, w) float32 sRGB; default square :attr:`crop_size`.

        ``size=(h, w)`` asks for another crop (each clipped to the largest multiple of 32 that fits).
        """
        img = self.images[i]
        h, w = size if size is not None else (self.crop_size, self.crop_size)
        h = min(h, img.shape[0] // CROP_MULTIPLE * CROP_MULTIPLE)
        w = min(w, img.shape[1] // CROP_MULTIPLE * CROP_MULTIPLE)
        y0, x0 = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
        patch = np.ascontiguousarray(img[y0 : y0 + h, x0 : x0 + w])
        return torch.from_numpy(_to_float(patch)).permute(2, 0, 1).contiguous()

    def full(self, i: int) -> Tensor:
        """Photo ``i`` cropped (centred) to the largest multiple of 32 in each dimension -> (3, H', W')."""
        h, w = self.images[i].shape[:2]
        return self.center(i, (h, w))


# --- real raw pairs --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawPair:
    """One (dark, bright) raw pair.

    Attributes:
        dark, bright: file paths.
        ratio: exposure ratio used to amplify the dark frame (bright exposure / dark exposure, capped).
    """

    dark: Path
    bright: Path
    ratio: float


#: Reads a dark raw file -> (H, W) float32 mosaic normalised to [0, 1], starting with R (RGGB).
DarkReader = Callable[[Path], np.ndarray]
#: Reads a bright raw file -> (H, W, 3) float32 linear raw camera RGB in [0, 1], same geometry as the dark mosaic.
BrightReader = Callable[[Path], np.ndarray]

_SID_EXPOSURE = re.compile(r"_(\d+(?:\.\d+)?)s\.[A-Za-z0-9]+$")


def sid_exposure_s(path: str | Path) -> float:
    """Exposure time in seconds from a SID file name such as ``00001_00_0.1s.ARW`` -> 0.1.

    Raises:
        ConfigError: the name does not end in ``_<seconds>s.<ext>``.
    """
    m = _SID_EXPOSURE.search(Path(path).name)
    if not m:
        raise ConfigError(f"cannot read the exposure time from {Path(path).name!r} (expected e.g. 00001_00_0.1s.ARW)")
    return float(m.group(1))


def parse_sid_list(root: str | Path, list_file: str | Path, *, max_ratio: float = 300.0) -> list[RawPair]:
    """Parse a SID list (``Sony_train_list.txt``): ``./Sony/short/X_00_0.04s.ARW ./Sony/long/X_00_10s.ARW ISO200 F8``.

    Paths are relative to ``root`` (the folder holding ``Sony/``). ``ratio = min(long / short, max_ratio)`` (the
    SID convention). Blank lines and ``#`` comments are skipped.

    Raises:
        ConfigError: the list is missing or a line is malformed (the message gives the line number).
    """
    root, list_file = Path(root), Path(list_file)
    if not list_file.is_file():
        list_file = root / list_file
    try:
        lines = list_file.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read SID list {list_file}: {exc}") from exc
    pairs = []
    for no, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ConfigError(f"{list_file}:{no}: expected '<short> <long> [ISO] [F]', got {line!r}")
        short, long_ = root / parts[0], root / parts[1]
        ratio = min(sid_exposure_s(long_) / sid_exposure_s(short), float(max_ratio))
        pairs.append(RawPair(dark=short, bright=long_, ratio=ratio))
    if not pairs:
        raise ConfigError(f"{list_file}: no pairs")
    return pairs


def _rawpy_open(path: Path):
    import rawpy

    try:
        return rawpy.imread(str(path))
    except (rawpy.LibRawError, OSError) as exc:
        raise CaptureError(f"cannot read raw file {path}: {exc}") from exc


def _rggb_offset(raw) -> tuple[int, int]:
    """(dy, dx) to crop off so the mosaic starts with R; raises for non-Bayer sensors."""
    try:
        cfa = CFA.from_pattern(raw.raw_pattern, raw.color_desc.decode())
    except ValueError as exc:
        raise CaptureError(f"not a Bayer sensor: {exc}") from exc
    return cfa.offset


def read_raw_normalised(path: Path) -> np.ndarray:
    """rawpy: a raw file -> (H', W') float32, black-subtracted per position, / (white - black), clipped to [0, 1],
    cropped by (dy, dx) so that it starts with R (RGGB). Default :data:`DarkReader`."""
    with _rawpy_open(path) as raw:
        dy, dx = _rggb_offset(raw)
        mosaic = raw.raw_image_visible.astype(np.float32)
        colors = raw.raw_colors_visible
        black = np.asarray(raw.black_level_per_channel, dtype=np.float32)[colors]
        white = float(raw.white_level)
        out = np.clip((mosaic - black) / (white - black), 0.0, 1.0)
    return np.ascontiguousarray(out[dy:, dx:])


def read_raw_linear_rgb(path: Path) -> np.ndarray:
    """rawpy: a raw file -> (H', W', 3) float32 linear raw camera RGB (no WB, no colour matrix, gamma 1) in [0, 1],
    cropped like :func:`read_raw_normalised`. Default :data:`BrightReader`.

    LibRaw demosaics (AHD) and rescales so that (white - black) maps to 1 (no auto-brightening): this is the
    bright frame in the network's output space, up to LibRaw's demosaicing.
    """
    import rawpy

    with _rawpy_open(path) as raw:
        dy, dx = _rggb_offset(raw)
        rgb = raw.postprocess(
            gamma=(1, 1),
            no_auto_bright=True,
            output_bps=16,
            use_camera_wb=False,
            use_auto_wb=False,
            user_wb=[1.0, 1.0, 1.0, 1.0],
            output_color=rawpy.ColorSpace.raw,
        )
    return np.ascontiguousarray(rgb[dy:, dx:].astype(np.float32) / 65535.0)


def _bayer_crop(
    dark: np.ndarray, bright: np.ndarray, c: int, rng: np.random.Generator | None, augment: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a (c, c) window starting on an R pixel from an RGGB mosaic and the same window of its (H, W, 3) target.

    With ``rng`` the window is random and (if ``augment``) the pair is transposed / flipped first; a flip turns the
    column (row) parity around, so the crop origin's parity is chosen to land on an original even column (row)
    again. ``rng=None`` gives the centre crop (origin rounded down to even).
    """
    if rng is None:
        flags = np.zeros(3, bool)
    else:
        flags = rng.integers(0, 2, size=3).astype(bool) if augment else np.zeros(3, bool)
    d = _augment(dark, flags)
    b = _augment(bright, flags)
    h, w = d.shape
    if h < c + 1 or w < c + 1:
        raise ConfigError(f"raw frame {h}x{w} too small for a {c}x{c} Bayer-preserving crop")
    # Original index of row y after a flip is h - 1 - y: it must be even, so y must have the parity of h - 1.
    py = (h - 1) % 2 if flags[1] else 0
    px = (w - 1) % 2 if flags[2] else 0
    if rng is None:
        y0 = (h - c) // 2 // 2 * 2 + py
        x0 = (w - c) // 2 // 2 * 2 + px
    else:
        y0 = int(rng.integers(0, (h - c - py) // 2 + 1)) * 2 + py
        x0 = int(rng.integers(0, (w - c - px) // 2 + 1)) * 2 + px
    return (
        np.ascontiguousarray(d[y0 : y0 + c, x0 : x0 + c]),
        np.ascontiguousarray(b[y0 : y0 + c, x0 : x0 + c]),
    )


class RawPairDataset:
    """(dark mosaic, bright linear RGB, ratio) pairs from raw files; base of :class:`SIDDataset` and
    :class:`PairedFolderDataset`.

    :meth:`sample` returns ``(input (1, c, c), target (3, c, c), ratio)``: ``input = dark * ratio`` (the
    true-ratio amplification), RGGB; ``target`` linear raw camera RGB. Files are read on every call unless
    ``cache`` (full-resolution SID pairs are ~120 MB each as float32).
    """

    def __init__(
        self,
        pairs: Sequence[RawPair],
        *,
        crop: int = 512,
        augment: bool = True,
        cache: bool = False,
        dark_reader: DarkReader | None = None,
        bright_reader: BrightReader | None = None,
    ) -> None:
        if not pairs:
            raise ConfigError("no raw pairs")
        if crop < CROP_MULTIPLE or crop % CROP_MULTIPLE:
            raise ConfigError(f"crop must be a positive multiple of {CROP_MULTIPLE}, got {crop}")
        self.pairs = list(pairs)
        self.crop_size = int(crop)
        self.augment = augment
        self._dark_reader = dark_reader or read_raw_normalised
        self._bright_reader = bright_reader or read_raw_linear_rgb
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Full (dark (H, W), bright (H, W, 3)) float32 arrays of pair ``i``.

        Raises:
            CaptureError: the two frames' sizes differ (the message names both files).
        """
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        p = self.pairs[i]
        dark = np.asarray(self._dark_reader(p.dark), dtype=np.float32)
        bright = np.asarray(self._bright_reader(p.bright), dtype=np.float32)
        if dark.ndim != 2 or bright.ndim != 3 or bright.shape[:2] != dark.shape or bright.shape[2] != 3:
            raise CaptureError(
                f"pair {p.dark.name} / {p.bright.name}: dark {dark.shape} and bright {bright.shape} do not match "
                "(need (H, W) and (H, W, 3))"
            )
        if self._cache is not None:
            self._cache[i] = (dark, bright)
        return dark, bright

    def _item(self, i: int, rng: np.random.Generator | None) -> tuple[Tensor, Tensor, float]:
        dark, bright = self.load(i)
        d, b = _bayer_crop(dark, bright, self.crop_size, rng, self.augment)
        ratio = float(self.pairs[i].ratio)
        inp = (torch.from_numpy(d)[None] * ratio).clamp_(max=INPUT_CEILING)
        return inp, torch.from_numpy(b).permute(2, 0, 1).contiguous().clamp(0.0, 1.0), ratio

    def sample(self, i: int, rng: np.random.Generator) -> tuple[Tensor, Tensor, float]:
        """Random Bayer-preserving crop (+ flips/transposes) of pair ``i``: (input (1,c,c), target (3,c,c), ratio)."""
        return self._item(i, rng)

    def center(self, i: int) -> tuple[Tensor, Tensor, float]:
        """Centre crop of pair ``i``, no augmentation."""
        return self._item(i, None)


class SIDDataset(RawPairDataset):
    """See-in-the-Dark (Chen et al. 2018) Sony pairs, for users who have the data.

    Args:
        root: folder that holds ``Sony/short`` and ``Sony/long`` (the list's ``./Sony/...`` paths are relative to
            it).
        list_file: e.g. ``Sony_train_list.txt`` (absolute, or relative to ``root``).
        max_ratio: cap on long / short (SID: 300).
        other keyword arguments: see :class:`RawPairDataset` (the readers default to rawpy).
    """

    def __init__(self, root: str | Path, list_file: str | Path, *, max_ratio: float = 300.0, **kwargs) -> None:
        super().__init__(parse_sid_list(root, list_file, max_ratio=max_ratio), **kwargs)


def _read_npy_or_image(path: Path, *, rgb: bool) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        arr = np.load(path)
        if np.issubdtype(arr.dtype, np.integer):
            arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
        return arr.astype(np.float32)
    if rgb:
        return _to_float(read_image_rgb(path))
    raise ConfigError(f"{path}: dark frames must be .npy (H, W) normalised mosaics or raw files")


class PairedFolderDataset(RawPairDataset):
    """Generic pairs matched by file stem: ``dark_dir/NAME.*`` with ``bright_dir/NAME.*``.

    Dark files: ``.npy`` (H, W) float mosaic, RGGB, black-subtracted and normalised to [0, 1] (integer arrays are
    divided by their dtype's maximum), or any raw file rawpy reads (normalised by its own levels). Bright files:
    ``.npy`` (H, W, 3) linear raw camera RGB in [0, 1], a 16-bit linear PNG/TIFF, or a raw file (rendered like
    :func:`read_raw_linear_rgb`).

    Ratios: ``ratios`` maps stem -> ratio; else ``dark_dir/ratios.json`` if present; else each pair's ratio is
    estimated as ``sum(mosaic(bright)) / sum(dark)`` clipped to [1, 300] (reads both files once at start).

    Raises:
        ConfigError: a folder is missing, a dark file has no bright partner, or no pairs were found.
    """

    RAW_EXTENSIONS = (".dng", ".arw", ".cr2", ".cr3", ".nef", ".raf", ".orf", ".rw2", ".pef", ".srw", ".raw")

    def __init__(
        self,
        dark_dir: str | Path,
        bright_dir: str | Path,
        *,
        ratios: dict[str, float] | None = None,
        **kwargs,
    ) -> None:
        dark_dir, bright_dir = Path(dark_dir), Path(bright_dir)
        for d in (dark_dir, bright_dir):
            if not d.is_dir():
                raise ConfigError(f"paired-data folder not found: {d}")
        usable = (".npy",) + self.RAW_EXTENSIONS + IMAGE_EXTENSIONS
        darks = sorted(f for f in dark_dir.iterdir() if f.suffix.lower() in (".npy",) + self.RAW_EXTENSIONS)
        brights = {f.stem: f for f in sorted(bright_dir.iterdir()) if f.suffix.lower() in usable}
        missing = [f.name for f in darks if f.stem not in brights]
        if missing:
            raise ConfigError(f"no bright partner in {bright_dir} for: {', '.join(missing[:5])}")
        if ratios is None and (dark_dir / "ratios.json").is_file():
            ratios = {str(k): float(v) for k, v in json.loads((dark_dir / "ratios.json").read_text()).items()}
        kwargs.setdefault("dark_reader", self._read_dark)
        kwargs.setdefault("bright_reader", self._read_bright)
        pairs = [RawPair(f, brights[f.stem], float((ratios or {}).get(f.stem, 0.0))) for f in darks]
        super().__init__(pairs, **kwargs)
        for i, p in enumerate(self.pairs):
            if p.ratio <= 0:
                dark, bright = self.load(i)
                est = float(_mosaic(bright).sum() / max(float(dark.sum()), 1e-12))
                self.pairs[i] = RawPair(p.dark, p.bright, float(np.clip(est, 1.0, 300.0)))

    def _read_dark(self, path: Path) -> np.ndarray:
        if path.suffix.lower() in self.RAW_EXTENSIONS:
            return read_raw_normalised(path)
        return _read_npy_or_image(path, rgb=False)

    def _read_bright(self, path: Path) -> np.ndarray:
        if path.suffix.lower() in self.RAW_EXTENSIONS:
            return read_raw_linear_rgb(path)
        return _read_npy_or_image(path, rgb=True)


def _mosaic(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) RGGB mosaic."""
    out = rgb[:, :, 1].copy()
    out[0::2, 0::2] = rgb[0::2, 0::2, 0]
    out[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return out
