"""Raw frame sources (files via rawpy/LibRaw, .npy, headerless .raw, synthetic) and DNG writing.

No torch and no threads here: sources decode in the caller's thread, and ``read(i)`` is safe to call from a pool.
"""

from __future__ import annotations

from .base import FrameSource
from .dngwrite import FRAME_PATTERN, dark_frame_from_srgb, make_dng, write_dark_dng_sequence, write_dng
from .files import DEFAULT_FPS, FRAME_SUFFIXES, RawFileSource, collect_frame_paths, natural_key
from .headerless import FOLDER_SIDECAR_NAME, HeaderlessParams
from .libraw import bayer_cfa
from .synthetic import DEMO_SIZE, SYNTHETIC_WB_GAINS, DarkRawParams, SyntheticSource

__all__ = [
    "DEFAULT_FPS",
    "DEMO_SIZE",
    "FOLDER_SIDECAR_NAME",
    "FRAME_PATTERN",
    "FRAME_SUFFIXES",
    "SYNTHETIC_WB_GAINS",
    "DarkRawParams",
    "FrameSource",
    "HeaderlessParams",
    "RawFileSource",
    "SyntheticSource",
    "bayer_cfa",
    "collect_frame_paths",
    "dark_frame_from_srgb",
    "make_dng",
    "natural_key",
    "write_dark_dng_sequence",
    "write_dng",
]
