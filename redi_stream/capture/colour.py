"""Colour maths shared by the raw reader and the DNG writer: XYZ <-> camera <-> sRGB matrices.

Convention (Brooks et al., "Unprocessing Images for Learned Raw Denoising", CVPR 2019, and dcraw/LibRaw's
``cam_xyz_coeff``): ``cam_from_srgb = xyz_to_cam @ XYZ_FROM_SRGB`` with each row normalised so that
``cam_from_srgb @ (1, 1, 1) == (1, 1, 1)`` (sRGB white maps to camera white after white balance), and
``cam_to_srgb = inv(cam_from_srgb)``. Every ``cam_to_srgb`` therefore has rows that sum to 1.
"""

from __future__ import annotations

import numpy as np

# Linear sRGB (D65) -> CIE XYZ, the matrix dcraw/LibRaw call ``xyz_rgb``.
XYZ_FROM_SRGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ],
    dtype=np.float64,
)
SRGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_SRGB)

# Row sums of a matrix that claims to be camera -> sRGB must be this close to 1 to be trusted.
_ROW_SUM_TOLERANCE = 0.02
_MIN_ABS_DET = 1e-6


def xyz_to_cam_to_cam_to_srgb(xyz_to_cam: np.ndarray) -> np.ndarray | None:
    """Camera -> sRGB matrix from an XYZ -> camera matrix (a DNG ``ColorMatrix``, LibRaw's ``rgb_xyz_matrix``).

    Args:
        xyz_to_cam: (3, 3) or (4, 3) float; only the first three rows (R, G, B) are used. Any per-row scale is
            allowed (it is normalised away).

    Returns:
        (3, 3) float32 ``cam_to_srgb`` with rows summing to 1, or ``None`` when the matrix is zero, not finite or
        singular (no usable colour information).
    """
    m = np.asarray(xyz_to_cam, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] < 3 or m.shape[1] != 3 or not np.all(np.isfinite(m[:3])):
        return None
    cam_from_srgb = m[:3] @ XYZ_FROM_SRGB
    row_sums = cam_from_srgb.sum(axis=1, keepdims=True)
    if np.any(np.abs(row_sums) < 1e-8):
        return None
    cam_from_srgb = cam_from_srgb / row_sums
    if abs(np.linalg.det(cam_from_srgb)) < _MIN_ABS_DET:
        return None
    return np.linalg.inv(cam_from_srgb).astype(np.float32)


def checked_cam_to_srgb(matrix: np.ndarray) -> np.ndarray | None:
    """Validate a matrix that is already camera -> sRGB (LibRaw's ``color_matrix``, ``rgb_cam`` convention).

    Args:
        matrix: (3, 3) or (3, 4) float; the fourth column (second green), if any, is ignored.

    Returns:
        (3, 3) float32 with rows renormalised to sum exactly to 1, or ``None`` when it is zero, not finite,
        singular, or its rows do not sum to about 1 (then it is not in this convention and cannot be trusted).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != 3 or m.shape[1] < 3:
        return None
    m = m[:, :3]
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < _MIN_ABS_DET:
        return None
    row_sums = m.sum(axis=1, keepdims=True)
    if np.any(np.abs(row_sums - 1.0) > _ROW_SUM_TOLERANCE):
        return None
    return (m / row_sums).astype(np.float32)


def cam_to_srgb_to_xyz_to_cam(cam_to_srgb: np.ndarray) -> np.ndarray:
    """The XYZ -> camera matrix (for a DNG ``ColorMatrix1``, illuminant D65) that reads back as ``cam_to_srgb``.

    It maps the D65 white point to camera (1, 1, 1), the scale the DNG specification expects.

    Args:
        cam_to_srgb: (3, 3) float, rows summing to 1.

    Returns:
        (3, 3) float64.

    Raises:
        ValueError: the matrix is singular.
    """
    m = np.asarray(cam_to_srgb, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m)) < _MIN_ABS_DET:
        raise ValueError(f"cam_to_srgb must be a finite invertible 3x3 matrix, got {m.tolist()}")
    cam_from_srgb = np.linalg.inv(m)
    return cam_from_srgb @ SRGB_FROM_XYZ


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer curve (IEC 61966-2-1).

    Args:
        srgb: float32 array in [0, 1], any shape.

    Returns:
        float32 array of the same shape, linear light in [0, 1].
    """
    x = np.clip(np.asarray(srgb, dtype=np.float32), 0.0, 1.0)
    low = x * np.float32(1.0 / 12.92)
    high = np.power((x + np.float32(0.055)) * np.float32(1.0 / 1.055), np.float32(2.4), dtype=np.float32)
    return np.where(x <= np.float32(0.04045), low, high).astype(np.float32, copy=False)
