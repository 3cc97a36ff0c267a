"""Run the network on overlapping tiles (bounded memory for very large frames) and keep each tile's centre.

Every tile has the same shape (good for CUDA graphs and cuDNN autotuning); tiles start on multiples of 32 so
the H/32 grid of the HSE branch lines up with the whole frame's; tiles touching the frame border are clipped to
the frame and so see the same zero padding as the untiled network. Each output pixel is taken from the tile in
which it lies at least ``overlap`` pixels from every interior tile edge (centre crop, no blending), so the result
equals the untiled output wherever the network's influence from beyond ``overlap`` pixels is negligible.

Receptive field: the longest conv chain runs through HSE at H/32 (2 stem convs + 4 + 5 + 5 dense layers, all
3x3: 16 px at H/32 = 512 px), plus conv_rdb8x and FB1 at H/8 (24 px), FB2 at H/2 (4 px) and the unshuffle phase
(< 32 px): about 570 px, so ``overlap >= 576`` is exact for any weights. Measured on random-init weights (a
1024x2560 smooth input, tiles along the width), max |tiled - untiled| of the clamped output:

    overlap   64: 8.0e-01   128: 1.6e-01   192: 3.0e-02   256: 2.6e-03   384: 9.3e-06   576: 0 (bit-exact)

The default overlap is 384: float32-rounding-level error for a fraction of the cost of 576. Tiling multiplies
the work by about (tile / (tile - 2 * overlap))^2 per axis pair, so tiles should be large (default 2048).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from redi_stream.errors import ConfigError
from redi_stream.model.net import SIZE_MULTIPLE

#: Margin beyond which no output pixel can be influenced (receptive-field radius, rounded up to 32).
EXACT_OVERLAP = 576
#: Default margin: error at float32-rounding level on random weights (see the module docstring).
DEFAULT_OVERLAP = 384
#: Default window size.
DEFAULT_TILE = (2048, 2048)


def tile_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Split one axis into windows of ``tile`` pixels and the core each one is responsible for.

    Returns ``(window_start, window_stop, core_start, core_stop)`` tuples; cores partition ``[0, length)`` and lie
    ``>= overlap`` pixels inside their window except where the window touches the frame border. When ``length <=
    tile`` there is one window, the whole axis.
    """
    if length <= tile:
        return [(0, length, 0, length)]
    step = tile - 2 * overlap
    spans = [(0, tile, 0, tile - overlap)]
    start = tile - overlap
    while length - start > tile - overlap:
        spans.append((start - overlap, start - overlap + tile, start, start + step))
        start += step
    spans.append((length - tile, length, start, length))
    return spans


def run_tiled(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    tile: tuple[int, int] = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
) -> Tensor:
    """Apply ``fn`` to overlapping ``tile``-sized windows of ``x`` and assemble the centre crops.

    Args:
        fn: (N, 1, th, tw) -> (N, 3, th, tw), e.g. a RediNet (called under the caller's grad mode).
        x: (N, 1, H, W) tensor, H and W multiples of 32.
        tile: (th, tw) window size, multiples of 32, each greater than ``2 * overlap`` (or >= the frame size).
        overlap: pixels discarded at each interior window edge; a multiple of 32, >= 64.

    Returns:
        (N, 3, H, W) tensor on ``x``'s device, ``fn``'s dtype.

    Raises:
        ConfigError: a size is not a multiple of 32, ``overlap < 64``, or a tile is not larger than twice the overlap.
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f"run_tiled input must be (N, 1, H, W), got {tuple(x.shape)}")
    n, _, h, w = x.shape
    th, tw = tile
    for name, v in (("height", h), ("width", w), ("tile height", th), ("tile width", tw), ("overlap", overlap)):
        if v % SIZE_MULTIPLE:
            raise ConfigError(f"run_tiled: {name} {v} is not a multiple of {SIZE_MULTIPLE}")
    if overlap < 64:
        raise ConfigError(f"run_tiled: overlap {overlap} must be >= 64 (exact from {EXACT_OVERLAP})")
    for name, t, length in (("height", th, h), ("width", tw, w)):
        if t <= 2 * overlap and t < length:
            raise ConfigError(f"run_tiled: tile {name} {t} must exceed twice the overlap ({2 * overlap})")
    out: Tensor | None = None
    for wy0, wy1, cy0, cy1 in tile_spans(h, th, overlap):
        for wx0, wx1, cx0, cx1 in tile_spans(w, tw, overlap):
            y = fn(x[:, :, wy0:wy1, wx0:wx1])
            if out is None:
                out = torch.empty((n, y.shape[1], h, w), dtype=y.dtype, device=y.device)
            out[:, :, cy0:cy1, cx0:cx1] = y[:, :, cy0 - wy0 : cy1 - wy0, cx0 - wx0 : cx1 - wx0]
    assert out is not None
    return out
