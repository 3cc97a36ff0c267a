"""Enhancers: what the ``redi-infer`` thread calls on every frame.

Protocol (all three methods are called from the ``redi-infer`` thread only; construction may happen anywhere)::

    warm_up(shape: (H, W), meta: RawMeta) -> None   # compile kernels, build runner buffers/graphs, before frame 0
    process(frame: RawFrame) -> EnhancedFrame       # rgb (H, W, 3) uint8|uint16 sRGB, gain, timings_ns
    close() -> None                                 # idempotent; ``with`` form

``process`` returns a freshly allocated ``rgb`` owned by the returned frame (it crosses to the encode thread);
scratch buffers (the packed network input, the demosaic buffers) are owned by the enhancer and reused per shape.
``timings_ns`` holds ``gain``, ``pack``, ``infer`` (network or demosaic), ``isp`` (and ``denoise``).

Gain (SPEC §3): a fixed ``gain`` (the CLI's ``--gain``) is used as is, times ``gain_multiplier`` if one is given
(the weights' default multiplier does not apply to it: ``--gain`` is the whole amplification). Otherwise each
frame's Eq. 5 estimate (``kernels.estimate_gain``) is smoothed by ``kernels.GainSmoother`` (EMA in log space,
``smoothing_frames`` time constant, scene-cut aware; 0 = no smoothing) and multiplied by ``gain_multiplier``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from .. import kernels
from ..errors import ConfigError
from ..frames import CFA, EnhancedFrame, RawFrame, RawMeta

log = logging.getLogger(__name__)

CLASSIC_GAIN_TARGET = 0.09
"""Eq. 5 target of :class:`ClassicEnhancer`. SPEC §3 measured that the paper's 0.01 yields 0.08-0.14x the true
exposure ratio on SID-like frames; 0.09 (= 0.01 / 0.11) brings the classic pipeline's exposure to about the true
ratio, i.e. the scene's normal brightness, since no network brightens it afterwards."""


def _check_out_dtype(out_dtype) -> np.dtype:
    dt = np.dtype(out_dtype)
    if dt not in (np.uint8, np.uint16):
        raise ConfigError(f"out_dtype must be uint8 or uint16, got {dt}")
    return dt


def default_multiplier(gain: float | None, multiplier: float | None, weights_meta) -> float:
    """The multiplier ``m`` when the caller gave none: the weights' own default for the automatic gain (5 for the
    official weights, trained on 5 x Eq. 5), 1 for a fixed ``gain``, which is the whole amplification asked for."""
    if multiplier is not None:
        return float(multiplier)
    return 1.0 if gain is not None else float(getattr(weights_meta, "gain_multiplier_default", 1.0))


class _GainControl:
    """Fixed gain, or per-frame Eq. 5 estimate -> smoother; both times the user multiplier. One thread."""

    def __init__(self, *, gain: float | None, multiplier: float, smoothing_frames: float, target: float) -> None:
        if gain is not None and not (np.isfinite(gain) and gain > 0):
            raise ConfigError(f"gain must be a positive number, got {gain}")
        if not (np.isfinite(multiplier) and multiplier > 0):
            raise ConfigError(f"gain_multiplier must be > 0, got {multiplier}")
        if not (np.isfinite(smoothing_frames) and smoothing_frames >= 0):
            raise ConfigError(f"smoothing_frames must be >= 0, got {smoothing_frames}")
        self.fixed = None if gain is None else float(gain)
        self.multiplier = float(multiplier)
        self.target = float(target)
        self.smoother = kernels.GainSmoother(time_constant_frames=float(smoothing_frames))
        # Estimates made ahead by look_ahead: ((index, t_ns), estimate, ns it took) of the frame processed next
        # (_current) and of the one after it (_next, told just before the frame before it is processed).
        self._current: tuple[tuple[int, int], float, int] | None = None
        self._next: tuple[tuple[int, int], float, int] | None = None
        #: ns the last frame's estimate took when it was made ahead (add it to the frame's "gain" time), else 0.
        self.ahead_ns = 0

    def _estimate(self, frame: RawFrame) -> float:
        meta = frame.meta
        return kernels.estimate_gain(frame.data, meta.black_level_array, meta.white_level, target=self.target)

    def look_ahead(self, frame: RawFrame) -> None:
        """``frame`` comes right after the next one processed: estimate it now (the estimate is reused when it is
        processed) so the smoother can see a cut coming. A frame that cannot be estimated is left for its own
        processing to report."""
        if self.fixed is not None:
            return
        t0 = time.perf_counter_ns()
        try:
            estimate = self._estimate(frame)
        except (ValueError, TypeError):
            return
        self._next = ((frame.index, frame.t_ns), estimate, time.perf_counter_ns() - t0)

    def __call__(self, frame: RawFrame) -> float:
        if self.fixed is not None:
            return self.fixed * self.multiplier
        key = (frame.index, frame.t_ns)
        current, upcoming = self._current, self._next
        self._current, self._next = upcoming, None
        if current is not None and current[0] == key:
            a, self.ahead_ns = current[1], current[2]
        else:
            a, self.ahead_ns = self._estimate(frame), 0
        after = upcoming[1] if upcoming is not None and upcoming[0] != key else None
        return self.smoother.update(a, after) * self.multiplier


