"""Fixtures for capture tests: tiny DNG sequences written on the fly (no shared data needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from redi_stream.capture import write_dng
from redi_stream.frames import CFA, RawMeta

#: The DNG tags every tifffile-written test DNG needs besides its image: DNGVersion 1.4, Make, Model, an identity
#: ColorMatrix1 (SRATIONAL pairs) and AsShotNeutral; as tifffile ``extratags``.
TIFFFILE_DNG_TAGS = [
    (50706, 1, 4, bytes([1, 4, 0, 0]), True), (271, 2, 0, "Test", True), (272, 2, 0, "Cam", True),
    (50721, 10, 9, [1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1], True),
    (50728, 5, 3, [1, 2, 1, 1, 2, 3], True),
]  # fmt: skip

CAM_TO_SRGB = np.array([[1.7, -0.5, -0.2], [-0.3, 1.5, -0.2], [0.05, -0.45, 1.4]], dtype=np.float32)


def tiny_meta(cfa: CFA = CFA.RGGB, **overrides: object) -> RawMeta:
    kwargs: dict[str, object] = dict(
        cfa=cfa,
        black_level=(100.0, 110.0, 120.0, 130.0),
        white_level=4095.0,
        wb_gains=(2.1, 1.0, 1.6),
        cam_to_srgb=CAM_TO_SRGB,
        camera="Tiny",
    )
    kwargs.update(overrides)
    return RawMeta(**kwargs)  # type: ignore[arg-type]


def tiny_bayer(index: int, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(100, 4095, size=shape, dtype=np.uint16)


@pytest.fixture()
def make_dngs(tmp_path: Path) -> Callable[..., list[Path]]:
    """make_dngs(names, shape=(24, 32), cfa=RGGB, fps=None, folder="clip") -> paths of DNGs with tiny_bayer(i)."""

    def make(
        names: list[str],
        *,
        shape: tuple[int, int] = (24, 32),
        cfa: CFA = CFA.RGGB,
        fps: float | None = None,
        folder: str = "clip",
    ) -> list[Path]:
        out = tmp_path / folder
        out.mkdir(exist_ok=True)
        return [write_dng(out / n, tiny_bayer(i, shape), tiny_meta(cfa), fps=fps) for i, n in enumerate(names)]

    return make


@pytest.fixture()
def tiny() -> SimpleNamespace:
    """Tiny-frame helpers: ``tiny.meta(cfa, **overrides)``, ``tiny.bayer(i, shape)``, ``tiny.cam_to_srgb``."""
    return SimpleNamespace(meta=tiny_meta, bayer=tiny_bayer, cam_to_srgb=CAM_TO_SRGB)


def _write_plain_dng(path: Path, data: np.ndarray, **tags: object) -> Path:
    """A minimal DNG written directly with pidng (not our writer), to reach layouts write_dng never makes.

    ``tags`` are pidng ``Tag`` names with values; ``None`` leaves a default tag out. 2-D data gets an RGGB CFA
    by default; (H, W, 3) data gets no CFA tags (set ``PhotometricInterpretation=34892`` for a linear DNG).
    """
    from pidng.core import RAW2DNG, DNGTags, Tag

    h, w = data.shape[:2]
    spp = 1 if data.ndim == 2 else data.shape[2]
    defaults: dict[str, object] = dict(
        ImageWidth=w, ImageLength=h, TileWidth=w, TileLength=h, Orientation=1, SamplesPerPixel=spp,
        BitsPerSample=[16] * spp, BlackLevel=0, WhiteLevel=4095, AsShotNeutral=[[1, 2], [1, 1], [1, 1]],
        ColorMatrix1=[[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]],
        Make="Test", Model="Cam", UniqueCameraModel="Test Cam",
    )  # fmt: skip
    if spp == 1:
        defaults.update(PhotometricInterpretation=32803, CFARepeatPatternDim=[2, 2], CFAPattern=[0, 1, 1, 2])
    defaults.update(tags)
    t = DNGTags()
    for name, value in defaults.items():
        if value is not None:
            t.set(getattr(Tag, name), value)
    writer = RAW2DNG()
    writer.options(t, path="", compress=False)
    path.write_bytes(writer.convert(np.ascontiguousarray(data)))
    return path


@pytest.fixture()
def write_plain_dng() -> Callable[..., Path]:
    """``write_plain_dng(path, data, **tags)``: see :func:`_write_plain_dng`."""
    return _write_plain_dng
