"""Fixtures for capture tests: tiny DNG sequences written on the fly (no shared data needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from redi_stream.capture import write_dng
from redi_stream.frames import CFA, RawMeta

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
    """Helpers for building tiny frames: ``tiny.meta(cfa, **overrides)``, ``tiny.bayer(i, shape)``, ``tiny.cam_to_srgb``."""
    return SimpleNamespace(meta=tiny_meta, bayer=tiny_bayer, cam_to_srgb=CAM_TO_SRGB)
