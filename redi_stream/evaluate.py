"""``redi-stream eval``: quality of the shipped pipeline on held-out synthetic dark raw, stills and a static clip.

What is measured is what users get: each synthetic dark frame becomes a real ``RawFrame`` (uint16 mosaic, 14-bit
levels, white balance and colour matrix in its ``RawMeta``) and goes through the production pieces:
``stream.RediEnhancer`` (``kernels.estimate_gain`` / ``GainSmoother`` -> ``kernels.pack_raw`` ->
``model.TorchRunner`` -> ``kernels.apply_isp``) and ``stream.ClassicEnhancer`` (no network), 8-bit sRGB out.

Data: the first ``count`` photos of a held-out folder (BSDS500 ``test``), each cropped to multiples of 32
(320x480), unprocessed and darkened by :mod:`redi_stream.model.synth` at ratios x100, x250, x300. Every photo keeps
one camera / WB / colour matrix / noise level across the ratios (drawn from ``(seed, photo)``), and the noise is
drawn from ``(seed, photo, ratio)``, so the numbers are reproducible and the ratios comparable.

Reference: ``kernels.apply_isp`` applied to the clean target with the same WB and colour matrix, i.e. what a perfect
network would show the user. It equals the clean photo except for the smoothstep tone curve the unprocessing
removed (our ISP applies none) and out-of-gamut clipping; their difference is reported as
``reference_vs_photo_psnr`` so that the "photo" view can be recovered.

Methods: ``redi_true_ratio`` (the network amplified by the true exposure ratio), ``redi_auto_gain`` (Eq. 5 with the
weights' ``gain_target``, per frame), ``classic`` (demosaic at the true ratio, no denoise), and ``official`` (an
official checkpoint, if given; it outputs sRGB rendered like SID, so its colours are not expected to match our
reference). Metrics: PSNR and SSIM (``skimage.metrics``, 8-bit, SSIM over colour channels).

Temporal stability: one photo as a static 60-frame clip (same camera / ratio, fresh noise per frame) -> mean over
pixels of the per-pixel temporal standard deviation of the 8-bit output (lower is steadier) and mean PSNR, for the
true ratio, per-frame automatic gain, smoothed automatic gain (``GainSmoother``), smoothed gain with
``--temporal-denoise`` (``kernels.TemporalDenoiser``) and classic.

Demo clip: frames of the embedded demo clip (``SyntheticSource.demo()``: a photo with large dark, saturated areas,
its own mild sensor noise, identity colour matrix) -> PSNR / SSIM against ``apply_isp`` of its clean frames, and the
mean signed error per channel over the pixels that are dark in the reference (mean below 64 of 255). A network that
lifts dark surroundings or lays a colour veil over them shows it there as large positive offsets, which the
BSDS500 stills (mostly mid-tones) barely register.

Also checked: the torch twin of Eq. 5 used for calibration in training (``model.synth.estimate_gain_torch``) agrees
with the production kernel (``kernels.estimate_gain``) on every evaluated frame.

``--real-data FILES`` adds (or, without ``--test-data``, runs alone) the real-data sanity check of
:mod:`redi_stream.evaluate_real`: real raw frames darkened in the raw domain with ELD noise, before/after figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from redi_stream import kernels
from redi_stream.argparser import ArgumentParser
from redi_stream.errors import CaptureError, ConfigError, SinkError, WeightsError
from redi_stream.frames import CFA, RawFrame, RawMeta
from redi_stream.model.data import CleanImageDataset
from redi_stream.model.net import RediNet
from redi_stream.model.runner import TorchRunner
from redi_stream.model.synth import (
    DAYLIGHT_BLUE_GAINS,
    DAYLIGHT_RED_GAINS,
    PairSynthesizer,
    SynthBatch,
    SynthConfig,
    check_range,
    estimate_gain_torch,
    synth_video_frames,
)
from redi_stream.model.weights import WeightsMeta, load_weights
from redi_stream.stream.enhance import ClassicEnhancer, RediEnhancer
from redi_stream.stream.sinks import check_writable_file

DEFAULT_RATIOS = (100.0, 250.0, 300.0)


@dataclass(frozen=True)
class EvalConfig:
    """Settings of one evaluation.

    Attributes:
        test_dirs: held-out clean photos (BSDS500 ``test``).
        noise_params: ELD parameters JSON; cameras: noise profiles (default the SID camera, Sony a7S II).
        red_gain_range, blue_gain_range: white balance of the synthetic raw (default Brooks et al.'s daylight;
            e.g. (1, 1.3) red, (2.4, 3) blue for tungsten-lit scenes).
        weights: our weights (exported ``.pt``) or a training checkpoint; None = pass ``model`` to :func:`evaluate`.
        official: an official REDI checkpoint to compare against (optional).
        ratios: exposure ratios of the still-image test.
        count: number of photos (the first ``count`` in sorted order).
        video_frames: length of the static clip (0 skips the temporal test); video_ratio: its exposure ratio.
        seed: all synthetic data derive from it.
        device: network device (``cpu``, ``cuda``); the synthetic data are always made on the CPU so that every
            device sees identical inputs.
        smoothing_frames: ``GainSmoother`` time constant for the smoothed-gain clip.
        temporal_frames: ``--temporal-denoise`` length for the clip's smoothed gain + temporal denoise row (0 skips
            that row).
        classic: include the no-network baseline.
        demo_frames: frames of the embedded demo clip to score, evenly spaced (0 skips the demo check).
    """

    test_dirs: tuple[Path, ...]
    noise_params: Path
    cameras: tuple[str, ...] = ("SonyA7S2",)
    red_gain_range: tuple[float, float] = DAYLIGHT_RED_GAINS
    blue_gain_range: tuple[float, float] = DAYLIGHT_BLUE_GAINS
    weights: Path | None = None
    official: Path | None = None
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    count: int = 50
    video_frames: int = 60
    video_ratio: float = 250.0
    seed: int = 0
    device: str = "cpu"
    smoothing_frames: float = 8.0
    temporal_frames: float = 4.0
    classic: bool = True
    demo_frames: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "test_dirs", tuple(Path(p) for p in self.test_dirs))
        object.__setattr__(self, "noise_params", Path(self.noise_params))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        for name in ("weights", "official"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None else Path(v))
        if not self.test_dirs:
            raise ConfigError("evaluation needs test_dirs (held-out clean photos, e.g. BSDS500/test)")
        if not self.ratios or any(not 1 <= r <= 300 for r in self.ratios):
            raise ConfigError(f"ratios must be in [1, 300], got {self.ratios}")
        if self.count < 1:
            raise ConfigError(f"count must be >= 1, got {self.count}")
        if self.video_frames < 0 or (self.video_frames and self.video_frames < 2):
            raise ConfigError(f"video_frames must be 0 (skip) or >= 2, got {self.video_frames}")
        for name in ("red_gain_range", "blue_gain_range"):
            object.__setattr__(self, name, check_range(name, getattr(self, name)))
        if not 1 <= self.video_ratio <= 300:
            raise ConfigError(f"video_ratio must be in [1, 300], got {self.video_ratio}")
        if self.smoothing_frames < 0:
            raise ConfigError(f"smoothing_frames must be >= 0, got {self.smoothing_frames}")
        if self.demo_frames < 0:
            raise ConfigError(f"demo_frames must be >= 0 (0 skips the demo check), got {self.demo_frames}")
        if not (self.temporal_frames == 0 or self.temporal_frames >= 1):
            raise ConfigError(f"temporal_frames must be 0 (skip) or >= 1, got {self.temporal_frames}")


def load_model_for_eval(path: str | Path) -> RediNet:
    """Exported weights (``load_weights``) or a training checkpoint (folded, ``meta`` from its calibration).

    Raises:
        WeightsError: neither format.
    """
    try:
        return load_weights(path)
    except WeightsError as first:
        from redi_stream.model.train import load_checkpoint

        try:
            ckpt = load_checkpoint(path)
        except WeightsError:
            raise first from None
        model = RediNet(weight_norm=True)
        model.load_state_dict(ckpt["model"])
        model.fold().eval()
        model.meta = WeightsMeta(
            output="linear_camera_rgb",
            gain_target=float(ckpt["gain_calibration"]["target"]),
            provenance={"checkpoint": str(path), "iterations": int(ckpt["iteration"])},
            version=f"checkpoint-{ckpt['iteration']}",
        )
        return model


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint32)[0])


def _raw_frame(batch: SynthBatch, i: int, index: int = 0) -> RawFrame:
    """Sample ``i`` of a synthetic batch as a real uint16 RawFrame with its colour metadata."""
    data = np.ascontiguousarray(np.rint(batch.raw_dn[i, 0].cpu().numpy()).astype(np.uint16))
    meta = RawMeta(
        cfa=CFA.RGGB,
        black_level=(batch.black_level,) * 4,
        white_level=batch.white_level,
        wb_gains=tuple(float(v) for v in batch.wb[i].cpu()),
        cam_to_srgb=batch.cam_to_srgb[i].cpu().numpy().astype(np.float32),
        camera="synthetic",
    )
    return RawFrame(data=data, meta=meta, index=index, t_ns=int(index * 1e9 / 24), name=f"synthetic-{index}")


def _reference(batch: SynthBatch, i: int) -> np.ndarray:
    """ISP of the clean target with the frame's own WB and matrix -> (H, W, 3) uint8."""
    lin = np.ascontiguousarray(batch.target[i].permute(1, 2, 0).cpu().numpy().astype(np.float32))
    out = np.empty(lin.shape, np.uint8)
    kernels.apply_isp(lin, batch.wb[i].cpu().numpy().astype(np.float32),
                      batch.cam_to_srgb[i].cpu().numpy().astype(np.float32), out)
    return out


