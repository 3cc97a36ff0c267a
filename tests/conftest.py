"""Shared fixtures: where the real test data lives, and hardware markers that skip with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# ../shared/data beside the checkout (the developers' and CI's layout); REDI_SHARED_DATA overrides it.
_DEFAULT_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_DATA = Path(os.environ.get("REDI_SHARED_DATA", _DEFAULT_SHARED))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; the test is skipped when it is absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


# A made-up camera in the format of ../shared/data/noise/eld_camera_noise_params.json, for tests that need no real data.
ELD_LIKE_NOISE_PARAMS = {
    "TestCam": {
        "Kmin": 0.5,
        "Kmax": 2.0,
        "G_shape": [0.1, 0.0],
        "Profile-1": {
            "G_scale": {"slope": 0.5, "bias": 0.5, "sigma": 0.1},
            "g_scale": {"slope": 0.5, "bias": 1.0, "sigma": 0.1},
            "R_scale": {"slope": 0.5, "bias": -0.5, "sigma": 0.1},
        },
        "color_bias": [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]],
    }
}


def write_tiny_photos_and_noise(root: Path, folder: str, count: int, shape: tuple[int, int], seed: int):
    """Write ``count`` smooth random photos of ``shape`` (H, W) into ``root/folder`` and the made-up noise profile
    into ``root/eld.json``; return (photo folder, noise file)."""
    import json

    import cv2
    import numpy as np

    photos = root / folder
    photos.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = cv2.GaussianBlur((rng.random((*shape, 3)) * 255).astype(np.uint8), (9, 9), 3)
        cv2.imwrite(str(photos / f"{i}.png"), img)
    noise = root / "eld.json"
    noise.write_text(json.dumps(ELD_LIKE_NOISE_PARAMS))
    return photos, noise


def write_grey_ramp_video(path: Path, frames: int, size: tuple[int, int], *, codec: str = "libx264",
                          rate: int = 24) -> Path:
    """A small video whose frame ``i`` is flat grey ``40 * i``, (H, W) = ``size``: input for make-dng tests."""
    import av
    import numpy as np

    h, w = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            img = np.full((h, w, 3), 40 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_random_redi_net(seed: int):
    """A RediNet with random weights whose weight-norm scales are halved, so outputs sit mostly inside (0, 1)
    rather than at the clamp: comparisons between ways of running the network then see real values."""
    import torch
    from torch import nn

    from redi_stream.model import RediNet

    torch.manual_seed(seed)
    model = RediNet().eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d):
                mod.parametrizations.weight.original0.mul_(0.5)
    return model


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _cuda_available():
        skip_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)
    if not os.environ.get("REDI_TEST_CAMERA"):
        skip_camera = pytest.mark.skip(reason="no real camera declared (set REDI_TEST_CAMERA=<index|path>)")
        for item in items:
            if "camera" in item.keywords:
                item.add_marker(skip_camera)
    if not os.environ.get("DISPLAY"):
        skip_display = pytest.mark.skip(reason="no X display (set DISPLAY, e.g. under Xvfb)")
        for item in items:
            if "display" in item.keywords:
                item.add_marker(skip_display)


def lj92_writer():
    """A ``write_dng``-like function that writes lossless-JPEG (LJ92, Compression 7) DNGs, as CinemaDNG cameras do,
    or None where it cannot run.

    pidng ships the LJ92 encoder (``ljpegCompress``), but its Python wrapper fails on Python >= 3.10 (it parses
    ``#`` formats without ``PY_SSIZE_T_CLEAN``); its C function ``lj92_encode`` is called here through ctypes instead.
    """
    import ctypes
    import glob
    import sys
    import types
    from unittest import mock

    import numpy as np

    try:
        import pidng
        import pidng.core
    except ImportError:
        return None
    found = glob.glob(os.path.join(os.path.dirname(os.path.dirname(pidng.__file__)), "ljpegCompress*.so"))
    try:
        lib = ctypes.CDLL(found[0]) if found else None
        libc = ctypes.CDLL(None)
        encode = lib.lj92_encode if lib is not None else None
    except (OSError, AttributeError):
        return None
    if encode is None:
        return None
    u16p = ctypes.POINTER(ctypes.c_uint16)
    encode.argtypes = [u16p, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                       ctypes.c_int, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)), ctypes.POINTER(ctypes.c_int),
                       ctypes.c_int]

    def pack16tolj(image, width, height, bits, _skip1, _skip2, _lin, _lin_len, predictor):
        image = np.ascontiguousarray(image, dtype=np.uint16)
        out, n = ctypes.POINTER(ctypes.c_uint8)(), ctypes.c_int()
        rc = encode(image.ctypes.data_as(u16p), width, height, bits, width, 0, None, 0, ctypes.byref(out),
                    ctypes.byref(n), predictor)
        if rc != 0:
            raise RuntimeError(f"lj92_encode failed ({rc})")
        try:
            return ctypes.string_at(out, n.value)
        finally:
            libc.free(out)

    options = pidng.core.RAW2DNG.options

    def compressed_options(self, tags, path, compress=False):
        return options(self, tags, path=path, compress=True)

    def write(path, bayer, meta, **kw):
        from redi_stream.capture import write_dng

        with mock.patch.dict(sys.modules, {"ljpegCompress": types.SimpleNamespace(pack16tolj=pack16tolj)}), \
                mock.patch.object(pidng.core.RAW2DNG, "options", compressed_options):
            return write_dng(path, bayer, meta, **kw)

    return write


@pytest.fixture(scope="session")
def write_lj92_dng():
    """:func:`lj92_writer`, or the test is skipped when pidng's encoder cannot be loaded."""
    write = lj92_writer()
    if write is None:
        pytest.skip("pidng's LJ92 encoder (ljpegCompress) cannot be loaded here")
    return write
