"""MIPI CSI-2 RAW10/RAW12 unpacking: round trip against a packer written here, and the NumPy twins."""

from __future__ import annotations

import numpy as np
import pytest

from redi_stream.kernels import reference, unpack_raw10, unpack_raw12


def pack_raw10(px: np.ndarray, stride: int) -> np.ndarray:
    """Test-side MIPI RAW10 packer: per 4 pixels, 4 MSB bytes then one byte of 2-bit LSBs (pixel 0 lowest)."""
    h, w = px.shape
    out = np.full((h, stride), 0xEE, dtype=np.uint8)  # padding bytes must be ignored
    for y in range(h):
        for g in range(-(-w // 4)):
            lsb = 0
            for i in range(4):
                x = 4 * g + i
                v = int(px[y, x]) if x < w else 0
                out[y, 5 * g + i] = v >> 2
                lsb |= (v & 3) << (2 * i)
            out[y, 5 * g + 4] = lsb
    return out


def pack_raw12(px: np.ndarray, stride: int) -> np.ndarray:
    """Test-side MIPI RAW12 packer: per 2 pixels, 2 MSB bytes then one byte of nibbles (pixel 0 low nibble)."""
    h, w = px.shape
    out = np.full((h, stride), 0xEE, dtype=np.uint8)
    for y in range(h):
        for g in range(-(-w // 2)):
            v0 = int(px[y, 2 * g])
            v1 = int(px[y, 2 * g + 1]) if 2 * g + 1 < w else 0
            out[y, 3 * g] = v0 >> 4
            out[y, 3 * g + 1] = v1 >> 4
            out[y, 3 * g + 2] = (v0 & 15) | ((v1 & 15) << 4)
    return out


def test_raw10_known_bytes() -> None:
    packed = np.array([[0xFF, 0x00, 0x80, 0x01, 0b11_10_01_00]], dtype=np.uint8)
    out = np.empty((1, 4), dtype=np.uint16)
    np.testing.assert_array_equal(unpack_raw10(packed, 4, out), [[1020, 1, 514, 7]])


def test_raw12_known_bytes() -> None:
    packed = np.array([[0xAB, 0xCD, 0x21]], dtype=np.uint8)
    out = np.empty((1, 2), dtype=np.uint16)
    np.testing.assert_array_equal(unpack_raw12(packed, 2, out), [[0xAB1, 0xCD2]])


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 9, 37])
@pytest.mark.parametrize("extra", [0, 3])
def test_raw10_round_trip(width: int, extra: int) -> None:
    px = np.random.default_rng(width).integers(0, 1024, size=(5, width), dtype=np.uint16)
    px[0, 0], px[-1, -1] = 0, 1023
    packed = pack_raw10(px, -(-width // 4) * 5 + extra)
    out = np.empty_like(px)
    np.testing.assert_array_equal(unpack_raw10(packed, width, out), px)
    np.testing.assert_array_equal(reference.unpack_raw10(packed, width), px)


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 37])
@pytest.mark.parametrize("extra", [0, 5])
def test_raw12_round_trip(width: int, extra: int) -> None:
    px = np.random.default_rng(width).integers(0, 4096, size=(5, width), dtype=np.uint16)
    px[0, 0], px[-1, -1] = 0, 4095
    packed = pack_raw12(px, -(-width // 2) * 3 + extra)
    out = np.empty_like(px)
    np.testing.assert_array_equal(unpack_raw12(packed, width, out), px)
    np.testing.assert_array_equal(reference.unpack_raw12(packed, width), px)


def test_rejects_short_stride_and_bad_out() -> None:
    with pytest.raises(ValueError, match="stride"):
        unpack_raw10(np.zeros((2, 9), np.uint8), 8, np.empty((2, 8), np.uint16))
    with pytest.raises(ValueError, match="stride"):
        unpack_raw12(np.zeros((2, 4), np.uint8), 3, np.empty((2, 3), np.uint16))
    with pytest.raises(ValueError, match="out must be"):
        unpack_raw10(np.zeros((2, 10), np.uint8), 8, np.empty((2, 8), np.uint8))
    with pytest.raises(ValueError, match="packed"):
        unpack_raw12(np.zeros((2, 9), np.uint16), 6, np.empty((2, 6), np.uint16))