def psnr_ssim(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = float(peak_signal_noise_ratio(ref, out, data_range=255))
    ssim = float(structural_similarity(ref, out, data_range=255, channel_axis=2))
    return psnr, ssim


def _gain_twin(frame: RawFrame, target: float) -> tuple[float, float]:
    """(kernels.estimate_gain, synth.estimate_gain_torch) on the same uint16 frame."""
    meta = frame.meta
    a = kernels.estimate_gain(frame.data, meta.black_level_array, meta.white_level, target=target)
    black = float(meta.black_level[0])
    r = (torch.from_numpy(frame.data.astype(np.float64)) - black) / (meta.white_level - black)
    b = float(estimate_gain_torch(r[None], target=target)[0])
    return a, b


def _synthesizer(config: EvalConfig, ratio: float) -> PairSynthesizer:
    """Pairs at exactly ``ratio`` with the evaluation's cameras and white balance, made on the CPU."""
    return PairSynthesizer(
        SynthConfig(config.noise_params, cameras=config.cameras, ratio_range=(ratio, ratio),
                    red_gain_range=config.red_gain_range, blue_gain_range=config.blue_gain_range),
        "cpu",
    )


def held_out_stills(config: EvalConfig, photos: CleanImageDataset | None = None):
    """The still-image test's synthetic frames, in order: yields ``(photo index, ratio index, ratio, clean, batch)``.

    ``clean`` is the (1, 3, H, W) photo and ``batch`` its :class:`SynthBatch` at that ratio; photo ``i`` keeps one
    camera / WB / colour matrix / noise level across the ratios (drawn from ``(seed, i)``), and the noise comes
    from ``(seed, i, ratio index)``. :func:`evaluate` scores exactly these frames.
    """
    if photos is None:
        photos = CleanImageDataset(config.test_dirs, max_images=config.count, augment=False)
    synths = {r: _synthesizer(config, r) for r in config.ratios}
    any_synth = next(iter(synths.values()))
    for i in range(len(photos)):
        clean = photos.full(i)[None]
        params = any_synth.sample_params(1, torch.Generator().manual_seed(_seed(config.seed, i)))
        for k, ratio in enumerate(config.ratios):
            params.ratio = torch.tensor([ratio])
            batch = synths[ratio].synthesize(clean, torch.Generator().manual_seed(_seed(config.seed, i, k)), params)
            yield i, k, ratio, clean, batch


def _summary(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def evaluate(config: EvalConfig, *, model: RediNet | None = None, progress: bool = False) -> dict[str, Any]:
    """Run the evaluation; return the JSON-able result (see :func:`format_table` for the printed form).

    Args:
        model: a RediNet with ``meta`` (e.g. random weights in tests); default: ``config.weights`` is loaded.

    Raises:
        ConfigError: no model, bad data; WeightsError: unreadable weights.
    """
    t_start = time.monotonic()
    if model is None:
        if config.weights is None:
            raise ConfigError("evaluation needs weights (a .pt file) or a model")
        model = load_model_for_eval(config.weights)
    meta = getattr(model, "meta", None) or WeightsMeta()
    if str(meta.output) != "linear_camera_rgb":
        raise ConfigError(f"the evaluated model must output linear camera RGB, got {meta.output!r} (use official=)")
    photos = CleanImageDataset(config.test_dirs, max_images=config.count, augment=False)

    runner = TorchRunner(model, config.device)
    official_model = load_weights(config.official) if config.official is not None else None
    official_runner = TorchRunner(official_model, config.device) if official_model is not None else None
    methods: dict[str, Any] = {
        "redi_true_ratio": lambda ratio: RediEnhancer(runner, meta, gain=ratio, gain_multiplier=1.0),
        "redi_auto_gain": lambda ratio: RediEnhancer(runner, meta, gain=None, gain_multiplier=1.0,
                                                     smoothing_frames=0.0),
    }
    if config.classic:
        methods["classic"] = lambda ratio: ClassicEnhancer(gain=ratio)
    if official_runner is not None:
        methods["official"] = lambda ratio: RediEnhancer(official_runner, official_model.meta, smoothing_frames=0.0)

    scores: dict[str, dict[float, list[tuple[float, float]]]] = {m: {r: [] for r in config.ratios} for m in methods}
    gain_ratios: list[float] = []
    auto_gains: list[float] = []
    twin_diffs: list[float] = []
    ref_vs_photo: list[float] = []
    for i, k, ratio, clean, batch in held_out_stills(config, photos):
        frame = _raw_frame(batch, 0, index=i)
        ref = _reference(batch, 0)
        if k == 0:
            photo8 = np.rint(clean[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            ref_vs_photo.append(psnr_ssim(ref, photo8)[0])
        a_kernel, a_torch = _gain_twin(frame, meta.gain_target)
        twin_diffs.append(abs(a_kernel - a_torch) / a_kernel)
        for name, make in methods.items():
            with make(ratio) as enh:
                out = enh.process(frame)
            scores[name][ratio].append(psnr_ssim(out.rgb, ref))
            if name == "redi_auto_gain":
                gain_ratios.append(out.gain / ratio)
                auto_gains.append(out.gain)
        if progress and k == len(config.ratios) - 1:
            print(f"photo {i + 1}/{len(photos)}", file=sys.stderr, flush=True)

    stills: dict[str, Any] = {}
    for name, per_ratio in scores.items():
        entry: dict[str, Any] = {}
        for r, vals in per_ratio.items():
            entry[f"x{r:g}"] = {"psnr": _summary([v[0] for v in vals]), "ssim": _summary([v[1] for v in vals])}
        all_vals = [v for vals in per_ratio.values() for v in vals]
        entry["mean"] = {"psnr": _summary([v[0] for v in all_vals]), "ssim": _summary([v[1] for v in all_vals])}
        stills[name] = entry

    g = np.asarray(gain_ratios)
    auto = np.asarray(auto_gains)
    result: dict[str, Any] = {
        "config": {
            "test_dirs": [str(p) for p in config.test_dirs], "count": len(photos), "cameras": list(config.cameras),
            "ratios": list(config.ratios), "seed": config.seed, "device": config.device,
            "red_gain_range": list(config.red_gain_range), "blue_gain_range": list(config.blue_gain_range),
            "weights": str(config.weights) if config.weights else None,
            "official": str(config.official) if config.official else None,
            "weights_version": meta.version, "gain_target": meta.gain_target,
        },
        "reference": "apply_isp(clean linear camera RGB) with the frame's WB and colour matrix (uint8)",
        "reference_vs_photo_psnr": _summary(ref_vs_photo),
        "stills": stills,
        "gain": {
            "target": meta.gain_target,
            "auto_over_true_median": float(np.median(g)),
            "auto_over_true_p05": float(np.quantile(g, 0.05)),
            "auto_over_true_p95": float(np.quantile(g, 0.95)),
            "clamped_fraction": float(np.mean((auto <= 1.0) | (auto >= 300.0))),
            "twin_max_rel_diff": float(np.max(twin_diffs)),
            "twin_agree": bool(np.max(twin_diffs) < 1e-3),
        },
    }
    if config.video_frames:
        result["video"] = _evaluate_video(config, photos, runner, meta)
    if config.demo_frames:
        result["demo"] = evaluate_demo_clip(runner, meta, config.demo_frames, classic=config.classic)
    runner.close()
    if official_runner is not None:
        official_runner.close()
    result["elapsed_s"] = time.monotonic() - t_start
    return result


def _evaluate_video(config: EvalConfig, photos: CleanImageDataset, runner: TorchRunner, meta) -> dict[str, Any]:
    """Static clip of photo 0: temporal std and PSNR per method, gain wander for the automatic gains."""
    synth = _synthesizer(config, config.video_ratio)
    clean = photos.full(0)[None].expand(config.video_frames, -1, -1, -1)
    clip = synth_video_frames(clean, seed=_seed(config.seed, 999), synthesizer=synth)
    ref = _reference(clip, 0)
    makers = {
        "redi_true_ratio": lambda: RediEnhancer(runner, meta, gain=config.video_ratio, gain_multiplier=1.0),
        "redi_auto_per_frame": lambda: RediEnhancer(runner, meta, gain_multiplier=1.0, smoothing_frames=0.0),
        "redi_auto_smoothed": lambda: RediEnhancer(runner, meta, gain_multiplier=1.0,
                                                   smoothing_frames=config.smoothing_frames),
    }
    if config.temporal_frames:
        makers["redi_auto_smoothed_tnr"] = lambda: RediEnhancer(
            runner, meta, gain_multiplier=1.0, smoothing_frames=config.smoothing_frames,
            temporal_frames=config.temporal_frames)
    if config.classic:
        makers["classic"] = lambda: ClassicEnhancer(gain=config.video_ratio)
    out: dict[str, Any] = {"frames": config.video_frames, "ratio": config.video_ratio,
                           "smoothing_frames": config.smoothing_frames, "temporal_frames": config.temporal_frames,
                           "methods": {}}
    for name, make in makers.items():
        frames, gains, psnrs = [], [], []
        with make() as enh:
            for t in range(config.video_frames):
                o = enh.process(_raw_frame(clip, t, index=t))
                frames.append(o.rgb.astype(np.float32))
                gains.append(o.gain)
                psnrs.append(psnr_ssim(o.rgb, ref)[0])
        stack = np.stack(frames)
        g = np.asarray(gains)
        out["methods"][name] = {
            "temporal_std": float(stack.std(axis=0).mean()),
            "psnr": _summary(psnrs),
            "gain_mean": float(g.mean()),
            "gain_cv": float(g.std() / g.mean()),
        }
    return out


#: A reference pixel whose channel mean is below this (8-bit) counts as dark in the demo check.
DARK_BELOW = 64


def evaluate_demo_clip(runner: TorchRunner, meta, frames: int, *, classic: bool = True) -> dict[str, Any]:
    """Score ``frames`` evenly spaced frames of the embedded demo clip (see the module docstring).

    Returns ``{"frames", "ratio", "dark_fraction", "methods": {name: {"psnr", "ssim", "dark_offset": [r, g, b]}}}``;
    ``dark_offset`` is the mean of output - reference over the reference's dark pixels, in 8-bit codes.
    """
    from redi_stream.capture import SyntheticSource

    with SyntheticSource.demo() as source:
        step = max(1, len(source) // frames)
        indices = list(range(0, len(source), step))[:frames]
        raw = [source.read(i) for i in indices]
        clean = [source.clean(i) for i in indices]
        ratio = float(source.ratio)
    refs = []
    for frame, lin in zip(raw, clean):
        out = np.empty(lin.shape, np.uint8)
        kernels.apply_isp(np.ascontiguousarray(lin, np.float32), np.asarray(frame.meta.wb_gains, np.float32),
                          np.asarray(frame.meta.cam_to_srgb, np.float32), out)
        refs.append(out)
    dark = [ref.mean(axis=2) < DARK_BELOW for ref in refs]
    makers = {
        "redi_true_ratio": lambda: RediEnhancer(runner, meta, gain=ratio, gain_multiplier=1.0),
        "redi_auto_gain": lambda: RediEnhancer(runner, meta, gain_multiplier=1.0, smoothing_frames=0.0),
    }
    if classic:
        makers["classic"] = lambda: ClassicEnhancer(gain=ratio)
    methods: dict[str, Any] = {}
    for name, make in makers.items():
        scores, offsets = [], []
        for frame, ref, mask in zip(raw, refs, dark):
            with make() as enh:  # a fresh enhancer per frame: the frames are far apart in the clip
                rgb = enh.process(frame).rgb
            scores.append(psnr_ssim(rgb, ref))
            offsets.append(rgb[mask].astype(np.float64).mean(axis=0) - ref[mask].astype(np.float64).mean(axis=0))
        methods[name] = {"psnr": _summary([s[0] for s in scores]), "ssim": _summary([s[1] for s in scores]),
                         "dark_offset": [float(v) for v in np.mean(offsets, axis=0)]}
    return {"frames": len(indices), "ratio": ratio, "dark_below": DARK_BELOW,
            "dark_fraction": float(np.mean([m.mean() for m in dark])), "methods": methods}


def _wb_text(config: dict[str, Any]) -> str:
    """``, white balance red U(lo, hi) blue U(lo, hi)`` (empty for results written before it was recorded)."""
    red, blue = config.get("red_gain_range"), config.get("blue_gain_range")
    if red is None or blue is None:
        return ""
    return f", white balance red U({red[0]:g}, {red[1]:g}) blue U({blue[0]:g}, {blue[1]:g})"


def format_table(result: dict[str, Any]) -> str:
    """The result as a fixed-width text table."""
    stills = result["stills"]
    ratio_keys = [k for k in next(iter(stills.values())) if k != "mean"] + ["mean"]
    lines = [
        f"REDI evaluation: {result['config']['count']} held-out photos, "
        f"cameras {', '.join(result['config']['cameras'])}"
        f"{_wb_text(result['config'])}, reference = ISP(clean target) (vs photo: "
        f"{result['reference_vs_photo_psnr']:.2f} dB)",
        f"{'method':<18}" + "".join(f"{k:>16}" for k in ratio_keys),
    ]
    for name, entry in stills.items():
        cells = "".join(f"{entry[k]['psnr']:>8.2f}/{entry[k]['ssim']:.3f}" for k in ratio_keys)
        lines.append(f"{name:<18}{cells}")
    lines.append("(PSNR dB / SSIM, 8-bit sRGB)")
    g = result["gain"]
    lines.append(
        f"auto gain / true ratio: median {g['auto_over_true_median']:.3f}, 5-95% "
        f"[{g['auto_over_true_p05']:.3f}, {g['auto_over_true_p95']:.3f}] (gain_target {g['target']:.4g}); "
        f"Eq. 5 torch twin vs kernel max rel diff {g['twin_max_rel_diff']:.2e}"
    )
    if "video" in result:
        v = result["video"]
        lines.append(f"static clip: {v['frames']} frames at x{v['ratio']:g}")
        lines.append(f"{'method':<22}{'temporal std':>14}{'PSNR':>8}{'gain cv':>10}")
        for name, m in v["methods"].items():
            lines.append(f"{name:<22}{m['temporal_std']:>14.3f}{m['psnr']:>8.2f}{m['gain_cv']:>10.4f}")
        lines.append("(temporal std in 8-bit code values, mean over pixels; lower is steadier)")
    if "demo" in result:
        d = result["demo"]
        lines.append(f"demo clip: {d['frames']} frames at x{d['ratio']:g}; {d['dark_fraction']:.0%} of the pixels "
                     f"dark (reference mean < {d['dark_below']})")
        lines.append(f"{'method':<22}{'PSNR':>8}{'SSIM':>8}{'dark offset R/G/B':>22}")
        for name, m in d["methods"].items():
            off = "/".join(f"{v:+.1f}" for v in m["dark_offset"])
            lines.append(f"{name:<22}{m['psnr']:>8.2f}{m['ssim']:>8.3f}{off:>22}")
        lines.append("(dark offset: mean output - reference over the dark pixels, 8-bit codes; near 0 is right)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="redi-stream eval", description=__doc__.split("\n\n")[0].replace("``", "'"))
    p.add_argument("weights", help="our weights (.pt) or a training checkpoint")
    p.add_argument("--test-data", nargs="+", help="held-out clean photos (e.g. BSDS500/test)")
    p.add_argument("--noise-params", required=True, help="ELD noise parameters JSON")
    p.add_argument("--cameras", nargs="*", default=["SonyA7S2"])
    for colour, default in (("red", DAYLIGHT_RED_GAINS), ("blue", DAYLIGHT_BLUE_GAINS)):
        p.add_argument(f"--{colour}-gain-range", nargs=2, type=float, default=default, metavar=("LO", "HI"),
                       help=f"{colour} white-balance gain of the synthetic raw, uniform (default %(default)s, "
                       "daylight as Brooks et al.; e.g. red 1 1.3, blue 2.4 3 for tungsten light)")
    p.add_argument("--official", help="official REDI checkpoint to compare (never shipped)")
    p.add_argument("--ratios", nargs="+", type=float, default=list(DEFAULT_RATIOS))
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--video-frames", type=int, default=60)
    p.add_argument("--video-ratio", type=float, default=250.0)
    p.add_argument("--temporal-frames", type=float, default=4.0,
                   help="--temporal-denoise length for the static clip's extra row (0 skips it; default 4)")
    p.add_argument("--demo-frames", type=int, default=8,
                   help="frames of the embedded demo clip to score (dark-area offsets; 0 skips; default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-classic", action="store_true")
    p.add_argument("--json", help="write the result here")
    r = p.add_argument_group("real-data sanity check (redi_stream.evaluate_real; runs alone without --test-data)")
    r.add_argument("--real-data", nargs="+", help="real raw files or folders, darkened with synthetic noise")
    r.add_argument("--raw-params", help="JSON {file name: headerless parameters} for .raw files without a sidecar")
    r.add_argument("--real-ratios", nargs="+", type=float, default=[50.0, 100.0, 200.0])
    r.add_argument("--real-camera", default=None, help="noise profile (default: the first of --cameras)")
    r.add_argument("--real-k", type=float, default=None, help="system gain K (default: middle of the camera's range)")
    r.add_argument("--real-denoise", default="bilateral", choices=["bilateral", "nlm"])
    r.add_argument("--figures-dir", help="write a before/after JPEG per file here")
    r.add_argument("--figure-ratio", type=float, default=100.0, help="the ratio shown in the figures")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m redi_stream.evaluate WEIGHTS --test-data DIR --noise-params JSON [--json out.json]``, and/or
    ``--real-data FILES [--raw-params JSON] [--figures-dir DIR]`` (:mod:`redi_stream.evaluate_real`)."""
    from redi_stream.evaluate_real import RealDataConfig, format_real_table, real_data_check

    args = build_parser().parse_args(argv)
    result: dict[str, Any] = {}
    try:
        if args.json:
            check_writable_file(Path(args.json))  # before the evaluation, not after it
        if not args.test_data and not args.real_data:
            raise ConfigError("give --test-data (held-out photos) and/or --real-data (real raw files)")
        real_config = None
        if args.real_data:
            real_config = RealDataConfig(
                sources=tuple(args.real_data), noise_params=args.noise_params,
                camera=args.real_camera or (args.cameras[0] if args.cameras else "SonyA7S2"), k=args.real_k,
                raw_params=args.raw_params, ratios=tuple(args.real_ratios), figure_ratio=args.figure_ratio,
                figures_dir=args.figures_dir, denoise=args.real_denoise, seed=args.seed, device=args.device,
            )
        if args.test_data:
            config = EvalConfig(
                test_dirs=tuple(args.test_data), noise_params=args.noise_params, cameras=tuple(args.cameras),
                red_gain_range=tuple(args.red_gain_range), blue_gain_range=tuple(args.blue_gain_range),
                weights=args.weights, official=args.official, ratios=tuple(args.ratios), count=args.count,
                video_frames=args.video_frames, video_ratio=args.video_ratio, seed=args.seed, device=args.device,
                temporal_frames=args.temporal_frames, classic=not args.no_classic, demo_frames=args.demo_frames,
            )
            result = evaluate(config, progress=True)
            print(format_table(result))
        if real_config is not None:
            result["real_data"] = real_data_check(real_config, load_model_for_eval(args.weights), progress=True)
            print(format_real_table(result["real_data"]))
    except (ConfigError, WeightsError, CaptureError, SinkError) as exc:
        print(f"redi-stream eval: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
