"""CUDA enhancer: raw uint16 up, uint8 RGB (and yuv420p planes) down; everything in between on the GPU.

:class:`CudaRediEnhancer` follows the enhancer protocol of :mod:`.enhance` (``warm_up``, ``process``, ``close``, all
on the ``redi-infer`` thread) and adds a pipelined form, ``submit(frame)`` / ``collect()``, so that a caller that
keeps two frames in flight overlaps frame i+1's upload with frame i's compute and frame i's download with frame
i+1's compute (the current ``Pipeline`` calls ``process``, which is ``submit`` + ``collect``: see PERF_NOTES.md for
the hook that would use the pipelined form).

Per frame, the host does only: the Eq. 5 gain (numba, the same ``_GainControl`` as :class:`RediEnhancer`), one
memcpy of the raw frame into a pinned slot, and one memcpy of the result out of a pinned slot into a fresh array
that the returned frame owns. The device program (:class:`DeviceProgram`) is ``model.gpu_ops.BayerPacker``
(black level, range, clip, gain, CFA unification, reflect padding) -> the network (three CUDA streams, fp16 by
default) -> crop -> ISP (``gpu_ops.apply_isp``) -> uint8 -> optionally ``gpu_ops.rgb_to_yuv420p``, captured once
per slot as a CUDA graph.

Buffers and streams (created once in :meth:`warm_up`, reused; nothing is allocated per frame on the device):

* ``slots`` (2) slots, each: pinned host raw (H, W) int16 + pinned gain, device raw + gain (the graph's static
  inputs), device outputs (the graph's static outputs), pinned host outputs, three events (``h2d``, ``compute``,
  ``d2h``). The graphs of all slots share one memory pool for their intermediates (they run one after another on
  the compute stream); each graph copies its result into its slot's outputs, which are outside that pool.
* streams: ``copy_in`` (H2D), ``compute`` (graph replay; the network forks onto the runner's three streams inside),
  ``copy_out`` (D2H). Ordering is by events only: H2D(s) waits for compute(s) of the slot's previous frame (the
  device raw buffer is free), compute(s) waits for H2D(s) and for D2H(s) of the slot's previous frame (the device
  outputs are free), D2H(s) waits for compute(s). The host reuses a pinned input slot only after its H2D event has
  completed (STYLE habit 4) and a pinned output slot only after it has copied the previous result out.

Only host arrays cross threads; CUDA is touched only by the thread that calls these methods. The device program is
plain torch and also runs on the CPU device (``DeviceProgram(..., device="cpu")``), which is how CI tests it
against :class:`RediEnhancer`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import kernels
from ..errors import ConfigError, RediStreamError
from ..frames import EnhancedFrame, RawFrame, RawMeta
from ..model import RediNet
from ..model.gpu_ops import BayerPacker, apply_isp, float_to_uint, rgb_to_yuv420p
from ..model.runner import StreamedRunner, parse_device, parse_precision
from .enhance import _check_out_dtype, _GainControl, _LiveGain, default_multiplier


class EnhancerClosedError(RediStreamError, ValueError):
    """A closed enhancer was used."""


class DeviceProgram:
    """The per-frame device work for one frame shape and metadata: raw (H, W) int16 + gain -> uint8/uint16 RGB.

    Args:
        forward: ``(N, 1, Hp, Wp)`` tensor in the network's dtype -> ``(N, 3, Hp, Wp)`` in [0, 1].
        dtype: the network's dtype (inputs are cast to it, outputs cast back to float32 for the ISP).
        shape, meta: frame size and metadata (levels, CFA, WB, matrix).
        output: ``"linear_camera_rgb"`` (ISP with WB and matrix) or ``"srgb"`` (quantise only); isp=False skips the
            ISP for linear models.
        out_dtype: np.uint8 or np.uint16; yuv: also produce yuv420p planes (uint8 output and even H, W only).

    ``__call__(raw, gain) -> dict`` of device tensors: ``rgb`` (H, W, 3) uint8, or int16 holding uint16 bits, and
    ``y``, ``u``, ``v`` when ``yuv``. No host synchronisation: capturable in a CUDA graph.
    """

    def __init__(self, forward, dtype: torch.dtype, shape: tuple[int, int], meta: RawMeta, device: torch.device,
                 *, output: str = "linear_camera_rgb", isp: bool = True, out_dtype=np.uint8, yuv: bool = False):
        self.forward, self.dtype, self.device = forward, dtype, device
        self.packer = BayerPacker(shape, meta.cfa, meta.black_level_array, meta.white_level, device)
        self.render_isp = output == "linear_camera_rgb" and isp
        self.wb = torch.tensor(meta.wb_gains, dtype=torch.float32, device=device)
        self.m = torch.as_tensor(meta.cam_to_srgb, dtype=torch.float32).to(device)
        self.out_dtype = np.dtype(out_dtype)
        h, w = shape
        self.yuv = bool(yuv) and self.out_dtype == np.uint8 and h % 2 == 0 and w % 2 == 0

    def __call__(self, raw: torch.Tensor, gain: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.packer(raw, gain)[None, None].to(self.dtype)
        y = self.forward(x)  # (1, 3, Hp, Wp)
        lin = self.packer.crop(y[0].permute(1, 2, 0)).to(torch.float32)
        codes = torch.uint8 if self.out_dtype == np.uint8 else torch.int32
        rgb = apply_isp(lin, self.wb, self.m, codes) if self.render_isp else float_to_uint(lin, codes)
        if codes is torch.int32:
            rgb = rgb.to(torch.int16)  # keeps the low 16 bits: the uint16 codes, read back as uint16 on the host
        out = {"rgb": rgb.contiguous()}
        if self.yuv:
            out["y"], out["u"], out["v"] = rgb_to_yuv420p(out["rgb"])
        return out


@dataclass
class _Slot:
    host_raw: torch.Tensor  # pinned (H, W) int16
    host_gain: torch.Tensor  # pinned (1,) float32
    dev_raw: torch.Tensor
    dev_gain: torch.Tensor  # () float32
    host_out: dict[str, torch.Tensor]  # pinned, like dev_out
    h2d: torch.cuda.Event
    compute: torch.cuda.Event
    d2h: torch.cuda.Event
    dev_out: dict[str, torch.Tensor] = field(default_factory=dict)
    graph: "torch.cuda.CUDAGraph | None" = None
    used: bool = False  # has run a frame (its events have been recorded)


@dataclass
class _InFlight:
    slot: _Slot
    frame: RawFrame
    gain: float
    t_submit_ns: int
    timings_ns: dict[str, int]


class CudaRediEnhancer(_LiveGain):
    """The REDI network between raw upload and 8-bit download, all on one CUDA device. See the module docstring.

    Args:
        model: a RediNet (the enhancer keeps its own folded copy on the device through a :class:`StreamedRunner`).
        weights_meta: ``model.WeightsMeta`` (``output``, ``gain_target``, ``gain_multiplier_default``) or None.
        device: 'cuda' or 'cuda:N'. precision: 'fp16' (default), 'fp32' or 'bf16'.
        fast: run :class:`~redi_stream.model.fast.FastRediNet` (one stream), the fastest form measured on an H200
            (``docs/PERF_NOTES.md``); False runs the spec forward, with ``streams``: on three CUDA streams.
        channels_last: the spec forward with channels-last weights (measured, not faster; kept for other GPUs).
        cuda_graph: capture the device program per slot.
        gain, gain_multiplier, smoothing_frames, out_dtype, isp: as :class:`~redi_stream.stream.RediEnhancer`.
        yuv: also download BT.709 yuv420p planes, attached to the returned frame as ``frame.yuv420p = (y, u, v)``
            (a sink that knows the attribute can skip its own RGB -> YUV conversion).
        slots: frames in flight at most (2 = double buffering).

    Raises:
        ConfigError: no CUDA device, a bad precision or option.
    """

    def __init__(self, model: RediNet, weights_meta=None, *, device: str = "cuda", precision: str = "fp16",
                 streams: bool = True, cuda_graph: bool = True, gain: float | None = None,
                 gain_multiplier: float | None = None, smoothing_frames: float = 8.0, out_dtype=np.uint8,
                 isp: bool = True, yuv: bool = True, slots: int = 2, channels_last: bool = False,
                 fast: bool = True) -> None:
        self.device = parse_device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"CudaRediEnhancer needs a CUDA device, got {device!r}; use RediEnhancer on the CPU")
        self.precision = parse_precision(precision, "cuda")
        if not 1 <= int(slots) <= 8:
            raise ConfigError(f"slots must be in 1..8, got {slots}")
        self.meta = weights_meta if weights_meta is not None else getattr(model, "meta", None)
        output = str(getattr(self.meta, "output", "linear_camera_rgb"))
        if output not in ("linear_camera_rgb", "srgb"):
            raise ConfigError(f"unknown model output {output!r}; valid: linear_camera_rgb, srgb")
        self.output = output
        self._gain = _GainControl(gain=gain, multiplier=default_multiplier(gain, gain_multiplier, self.meta),
                                  smoothing_frames=smoothing_frames,
                                  target=float(getattr(self.meta, "gain_target", 0.01)))
        self.out_dtype = _check_out_dtype(out_dtype)
        self.isp, self.yuv, self.cuda_graph, self.n_slots = isp, yuv, bool(cuda_graph), int(slots)
        self.runner = StreamedRunner(model, self.device, self.precision, cuda_graph=False,
                                     sequential=fast or not streams, channels_last=channels_last, fast=fast)
        with torch.cuda.device(self.device):
            self._copy_in = torch.cuda.Stream(self.device)
            self._compute = torch.cuda.Stream(self.device)
            self._copy_out = torch.cuda.Stream(self.device)
        self._key: tuple | None = None
        self._program: DeviceProgram | None = None
        self._slots: list[_Slot] = []
        self._pool = None
        self._next = 0
        self._in_flight: deque[_InFlight] = deque()
        self._closed = False

    # -- setup ---------------------------------------------------------------------------------------------------
    def warm_up(self, shape: tuple[int, int], meta: RawMeta) -> None:
        """Compile the host kernels, build the slots and capture the graphs for frames of ``shape`` with ``meta``."""
        self._check_open()
        kernels.warm_up()
        self._prepare(tuple(int(s) for s in shape), meta)

    def _prepare(self, shape: tuple[int, int], meta: RawMeta) -> None:
        key = (shape, meta.cfa, tuple(meta.black_level), meta.white_level, tuple(meta.wb_gains),
               np.asarray(meta.cam_to_srgb).tobytes())
        if key == self._key:
            return
        if self._in_flight:
            raise RuntimeError("a frame of another shape or metadata: collect() the frames in flight first")
        self._release_slots()
        dev = self.device
        with torch.cuda.device(dev):
            program = DeviceProgram(self.runner.forward, self.precision.dtype, shape, meta, dev, output=self.output,
                                    isp=self.isp, out_dtype=self.out_dtype, yuv=self.yuv)
            h, w = shape
            self._pool = torch.cuda.graph_pool_handle() if self.cuda_graph else None
            slots = []
            for _ in range(self.n_slots):
                slot = _Slot(
                    host_raw=torch.empty((h, w), dtype=torch.int16, pin_memory=True),
                    host_gain=torch.ones(1, dtype=torch.float32, pin_memory=True),
                    dev_raw=torch.zeros((h, w), dtype=torch.int16, device=dev),
                    dev_gain=torch.ones((), dtype=torch.float32, device=dev),
                    host_out={},
                    h2d=torch.cuda.Event(), compute=torch.cuda.Event(), d2h=torch.cuda.Event(),
                )
                self._build_outputs(program, slot)
                slots.append(slot)
            torch.cuda.synchronize(dev)
        self._program, self._slots, self._key, self._next = program, slots, key, 0

    def _build_outputs(self, program: DeviceProgram, slot: _Slot) -> None:
        """Warm up (cuDNN/cuBLAS initialise lazily, never during capture), then capture or allocate the outputs."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(2):
                outs = program(slot.dev_raw, slot.dev_gain)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        # The outputs live outside the graphs' shared pool. A graph's own outputs would be pool memory, possibly
        # memory that a slot captured before it uses for intermediates (freed when that capture ended): that slot's
        # next replay would overwrite this slot's result while its D2H copy is still reading it (two frames in
        # flight). So each graph ends by copying into its slot's own tensors, as the uncaptured path does.
        slot.dev_out = {k: torch.empty_like(v) for k, v in outs.items()}
        if self.cuda_graph:
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool, stream=self._compute):
                for k, v in program(slot.dev_raw, slot.dev_gain).items():
                    slot.dev_out[k].copy_(v)
            slot.graph = graph
        slot.host_out = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True) for k, v in slot.dev_out.items()}

    # -- per frame -----------------------------------------------------------------------------------------------
    def submit(self, frame: RawFrame) -> None:
        """Start enhancing ``frame`` (asynchronously on the device). At most ``slots`` frames may be in flight."""
        self._check_open()
        if len(self._in_flight) >= self.n_slots:
            raise RuntimeError(f"{self.n_slots} frames already in flight: collect() one first")
        t0 = time.perf_counter_ns()
        self._prepare(frame.shape, frame.meta)
        gain = self._gain(frame)
        t1 = time.perf_counter_ns()
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        if slot.used:
            slot.h2d.synchronize()  # the pinned input slot is free once its last H2D copy has completed
        slot.host_raw.numpy()[...] = frame.data.view(np.int16)
        slot.host_gain[0] = gain
        t2 = time.perf_counter_ns()
        with torch.cuda.device(self.device), torch.inference_mode():
            if slot.used:
                self._copy_in.wait_event(slot.compute)  # the device raw buffer is free once its last graph ran
            with torch.cuda.stream(self._copy_in):
                slot.dev_raw.copy_(slot.host_raw, non_blocking=True)
                slot.dev_gain.copy_(slot.host_gain[0], non_blocking=True)
                slot.h2d.record(self._copy_in)
            self._compute.wait_event(slot.h2d)
            if slot.used:
                self._compute.wait_event(slot.d2h)  # the device outputs are free once their last D2H completed
            with torch.cuda.stream(self._compute):
                if slot.graph is not None:
                    slot.graph.replay()
                else:
                    for k, v in self._program(slot.dev_raw, slot.dev_gain).items():
                        slot.dev_out[k].copy_(v)
                slot.compute.record(self._compute)
            self._copy_out.wait_event(slot.compute)
            with torch.cuda.stream(self._copy_out):
                for k, v in slot.dev_out.items():
                    slot.host_out[k].copy_(v, non_blocking=True)
                slot.d2h.record(self._copy_out)
        slot.used = True
        self._in_flight.append(_InFlight(slot, frame, gain, time.perf_counter_ns(),
                                         {"gain": t1 - t0 + self._gain.ahead_ns, "pack": t2 - t1}))

    def collect(self) -> EnhancedFrame | None:
        """Wait for the oldest frame in flight and return it (None when nothing is in flight)."""
        self._check_open()
        if not self._in_flight:
            return None
        job = self._in_flight.popleft()
        job.slot.d2h.synchronize()
        t1 = time.perf_counter_ns()
        rgb = job.slot.host_out["rgb"].numpy().copy()  # owned by the returned frame (it crosses threads)
        if self.out_dtype == np.uint16:
            rgb = rgb.view(np.uint16)
        frame = job.frame
        out = EnhancedFrame(rgb=rgb, index=frame.index, t_ns=frame.t_ns, name=frame.name, gain=job.gain,
                            timings_ns={**job.timings_ns, "infer": t1 - job.t_submit_ns, "isp": 0})
        if "y" in job.slot.host_out:
            planes = tuple(job.slot.host_out[k].numpy().copy() for k in ("y", "u", "v"))
            out.yuv420p = planes
        out.timings_ns["isp"] = time.perf_counter_ns() - t1  # host copy-out (the ISP itself ran on the device)
        return out

    def process(self, frame: RawFrame) -> EnhancedFrame:
        """Enhance one frame synchronously (``submit`` + ``collect``); the protocol the pipeline calls."""
        if self._in_flight:
            raise RuntimeError("process() called with frames in flight; collect() them first")
        self.submit(frame)
        return self.collect()  # type: ignore[return-value]

    # -- teardown ------------------------------------------------------------------------------------------------
    def _release_slots(self) -> None:
        for slot in self._slots:
            if slot.graph is not None:
                slot.graph.reset()
        self._slots, self._program, self._key, self._pool = [], None, None, None

    def _check_open(self) -> None:
        if self._closed:
            raise EnhancerClosedError("CudaRediEnhancer is closed")

    def close(self) -> None:
        """Wait for the device, free graphs, slots and the network. Idempotent; frames in flight are dropped."""
        if self._closed:
            return
        self._closed = True
        try:
            torch.cuda.synchronize(self.device)
        finally:
            self._in_flight.clear()
            self._release_slots()
            self.runner.close()

    def __enter__(self) -> "CudaRediEnhancer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def cpu_reference_program(model: RediNet, shape: tuple[int, int], meta: RawMeta, **kwargs) -> DeviceProgram:
    """:class:`DeviceProgram` on the CPU with the spec forward in float32 (for tests and for checking a GPU run)."""
    net = model.folded_copy().eval()
    return DeviceProgram(net, torch.float32, shape, meta, torch.device("cpu"), **kwargs)


__all__ = ["CudaRediEnhancer", "DeviceProgram", "EnhancerClosedError", "cpu_reference_program"]

