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

Out of memory. :class:`TiledRunner` wraps a host runner (``run(f32[N, 1, H, W]) -> f32[N, H, W, 3]``): it runs
whole frames, or ``tile``-sized windows when asked (``--tile``), and when the device runs out of memory on a
shape it frees the allocator's cache, retries that shape in smaller tiles (:data:`AUTO_TILES`, largest first) and
remembers the tile that worked, so later frames of that shape go straight to it. Only the network is tiled: the
amplification is computed by the caller on the whole frame before, so every tile is amplified alike. If even the
smallest tile does not fit, :class:`DeviceMemoryError` names the memory the frame needs
(:func:`estimate_memory_bytes`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from redi_stream.errors import ConfigError, RediStreamError
from redi_stream.model.net import SIZE_MULTIPLE

log = logging.getLogger(__name__)

#: Margin beyond which no output pixel can be influenced (receptive-field radius, rounded up to 32).
EXACT_OVERLAP = 576
#: Default margin: error at float32-rounding level on random weights (see the module docstring).
DEFAULT_OVERLAP = 384
#: Default window size.
DEFAULT_TILE = (2048, 2048)
#: Square tile sizes tried, largest first, after the device ran out of memory (each about half the previous area).
AUTO_TILES = (4096, 2880, 2048, 1440, 1024)
#: Peak host memory of one float32 forward per input pixel (input, activations and output), measured on the CPU:
#: 107-109 bytes/pixel for a 1024x2048 frame (FastRediNet and RediNet alike). Activations scale with the element
#: size, so about ``24 * element_bytes + 12`` bytes per pixel.
_ACTIVATION_ELEMENTS_PER_PIXEL = 24
_IO_BYTES_PER_PIXEL = 12


class DeviceMemoryError(RediStreamError, MemoryError):
    """The network does not fit in the device's memory for this frame, not even in the smallest tiles."""


def estimate_memory_bytes(h: int, w: int, element_bytes: int = 4) -> int:
    """Approximate peak memory (bytes) of one forward pass on an (h, w) input with ``element_bytes``-sized
    activations (4 for fp32, 2 for fp16/bf16); see :data:`_ACTIVATION_ELEMENTS_PER_PIXEL`."""
    return int(h) * int(w) * (_ACTIVATION_ELEMENTS_PER_PIXEL * int(element_bytes) + _IO_BYTES_PER_PIXEL)


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from or while handling) means "out of device memory":
    ``torch.OutOfMemoryError`` (= ``torch.cuda.OutOfMemoryError``), a CUDA/cuDNN allocation failure reported as a
    RuntimeError, or the CPU allocator's "can't allocate memory". The chain is followed because an OOM inside a
    CUDA-graph capture resurfaces as the capture's own error, with the OOM as its context."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, torch.OutOfMemoryError):
            return True
        if isinstance(e, RuntimeError):
            text = str(e).lower()
            if "out of memory" in text or "can't allocate memory" in text or "cudnn_status_alloc_failed" in text:
                return True
        e = e.__cause__ or e.__context__
    return False


