"""redi-stream from Python: enhance raw frames one at a time inside your own program (no threads of ours).

::

    import redi_stream

    with redi_stream.Enhancer() as enhance:                  # default weights; a CUDA GPU when present, else CPU
        for frame in redi_stream.open_raw("clip/"):          # RawFrame: mosaic + the file's own metadata
            rgb = enhance(frame)                             # (H, W, 3) uint8 sRGB, yours to keep
        rgb = enhance(mosaic, cfa="RGGB", black=64, white=1023)   # your own (H, W) Bayer array

:class:`Enhancer` runs the same enhancer as the command line (network or classic baseline, the automatic amplifier
with its temporal smoothing, the ISP), on the calling thread. :func:`open_raw` reads the files the command line
reads. For whole clips with decode-ahead, encoding and a preview, use the ``redi-stream`` command or
:class:`redi_stream.stream.Pipeline`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from .config import CudaNet, Device, EnhanceConfig, ModelKind, Precision, RawLayout, parse_enum
from .errors import ConfigError
from .frames import CFA, RawFrame, RawMeta


def open_raw(spec: str | os.PathLike[str] | list[str | os.PathLike[str]], *, fps: float | None = None,
             width: int | None = None, height: int | None = None, cfa: str | CFA | None = None,
             black: float | None = None, white: float | None = None, dtype: str = "<u2"):
    """The raw frames of a folder, glob, file or list of files, as the command line reads them.

    Returns a :class:`~redi_stream.capture.RawFileSource`: ``len()``, iteration in natural order, ``read(i)``,
    ``fps``, ``names``, ``close()`` and a ``with`` form. Each frame is a :class:`~redi_stream.frames.RawFrame`
    ((H, W) uint16 mosaic, upright, with its levels, Bayer pattern, white balance and colour matrix).

    ``width``, ``height``, ``cfa``, ``black``, ``white``, ``dtype``: the layout of headerless ``.raw`` frames, or
    levels a ``.npy`` file does not state (``--raw-width`` ... ``--white``).

    Raises:
        CaptureError: nothing to read at ``spec`` (the message names it). ConfigError: a bad layout value.
    """
    from .capture import RawFileSource

    if cfa is not None:
        cfa = parse_enum(CFA, cfa, "cfa")
    layout = RawLayout(width=width, height=height, cfa=cfa, black=black, white=white, dtype=dtype)
    return RawFileSource(spec, raw_params=layout.headerless_params(), fps=fps)


class Enhancer:
    """Enhance raw Bayer frames on the calling thread, exactly as a ``redi-stream`` run does.

    Every argument is the command-line option of the same name (``redi-stream --help``):

    Args:
        weights: a checkpoint (ours, or the official ``{"model": state_dict}`` format); None = the packaged weights.
        model: ``"redi"`` (the network) or ``"classic"`` (amplify, demosaic, ISP; no network).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``. precision: ``"auto"`` (fp16 on CUDA; on
            the CPU bf16 with AMX and ``bits=8``, else fp32), ``"fp32"``, ``"fp16"`` (CUDA) or ``"bf16"``.
            cuda_net, cuda_graph: the network's form on a GPU.
        gain: fixed amplification (None: the automatic amplifier, Eq. 5). gain_multiplier: scales the automatic
            gain (None: the weights' own default).
        gain_smoothing: the automatic gain's time constant in frames, for consecutive frames of one video (default
            8); give 0 when the frames are unrelated stills, so each gets its own exposure.
        temporal_denoise: motion-adaptive temporal denoising over about this many frames (0 = off).
        hot_pixels: replace isolated hot pixels before amplifying (``kernels.hotpix``).
        denoise: the classic model's bilateral denoise. tile: (H, W) tiles to bound memory (multiples of 32).
        bits: 8 (uint8 output, default) or 16 (uint16).

    Calling it with a frame returns the enhanced (H, W, 3) sRGB image; :attr:`last_gain` and
    :attr:`last_timings_ms` describe that frame. The first call also compiles the kernels and (CPU) picks the
    thread count, so it takes longer than the others.

    Threads: one frame at a time (a call made while another thread's call runs raises RuntimeError). It may be
    created on one thread and called on another, e.g. built before the worker thread that calls it starts: it is
    built without leaving an OpenMP thread team on the building thread, which would slow the network's threads on
    the calling one (:func:`redi_stream.model.runner.serial_thread`; a thread that ran large torch ops of its own has
    one anyway, and a network called from another thread then runs 10-25% slower on a small CPU).
    Process-wide effect: on the CPU the network keeps freed memory in glibc's heap for the next forward
    (:func:`redi_stream.glibc.keep_freed_memory`), as the command line does.

    ``close()`` is idempotent; the enhancer is a context manager.
    """

    def __init__(self, weights: str | os.PathLike[str] | None = None, *, model: str = "redi", device: str = "auto",
                 precision: str = "auto", cuda_net: str = "fast", cuda_graph: bool = True,
                 gain: float | None = None, gain_multiplier: float | None = None, gain_smoothing: float = 8.0,
                 temporal_denoise: float = 0.0, hot_pixels: bool = False, denoise: bool = False,
                 tile: tuple[int, int] | None = None, bits: int = 8) -> None:
        from . import app

        self.config = EnhanceConfig(
            model=parse_enum(ModelKind, model, "model"), weights=None if weights is None else Path(weights),
            device=parse_enum(Device, device, "device"), precision=parse_enum(Precision, precision, "precision"),
            cuda_net=parse_enum(CudaNet, cuda_net, "cuda_net"), cuda_graph=bool(cuda_graph), gain=gain,
            gain_multiplier=gain_multiplier, gain_smoothing_frames=gain_smoothing,
            temporal_denoise_frames=temporal_denoise, hot_pixels=bool(hot_pixels), denoise=bool(denoise),
            tile=None if tile is None else (int(tile[0]), int(tile[1])), bits_out=bits)
        self._busy = threading.Lock()
        self._stack = ExitStack()
        try:
            with app.network_thread_guard(self.config):
                self._enhancer = app.build_enhancer(self.config, self._stack, net=app.prepare_network(self.config))
        except BaseException:
            self._stack.close()
            raise
        self._hot = app.frame_filter(self.config)
        self._warm = False
        self._closed = False
        self.frames = 0  #: frames enhanced so far
        self.last_gain: float | None = None  #: the amplification the last frame got
        self.last_timings_ms: dict[str, float] = {}  #: the last frame's stages (gain, pack, infer, isp), in ms

    def __call__(self, frame: RawFrame | np.ndarray, *, cfa: str | CFA | None = None,
                 black: float | tuple[float, float, float, float] | None = None, white: float | None = None,
                 bits: int | None = None, wb_gains: tuple[float, float, float] | None = None,
                 cam_to_srgb: Any = None) -> np.ndarray:
        """Enhance one frame.

        Args:
            frame: a :class:`~redi_stream.frames.RawFrame` (from :func:`open_raw`: it carries its metadata), or an
                (H, W) Bayer mosaic in raw DN (unsigned integers, or floats: all in [0, 1] with no ``white``
                means normalised).
            cfa: the mosaic's Bayer pattern in reading order (``"RGGB"``, ``"BGGR"``, ``"GRBG"``, ``"GBRG"``);
                required with an array (a wrong pattern swaps colours).
            black: black level in DN, one value or four (TL, TR, BL, BR); default 0. white: saturation level in DN;
                default ``2**bits - 1`` with ``bits``, else the dtype's maximum.
            wb_gains: (R, G, B) white-balance gains of the sensor (scaled so G = 1); default (1, 1, 1).
            cam_to_srgb: 3x3 matrix from white-balanced camera RGB to linear sRGB; default identity.
            With a RawFrame, ``wb_gains`` and ``cam_to_srgb`` replace the file's own; the levels may not be given.

        Returns:
            (H, W, 3) uint8 (``bits=8``) or uint16 sRGB, the frame's size, owned by the caller.

        Raises:
            ConfigError: a bad frame or value (the message says which). RuntimeError: closed, or called from two
                threads at once.
        """
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("Enhancer called from two threads at once: it enhances one frame at a time")
        try:
            if self._closed:
                raise RuntimeError("Enhancer is closed")
            raw = self._raw_frame(frame, cfa=cfa, black=black, white=white, bits=bits, wb_gains=wb_gains,
                                  cam_to_srgb=cam_to_srgb)
            if self._hot is not None:
                raw = self._hot(raw)
            if not self._warm:
                self._enhancer.warm_up(raw.shape, raw.meta)
                self._warm = True
            out = self._enhancer.process(raw)
        finally:
            self._busy.release()
        self.frames += 1
        self.last_gain = float(out.gain)
        self.last_timings_ms = {k: v / 1e6 for k, v in out.timings_ns.items()}
        return out.rgb

    enhance = __call__

    def _raw_frame(self, frame, *, cfa, black, white, bits, wb_gains, cam_to_srgb) -> RawFrame:
        """``frame`` as a RawFrame with the caller's colour, numbered after the frames already enhanced."""
        colour: dict[str, Any] = {}
        if wb_gains is not None:
            colour["wb_gains"] = _wb_gains(wb_gains)
        if cam_to_srgb is not None:
            colour["cam_to_srgb"] = np.asarray(cam_to_srgb, dtype=np.float32)
        if isinstance(frame, RawFrame):
            if any(v is not None for v in (cfa, black, white, bits)):
                raise ConfigError("a RawFrame carries its own levels and Bayer pattern; give cfa, black, white and "
                                  "bits only with an array")
            meta = _replace_meta(frame.meta, colour)
            return dataclasses.replace(frame, meta=meta, index=self.frames)
        if not isinstance(frame, np.ndarray):
            raise ConfigError(f"frame must be a RawFrame or an (H, W) numpy array, got {type(frame).__name__}")
        if cfa is None:
            raise ConfigError("cfa is required with an array: the mosaic's Bayer pattern in reading order, one of "
                              f"{', '.join(c.value for c in CFA)}")
        from .capture.headerless import HeaderlessParams, bayer_from_array, normalised_to_dn

        params = HeaderlessParams(None, None, cfa=cfa, black=0.0 if black is None else black, white=white, bits=bits)
        try:
            arr, params, _ = normalised_to_dn(frame, params)
            data = bayer_from_array(arr)
            if min(data.shape) < 2:
                raise ValueError(f"a Bayer mosaic needs at least 2x2 pixels, got {data.shape[0]}x{data.shape[1]}")
        except ValueError as exc:
            raise ConfigError(f"frame {self.frames}: {exc}") from None
        meta = _replace_meta(params.meta(frame.dtype if frame.dtype.kind in "ui" else None), colour)
        return RawFrame(data=data, meta=meta, index=self.frames, t_ns=0, name=f"frame {self.frames}")

    def close(self) -> None:
        """Release the network, its buffers and (GPU) its graphs. Idempotent; waits for a call in progress."""
        with self._busy:
            if not self._closed:
                self._closed = True
                self._stack.close()

    def __enter__(self) -> Enhancer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _wb_gains(values) -> tuple[float, float, float]:
    try:
        r, g, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"wb_gains must be three numbers (R, G, B), got {values!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in (r, g, b)):
        raise ConfigError(f"wb_gains must be finite and > 0, got {(r, g, b)}")
    return (r / g, 1.0, b / g)


def _replace_meta(meta: RawMeta, colour: dict[str, Any]) -> RawMeta:
    try:
        return dataclasses.replace(meta, **colour) if colour else meta
    except ValueError as exc:  # RawMeta's own checks (e.g. a matrix that is not 3x3)
        raise ConfigError(str(exc)) from None