class _LiveGain:
    """``gain_multiplier`` as a property: the preview's +/- keys change it while the pipeline runs; and the gain's
    one-frame look-ahead for file sources (:meth:`look_ahead`)."""

    _gain: _GainControl

    def look_ahead(self, frame: RawFrame) -> None:
        """Tell the enhancer the frame after the one it processes next (the pipeline does, for file sources): a
        scene cut's new gain then applies from the cut's first frame. Infer thread only."""
        self._gain.look_ahead(frame)

    @property
    def gain_multiplier(self) -> float:
        """The user multiplier ``m``. Any thread may set it (one float store); the infer thread uses the new value
        from its next frame."""
        return self._gain.multiplier

    @gain_multiplier.setter
    def gain_multiplier(self, value: float) -> None:
        value = float(value)
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(f"gain_multiplier must be > 0, got {value}")
        self._gain.multiplier = value


class RediEnhancer(_LiveGain):
    """The REDI network between the kernels: gain -> pack -> runner -> crop -> ISP.

    Args:
        runner: ``run(x: f32[N, 1, Hp, Wp]) -> f32[N, Hp, Wp, 3]`` (``model.TorchRunner``); owned by the caller.
            If it has ``warm_up(shape)`` that is called in :meth:`warm_up`, else one ``run`` on zeros.
        weights_meta: ``model.WeightsMeta``: ``output`` (``"linear_camera_rgb"`` -> ISP with the frame's WB and
            colour matrix; ``"srgb"`` -> quantise only), ``gain_target`` (Eq. 5 constant the weights were trained
            with), ``gain_multiplier_default``.
        gain: fixed amplification (``--gain``), or None for the smoothed per-frame estimate.
        gain_multiplier: user multiplier ``m``; None = ``weights_meta.gain_multiplier_default`` (1.0 if absent)
            for the automatic gain, 1.0 with a fixed ``gain`` (:func:`default_multiplier`).
        smoothing_frames: GainSmoother time constant in frames (0 = none).
        out_dtype: ``np.uint8`` (video) or ``np.uint16`` (16-bit image sequences).
        isp: False skips WB/matrix for linear models (quantise the camera RGB as is; for debugging).
        tile: run the network on overlapping (th, tw) tiles of every frame (``--tile``; multiples of 32, each
            > 2 * ``tile_overlap``); None runs whole frames.
        tile_overlap: tile margin (``model.tiling.DEFAULT_OVERLAP`` = 384 px: tiled equals untiled to ~1e-5).
        auto_tile: when the device runs out of memory on a frame, retry it (and later frames of that size) in
            smaller tiles (``model.TiledRunner``); the gain is still estimated on the whole frame. False re-raises.
        yuv420p: also make the frame's BT.709 yuv420p planes (``EnhancedFrame.yuv420p``) in the same pass as the
            ISP (``kernels.apply_isp_yuv420p``), for a yuv420p video sink; only when the output is uint8, H and W
            are even and the ISP runs (else the planes are None and the sink converts ``rgb`` itself). Saves the
            sink's separate RGB -> YUV pass: ~5 ms of CPU per 1080p frame.
        rgb: False (with ``yuv420p``, for consumers that encode only the planes, e.g. a video sink with no
            preview): when the planes are made, the ISP skips the interleaved RGB image (~1.9 ms less per 1080p
            frame) and the frame's ``rgb`` is a read-only all-zero view of the right shape and dtype that holds no
            memory (:func:`rgb_placeholder`). Frames without planes still get their RGB.
        temporal_frames: motion-adaptive temporal denoising of the network's output (``kernels.TemporalDenoiser``,
            ``--temporal-denoise``): where a pixel's change looks like noise it is averaged over about this many
            frames, where it looks like motion the new frame is taken. 0 (default) = off; else >= 1. For still
            cameras: REDI's residual noise differs in every frame. 15.7 ms of CPU per 1080p frame
            (``python -m redi_stream.kernels.bench``).
    """

    def __init__(
        self,
        runner,
        weights_meta,
        *,
        gain: float | None = None,
        gain_multiplier: float | None = None,
        smoothing_frames: float = 8.0,
        out_dtype=np.uint8,
        isp: bool = True,
        tile: tuple[int, int] | None = None,
        tile_overlap: int | None = None,
        auto_tile: bool = True,
        yuv420p: bool = False,
        rgb: bool = True,
        temporal_frames: float = 0.0,
    ) -> None:
        from ..model.tiling import DEFAULT_OVERLAP, TiledRunner  # torch: imported where a network is used

        self.runner = runner
        self._net = TiledRunner(runner, tile=tile, overlap=DEFAULT_OVERLAP if tile_overlap is None else tile_overlap,
                                auto=auto_tile)
        self.meta = weights_meta
        output = str(getattr(weights_meta, "output", "linear_camera_rgb"))
        if output not in ("linear_camera_rgb", "srgb"):
            raise ConfigError(f"unknown model output {output!r}; valid: linear_camera_rgb, srgb")
        self.output = output
        self._gain = _GainControl(gain=gain, multiplier=default_multiplier(gain, gain_multiplier, weights_meta),
                                  smoothing_frames=smoothing_frames,
                                  target=float(getattr(weights_meta, "gain_target", 0.01)))
        self.out_dtype = _check_out_dtype(out_dtype)
        self.isp = isp
        self.yuv420p = bool(yuv420p)
        self.rgb = bool(rgb)
        try:
            self._temporal = kernels.TemporalDenoiser(temporal_frames) if temporal_frames else None
        except ValueError as exc:
            raise ConfigError(f"temporal_frames must be 0 (off) or >= 1: {exc}") from exc
        self._inputs: dict[tuple[int, int], np.ndarray] = {}  # packed network input per padded shape, reused
        self._closed = False

    @property
    def cpu_gate(self):
        """The pipeline's :class:`~.cpugate.CpuGate`, handed to the runner (``TorchRunner.cpu_gate``), which takes
        it around all-core CPU forwards. None (default): no gate. Set before the run starts."""
        return getattr(self.runner, "cpu_gate", None)

    @cpu_gate.setter
    def cpu_gate(self, gate) -> None:
        if hasattr(self.runner, "cpu_gate"):
            self.runner.cpu_gate = gate

    def _input_for(self, h: int, w: int, cfa: CFA) -> np.ndarray:
        hp, wp = kernels.padded_shape(h, w, cfa)
        buf = self._inputs.get((hp, wp))
        if buf is None:
            self._inputs.clear()  # one shape kept, as the runner keeps one output: frames of many sizes (stills
            # through redi_stream.Enhancer) must not pile up buffers
            get = getattr(self.runner, "input_buffer", None)  # e.g. a pinned host slot owned by the runner
            buf = get((hp, wp)) if get is not None else np.zeros((hp, wp), dtype=np.float32)
            self._inputs[(hp, wp)] = buf
        return buf

    def warm_up(self, shape: tuple[int, int], meta: RawMeta) -> None:
        """Compile the kernels and prepare the runner for frames of ``shape`` (H, W) with ``meta``. Infer thread."""
        kernels.warm_up()
        h, w = shape
        buf = self._input_for(h, w, meta.cfa)
        # runner.warm_up(window) if it has one, else a run on zeros; an out-of-memory here already switches to tiles.
        self._net.warm_up(buf.shape)

    def process(self, frame: RawFrame) -> EnhancedFrame:
        """Enhance one frame. Infer thread only."""
        meta = frame.meta
        h, w = frame.shape
        t0 = time.perf_counter_ns()
        gain = self._gain(frame)
        t1 = time.perf_counter_ns()
        x = self._input_for(h, w, meta.cfa)
        kernels.pack_raw(frame.data, meta.black_level_array, meta.white_level, meta.cfa, gain, x)
        t2 = time.perf_counter_ns()
        y = self._net.run(x[None, None])
        t3 = time.perf_counter_ns()
        lin = kernels.unpack_crop(y[0], meta.cfa, h, w)
        timings = {"gain": t1 - t0 + self._gain.ahead_ns, "pack": t2 - t1, "infer": t3 - t2}
        if self._temporal is not None:
            lin = self._temporal(lin)
            t_denoised = time.perf_counter_ns()
            timings["denoise"] = t_denoised - t3
            t3 = t_denoised  # the ISP's time starts here
        planes = None
        isp = self.output == "linear_camera_rgb" and self.isp
        wb = np.asarray(meta.wb_gains, dtype=np.float32)
        if isp and self.yuv420p and self.out_dtype == np.uint8 and h % 2 == 0 and w % 2 == 0:
            planes = _yuv_planes(h, w)  # owned by the returned frame, like rgb
            rgb = np.empty((h, w, 3), dtype=np.uint8) if self.rgb else None
            kernels.apply_isp_yuv420p(lin, wb, meta.cam_to_srgb, rgb, *planes)
            if rgb is None:
                rgb = rgb_placeholder(h, w)
        else:
            rgb = np.empty((h, w, 3), dtype=self.out_dtype)  # owned by the returned frame
            if isp:
                kernels.apply_isp(lin, wb, meta.cam_to_srgb, rgb)
            else:
                kernels.float_to_uint(lin, rgb)
        t4 = time.perf_counter_ns()
        return EnhancedFrame(
            rgb=rgb, index=frame.index, t_ns=frame.t_ns, name=frame.name, gain=gain,
            timings_ns={**timings, "isp": t4 - t3}, yuv420p=planes,
        )

    def close(self) -> None:
        """Drop the scratch buffers. The runner belongs to the caller. Idempotent."""
        self._closed = True
        self._inputs.clear()
        self._net.close()

    def __enter__(self) -> "RediEnhancer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_ZERO_PIXEL = np.zeros((1, 1, 3), np.uint8)


