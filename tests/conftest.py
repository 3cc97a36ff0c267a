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