def release_cached_memory() -> None:
    """Give the CUDA caching allocator's unused blocks back (no-op when CUDA was never initialised)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


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


def check_tiling(h: int, w: int, tile: tuple[int, int], overlap: int) -> None:
    """Validate a tiling of an (h, w) input (see :func:`run_tiled`); ConfigError says what is wrong."""
    th, tw = tile
    for name, v in (("height", h), ("width", w), ("tile height", th), ("tile width", tw), ("overlap", overlap)):
        if v % SIZE_MULTIPLE:
            raise ConfigError(f"run_tiled: {name} {v} is not a multiple of {SIZE_MULTIPLE}")
    if overlap < 64:
        raise ConfigError(f"run_tiled: overlap {overlap} must be >= 64 (exact from {EXACT_OVERLAP})")
    for name, t, length in (("height", th, h), ("width", tw, w)):
        if t <= 2 * overlap and t < length:
            raise ConfigError(f"run_tiled: tile {name} {t} must exceed twice the overlap ({2 * overlap})")


def check_tile(tile: tuple[int, int], overlap: int = DEFAULT_OVERLAP) -> tuple[int, int]:
    """``tile`` as two ints, each a multiple of 32 larger than ``2 * overlap`` (the CLI's ``--tile`` rule).

    Raises:
        ConfigError: naming ``--tile`` and the smallest size allowed.
    """
    th, tw = int(tile[0]), int(tile[1])
    if any(t % SIZE_MULTIPLE or t <= 2 * overlap for t in (th, tw)):
        raise ConfigError(f"--tile {th}x{tw}: each side must be a multiple of {SIZE_MULTIPLE} "
                          f"larger than {2 * overlap} (twice the {overlap}-px overlap), e.g. 1024x1024")
    return th, tw


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
    check_tiling(h, w, tile, overlap)
    out: Tensor | None = None
    for wy0, wy1, cy0, cy1 in tile_spans(h, th, overlap):
        for wx0, wx1, cx0, cx1 in tile_spans(w, tw, overlap):
            y = fn(x[:, :, wy0:wy1, wx0:wx1])
            if out is None:
                out = torch.empty((n, y.shape[1], h, w), dtype=y.dtype, device=y.device)
            out[:, :, cy0:cy1, cx0:cx1] = y[:, :, cy0 - wy0 : cy1 - wy0, cx0 - wx0 : cx1 - wx0]
    assert out is not None
    return out


def run_tiled_host(
    run: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    tile: tuple[int, int],
    overlap: int = DEFAULT_OVERLAP,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`run_tiled` for host runners: ``run(f32[N, 1, th, tw]) -> f32[N, th, tw, 3]`` (NHWC), e.g.
    ``TorchRunner.run``. Each window is copied to a contiguous array before ``run``; each result's core is copied
    out before the next call (a runner may reuse its output buffer).

    Args:
        x: f32 (N, 1, H, W), H and W multiples of 32.
        tile, overlap: as for :func:`run_tiled`.
        out: optional f32 (N, H, W, 3) to write into.

    Returns:
        f32 (N, H, W, 3): ``out`` if given, else a new array.
    """
    if x.ndim != 4 or x.shape[1] != 1:
        raise ConfigError(f"run_tiled_host input must be (N, 1, H, W), got {x.shape}")
    n, _, h, w = x.shape
    check_tiling(h, w, tile, overlap)
    if out is None:
        out = np.empty((n, h, w, 3), dtype=np.float32)
    elif out.shape != (n, h, w, 3):
        raise ConfigError(f"run_tiled_host: out must be {(n, h, w, 3)}, got {out.shape}")
    for wy0, wy1, cy0, cy1 in tile_spans(h, tile[0], overlap):
        for wx0, wx1, cx0, cx1 in tile_spans(w, tile[1], overlap):
            y = run(np.ascontiguousarray(x[:, :, wy0:wy1, wx0:wx1]))
            out[:, cy0:cy1, cx0:cx1] = y[:, cy0 - wy0 : cy1 - wy0, cx0 - wx0 : cx1 - wx0]
    return out


def tiling_work(h: int, w: int, tile: tuple[int, int], overlap: int) -> float:
    """Pixels the network processes with this tiling, relative to one untiled pass (>= 1)."""
    ny, nx = len(tile_spans(h, tile[0], overlap)), len(tile_spans(w, tile[1], overlap))
    return ny * min(tile[0], h) * nx * min(tile[1], w) / (h * w)


class TiledRunner:
    """Wrap a host runner: whole frames, fixed tiles, or tiles found after the device ran out of memory.

    Args:
        runner: ``run(f32[N, 1, H, W]) -> f32[N, H, W, 3]`` (``TorchRunner``); owned by the caller. Its
            ``precision`` (if any) sizes the memory estimate of :class:`DeviceMemoryError`.
        tile: (th, tw) multiples of 32, each > ``2 * overlap``, for every frame (the CLI's ``--tile``); None runs
            whole frames.
        overlap: margin discarded at interior tile edges (multiple of 32, >= 64), :data:`DEFAULT_OVERLAP` by
            default: tiled equals untiled to ~1e-5 (float32 rounding; fp16 rounding is ~5e-4), see the module.
        auto: on an out-of-memory error retry the frame in smaller tiles (:data:`AUTO_TILES`); False re-raises it.

    ``run`` returns an array owned by this object (tiled) or by ``runner`` (untiled), valid until the next call.
    Thread use: one thread (the ``redi-infer`` thread), like the runner.

    Raises:
        ConfigError: a tile that is not a multiple of 32 or not larger than twice the overlap.
    """

    def __init__(self, runner, *, tile: tuple[int, int] | None = None, overlap: int = DEFAULT_OVERLAP,
                 auto: bool = True) -> None:
        if overlap % SIZE_MULTIPLE or overlap < 64:
            raise ConfigError(f"tile overlap must be a multiple of {SIZE_MULTIPLE} and >= 64, got {overlap}")
        if tile is not None:
            tile = check_tile(tile, overlap)
        self.runner = runner
        self.tile = tile
        self.overlap = int(overlap)
        self.auto = bool(auto)
        self._tiles: dict[tuple[int, int], tuple[int, int]] = {}  # per (H, W): tile found after an OOM
        self._outs: dict[tuple[int, ...], np.ndarray] = {}

    def tile_for(self, h: int, w: int) -> tuple[int, int] | None:
        """The tile used for (h, w) inputs now: learned after an OOM, else ``tile``; None = whole frame."""
        return self._tiles.get((h, w), self.tile)

    def run(self, x: np.ndarray) -> np.ndarray:
        """f32 (N, 1, H, W) -> f32 (N, H, W, 3), whole or tiled, retrying in smaller tiles on out-of-memory.

        Raises:
            DeviceMemoryError: out of memory even in the smallest tile (message: frame size, memory needed).
        """
        n, _, h, w = x.shape
        while True:
            tile = self.tile_for(h, w)
            try:
                return self._run_once(x, tile)
            except Exception as exc:  # noqa: BLE001 -- only out-of-memory is handled; everything else re-raised
                reason = self._oom_reason(exc)
            # Outside the handler: the traceback (and the failed attempt's tensors it references) is gone.
            self._shrink(n, h, w, tile, reason)

    def warm_up(self, shape: tuple[int, int]) -> None:
        """Prepare the runner for (H, W) inputs: ``runner.warm_up(window)`` if it has one, else one ``run`` on
        zeros, for the window actually used (whole frame or tile). An out-of-memory error here already switches
        the shape to tiles, as in :meth:`run`."""
        h, w = (int(v) for v in shape[-2:])
        warm = getattr(self.runner, "warm_up", None)
        while True:
            tile = self.tile_for(h, w)
            win = (h, w) if tile is None else (min(tile[0], h), min(tile[1], w))
            try:
                if warm is not None:
                    warm(win)
                else:
                    self.runner.run(np.zeros((1, 1, *win), dtype=np.float32))
                return
            except Exception as exc:  # noqa: BLE001 -- only out-of-memory is handled; everything else re-raised
                reason = self._oom_reason(exc)
            self._shrink(1, h, w, tile, reason)

    def _oom_reason(self, exc: Exception) -> str:
        """The first line of an out-of-memory error (re-raises ``exc`` when it is not one, or auto is off)."""
        if not (self.auto and is_out_of_memory(exc)):
            raise exc
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

    def _shrink(self, n: int, h: int, w: int, tile: tuple[int, int] | None, reason: str) -> None:
        """After an OOM with ``tile``: free the allocator's cache and switch (h, w) to the next smaller tile."""
        release_cached_memory()
        smaller = self._smaller_tile(h, w, tile)
        if smaller is None:
            raise DeviceMemoryError(self._oom_message(n, h, w, tile, reason))
        log.warning("out of memory running the network on a %dx%d frame%s (%s); retrying in %dx%d tiles "
                    "(%d-px overlap, %.1fx the work)", w, h, "" if tile is None else f" in {tile[1]}x{tile[0]} tiles",
                    reason, smaller[1], smaller[0], self.overlap, tiling_work(h, w, smaller, self.overlap))
        self._tiles[(h, w)] = smaller

    def _run_once(self, x: np.ndarray, tile: tuple[int, int] | None) -> np.ndarray:
        n, _, h, w = x.shape
        if tile is None or (tile[0] >= h and tile[1] >= w):
            return self.runner.run(x)
        out = self._outs.get(x.shape)
        if out is None:
            self._outs.clear()  # one buffer: a new shape usually means a new source
            out = self._outs[x.shape] = np.empty((n, h, w, 3), dtype=np.float32)
        return run_tiled_host(self.runner.run, x, tile, self.overlap, out=out)

    def _smaller_tile(self, h: int, w: int, tile: tuple[int, int] | None) -> tuple[int, int] | None:
        """The largest tile in AUTO_TILES whose window is smaller than the current one, or None."""
        if tile is None:
            current = h * w
        else:
            current = min(tile[0], h) * min(tile[1], w)
        for t in AUTO_TILES:
            if t > 2 * self.overlap and min(t, h) * min(t, w) < current:
                return (t, t)
        return None

    def _oom_message(self, n: int, h: int, w: int, tile: tuple[int, int] | None, reason: str) -> str:
        precision = str(getattr(getattr(self.runner, "precision", None), "value", "fp32"))
        elem = 4 if precision == "fp32" else 2
        gib = 2.0**30
        need = n * estimate_memory_bytes(h, w, elem) / gib
        msg = f"out of device memory for a {w}x{h} network input (needs about {need:.1f} GiB at {precision}"
        if tile is not None and (tile[0] < h or tile[1] < w):
            th, tw = min(tile[0], h), min(tile[1], w)
            each = n * estimate_memory_bytes(th, tw, elem) / gib
            msg += f"; also failed in {tw}x{th} tiles, about {each:.2f} GiB each"
        return msg + f"): {reason}; free device memory, use --device cpu, or a smaller input"

    def close(self) -> None:
        """Drop the tiled output buffers (the runner belongs to the caller). Idempotent."""
        self._outs.clear()

    def __enter__(self) -> "TiledRunner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