def rgb_placeholder(h: int, w: int) -> np.ndarray:
    """A read-only all-zero (h, w, 3) uint8 view holding no memory: ``EnhancedFrame.rgb`` when only the planes were
    made (``RediEnhancer(rgb=False)``)."""
    return np.broadcast_to(_ZERO_PIXEL, (h, w, 3))


def _yuv_planes(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New (Y, U, V) uint8 planes for an even (h, w) frame."""
    return (np.empty((h, w), np.uint8), np.empty((h // 2, w // 2), np.uint8), np.empty((h // 2, w // 2), np.uint8))


def opencv_bayer_code(cfa: CFA) -> int:
    """OpenCV demosaic code producing **RGB** output for a mosaic stored with pattern ``cfa``.

    OpenCV names a pattern by the second row's 2nd/3rd pixels, so our RGGB is its ``BayerBG``; and its
    ``Bayer*2RGB`` codes do give R, G, B channel order (checked on a synthetic mosaic by
    ``tests/stream/test_enhance.py``). The edge-aware (``_EA``) variant costs the same as bilinear here.
    """
    import cv2

    name = {CFA.RGGB: "BG", CFA.BGGR: "RG", CFA.GRBG: "GB", CFA.GBRG: "GR"}[CFA(cfa)]
    return getattr(cv2, f"COLOR_Bayer{name}2RGB_EA")


class ClassicEnhancer(_LiveGain):
    """No-network baseline: gain -> amplify + clip -> OpenCV demosaic -> (denoise) -> ISP.

    Args:
        denoise: False (default; real-time), True or ``"bilateral"`` (``cv2.bilateralFilter`` d=5 on the output
            image, about 15 ms per 720p uint8 frame here), or ``"nlm"`` (``cv2.fastNlMeansDenoisingColored`` on
            8-bit sRGB; ~1.4 s per 720p frame: offline use only).
        gain, gain_multiplier, smoothing_frames: as for :class:`RediEnhancer`.
        gain_target: Eq. 5 constant, :data:`CLASSIC_GAIN_TARGET` by default (about the true exposure ratio).
        out_dtype: ``np.uint8`` or ``np.uint16``.

    The frame is packed with ``kernels.pack_raw`` (black level, white level, CFA unification to RGGB by a
    reflected row/column, gain, no padding beyond that), clipped to [0, 1] and quantised to uint16 for OpenCV's
    demosaic, cropped back, then rendered with ``kernels.apply_isp`` (white balance, camera -> sRGB matrix, sRGB
    curve). About 25 ms per 720p frame on this 2-core CPU without denoise.
    """

    def __init__(
        self,
        *,
        denoise: bool | str = False,
        gain: float | None = None,
        gain_multiplier: float = 1.0,
        smoothing_frames: float = 8.0,
        gain_target: float = CLASSIC_GAIN_TARGET,
        out_dtype=np.uint8,
    ) -> None:
        if denoise is True:
            denoise = "bilateral"
        if denoise not in (False, None, "bilateral", "nlm"):
            raise ConfigError(f"invalid denoise {denoise!r}; valid: False, True/'bilateral', 'nlm'")
        self.denoise = denoise or None
        self._gain = _GainControl(gain=gain, multiplier=gain_multiplier, smoothing_frames=smoothing_frames,
                                  target=gain_target)
        self.out_dtype = _check_out_dtype(out_dtype)
        self._bufs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._closed = False

    def _buffers(self, h: int, w: int, cfa: CFA) -> tuple[np.ndarray, np.ndarray]:
        dy, dx = CFA(cfa).offset
        hp, wp = h + dy, w + dx
        hp += hp % 2  # OpenCV's demosaic wants whole 2x2 cells
        wp += wp % 2
        bufs = self._bufs.get((hp, wp))
        if bufs is None:
            self._bufs.clear()  # the last shape's only (see RediEnhancer._input_for)
            bufs = (np.empty((hp, wp), np.float32), np.empty((hp, wp), np.uint16))
            self._bufs[(hp, wp)] = bufs
        return bufs

    def warm_up(self, shape: tuple[int, int], meta: RawMeta) -> None:
        """Compile the kernels and run one dummy frame of ``shape``. Infer thread."""
        kernels.warm_up()
        h, w = shape
        dummy = RawFrame(data=np.full((h, w), int(max(meta.black_level)), np.uint16), meta=meta, index=-1, t_ns=0)
        fixed, self._gain.fixed = self._gain.fixed, 1.0  # keep the smoother's history clean
        try:
            self.process(dummy)
        finally:
            self._gain.fixed = fixed

    def process(self, frame: RawFrame) -> EnhancedFrame:
        """Enhance one frame. Infer thread only."""
        import cv2

        meta = frame.meta
        h, w = frame.shape
        dy, dx = meta.cfa.offset
        t0 = time.perf_counter_ns()
        gain = self._gain(frame)
        t1 = time.perf_counter_ns()
        packed, mosaic = self._buffers(h, w, meta.cfa)
        kernels.pack_raw(frame.data, meta.black_level_array, meta.white_level, meta.cfa, gain, packed)
        # [0, gain] -> clip to [0, 1] -> uint16 with rounding (OpenCV demosaics 8/16-bit only).
        np.multiply(packed, 65535.0, out=packed)
        np.minimum(packed, 65535.0, out=packed)
        packed += 0.5
        np.copyto(mosaic, packed, casting="unsafe")
        t2 = time.perf_counter_ns()
        rgb16 = cv2.cvtColor(mosaic, opencv_bayer_code(CFA.RGGB))  # packed is RGGB whatever the sensor's CFA
        lin = rgb16[dy:dy + h, dx:dx + w].astype(np.float32)
        lin *= np.float32(1.0 / 65535.0)
        t3 = time.perf_counter_ns()
        rgb = np.empty((h, w, 3), dtype=self.out_dtype)  # owned by the returned frame
        kernels.apply_isp(lin, np.asarray(meta.wb_gains, dtype=np.float32), meta.cam_to_srgb, rgb)
        t4 = time.perf_counter_ns()
        timings = {"gain": t1 - t0 + self._gain.ahead_ns, "pack": t2 - t1, "infer": t3 - t2, "isp": t4 - t3}
        if self.denoise is not None:
            rgb = self._denoise(rgb)
            timings["denoise"] = time.perf_counter_ns() - t4
        return EnhancedFrame(rgb=rgb, index=frame.index, t_ns=frame.t_ns, name=frame.name, gain=gain,
                             timings_ns=timings)

    def _denoise(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        if self.denoise == "nlm":
            if rgb.dtype == np.uint16:
                u8 = ((rgb.astype(np.uint32) + 128) // 257).astype(np.uint8)
                return cv2.fastNlMeansDenoisingColored(u8, None, 7, 7, 7, 21).astype(np.uint16) * np.uint16(257)
            return cv2.fastNlMeansDenoisingColored(rgb, None, 7, 7, 7, 21)
        if rgb.dtype == np.uint8:
            return cv2.bilateralFilter(rgb, 5, 25.0, 2.0)
        f = rgb.astype(np.float32) * np.float32(1 / 65535)
        f = cv2.bilateralFilter(f, 5, 25.0 / 255.0, 2.0)
        return (np.clip(f, 0, 1) * 65535 + 0.5).astype(np.uint16)

    def close(self) -> None:
        """Drop the scratch buffers. Idempotent."""
        self._closed = True
        self._bufs.clear()

    def __enter__(self) -> "ClassicEnhancer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
