"""Training REDI: synthetic (or real) pairs, the paper's recipe scaled to a budget, exact resume, export.

Recipe (SPEC §5): Adam, lr 1e-4 then 1e-5 after half the iterations, batch 8, random Bayer-preserving flips, loss
``L1 + 0.2 * (1 - MS-SSIM)``. Choices made here:

* **Loss domain.** Both prediction and target go through the sRGB transfer curve before the loss (errors in the
  dark tones matter as they will be seen). The loss uses the network's *unclamped* output (the forward pieces
  without the final clamp, which would stop all gradient for pixels pushed outside [0, 1]); the curve is extended
  linearly below 0 and its power branch only sees values >= 0.0031308, so gradients stay finite everywhere.
* **MS-SSIM.** Our own implementation of Wang et al. 2003 (Gaussian window 11, sigma 1.5, standard five weights),
  numerically identical to pytorch-msssim's where both are defined, with two changes: the number of scales adapts
  to the crop (as many as keep the coarsest scale >= 11 px: 5 for >= 176 px, 4 for 88-175, 3 for 44-87; the used
  weights are renormalised to sum 1), since pytorch-msssim refuses images <= 160 px, and contrast terms are clamped
  at 1e-4 instead of ReLU'd, since ``relu(cs) ** w`` has an infinite gradient at 0 (NaNs early in training).
* **Batches are a pure function of (seed, iteration)**: image indices, crops and flips come from
  ``numpy.random.default_rng([seed, iteration])`` and the synthesis from a ``torch.Generator`` seeded the same way.
  So the data sampler's state *is* the iteration number, and resuming from a checkpoint reproduces the
  uninterrupted run exactly (tested on the CPU). Global RNG states (torch CPU/CUDA, NumPy, Python) are saved too.
* **Validation** PSNR is measured on a fixed held-out set (the first ``val_count`` photos of ``val_dirs``,
  centre-cropped, synthesised once with a fixed seed), in the user-visible domain: network output (clamped) and
  target both rendered to sRGB with the sample's own WB and colour matrix
  (:func:`~redi_stream.model.synth.render_srgb`).
* **Amplifier calibration** (SPEC §3): Eq. 5's constant is fitted before training on full-size synthetic frames
  (:func:`calibrate_gain_target`) and stored in every checkpoint and in the exported weights' ``gain_target``.
  The frames (:func:`synthetic_calibration_pairs`) cycle through the training *and* validation photos, each time
  with a fresh camera / K / ratio / noise draw, ``calib_count`` (1024) of them. Per-frame ``ratio / S`` spreads
  over a factor of ~3.5 (5-95%), so the median of a few dozen frames is off by ±10% (95%): the first shipped
  weights used 64 frames, one per photo, and got 0.116 where the population value is 0.125 (their held-out
  median auto / true ratio was 0.80). ``redi-stream train calibrate`` redoes this fit for existing weights.
* ``max_minutes``: the run checkpoints and returns cleanly once the budget is spent (for short device slots);
  ``resume`` continues it. On the command line ``--resume CKPT`` alone is enough: the checkpoint's saved setup fills
  every option not typed (:func:`config_from_argv`), and the run writes beside the checkpoint.

Only trusted checkpoints may be resumed: they are full pickles (optimizer and RNG states), unlike the exported
weights, which :func:`~redi_stream.model.weights.load_weights` reads with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import csv
import enum
import json
import math
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from redi_stream.argparser import ArgumentParser
from redi_stream.errors import ConfigError, WeightsError
from redi_stream.model.data import CleanImageDataset, PairedFolderDataset, RawPairDataset, SIDDataset
from redi_stream.model.net import RediNet, check_input
from redi_stream.model.synth import (
    DAYLIGHT_BLUE_GAINS,
    DAYLIGHT_RED_GAINS,
    PairSynthesizer,
    SynthConfig,
    check_range,
    gain_statistic,
    linear_to_srgb,
    render_srgb,
)
from redi_stream.model.weights import atomic_torch_save, load_weights

CHECKPOINT_FORMAT = "redi-stream-train"
CHECKPOINT_VERSION = 1
CSV_COLUMNS = ("iter", "loss", "l1", "msssim", "lr", "val_psnr", "imgs_per_s", "elapsed_s", "shift_l1")
#: Seed offsets so that training batches, validation and calibration never share random streams.
_VAL_SEED_OFFSET = 1_000_003
_CALIB_SEED_OFFSET = 2_000_003
#: Random stream (of ``_iteration_rng``) for the consistency term's moves; batches use stream 0.
_SHIFT_STREAM = 2
#: Seed offset of the consistency term's second synthesis (its noise).
_SHIFT_SEED_OFFSET = 3_000_017
#: Default white-balance gain range (red and blue) of synthetic training pairs; see ``TrainConfig``.
WIDE_WB_RANGE = (1.0, 3.0)
#: Values of trajectory fields added after checkpoints were first written: what those older runs used
#: (JSON form, as ``TrainConfig.to_dict`` writes it). Fields not listed here defaulted to today's default.
_LEGACY_DEFAULTS: dict[str, Any] = {
    "red_gain_range": list(DAYLIGHT_RED_GAINS),
    "blue_gain_range": list(DAYLIGHT_BLUE_GAINS),
}


class DataKind(enum.StrEnum):
    """Where training pairs come from."""

    SYNTHETIC = "synthetic"  # clean photos -> unprocessing + ELD noise (model.synth)
    SID = "sid"  # See-in-the-Dark Sony raw pairs (users who have them)
    PAIRED = "paired"  # generic dark/bright folders


# Fields that change the training trajectory: a resumed run must use the same values.
_TRAJECTORY_FIELDS = (
    "data",
    "train_dirs",
    "sid_root",
    "sid_train_list",
    "paired_dark",
    "paired_bright",
    "cameras",
    "ratio_range",
    "red_gain_range",
    "blue_gain_range",
    "iterations",
    "batch_size",
    "crop",
    "lr",
    "lr_final",
    "lr_drop_fraction",
    "msssim_weight",
    "seed",
    "amp",
    "shift_consistency",
    "init_from",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; validated on construction (messages list the valid choices).

    Attributes:
        out_dir: where checkpoints, ``log.csv``, ``curves.png`` go (created).
        data: :class:`DataKind`.
        train_dirs: clean photo folders/files (``synthetic``).
        val_dirs: held-out clean photos (``synthetic``) or ``(dark_dir, bright_dir)`` (``paired``); empty = no
            validation.
        sid_root, sid_train_list, sid_val_list: SID data (``sid``); an empty val list = no validation.
        paired_dark, paired_bright: folders (``paired``).
        noise_params: ELD parameters JSON (``synthetic``); cameras: noise profiles to use (empty = all).
        ratio_range: exposure ratios of synthetic pairs.
        red_gain_range, blue_gain_range: white-balance gains of synthetic pairs (uniform; green is 1). The
            default spans daylight to tungsten and sodium light on most sensors (red 1-3, blue 1-3): a network
            trained on Brooks et al.'s daylight-only (1.9-2.4, 1.5-1.9) learns that raw grey always has
            R, B well below G and bends other colour balances towards that, which real frames show as a
            colour cast and crushed shadows (``_LEGACY_DEFAULTS`` keeps the old ranges for old checkpoints).
        iterations: total optimiser steps; batch_size; crop: square crop side (multiple of 32; clean photos smaller
            than it give the largest multiple of 32 that fits, see :class:`~redi_stream.model.data.CleanImageDataset`).
        lr, lr_final, lr_drop_fraction: lr until ``lr_drop_fraction * iterations``, then ``lr_final``.
        msssim_weight: weight of ``1 - MS-SSIM`` in the loss.
        shift_consistency: weight of :func:`shift_consistency_loss` (0 = off): the output for the scene moved by
            a few pixels (synthetic data: re-mosaicked, so odd moves land the scene on other Bayer sites) must be
            the output moved the same way, in 4x4 block means. REDI's 1/32-scale branch sees another arrangement
            of pixels after a small move; without this term a trained model can shift its overall colour by a few
            percent when the picture moves by one pixel or arrives in another Bayer phase. Needs a crop >= 64.
        init_from: network weights that start this run (fine-tuning): a training checkpoint, or exported weights
            (ours, e.g. the shipped default, or the official format); optimiser, schedule and iteration count start
            fresh.
        seed: all randomness derives from it.
        device: ``cpu``, ``cuda`` or ``cuda:N``; amp: float16 autocast + grad scaling (CUDA only).
        num_threads: ``torch.set_num_threads`` for the run (None: torch's default).
        log_every, val_every, ckpt_every: in iterations (0 disables val/ckpt-by-count); ckpt_every_minutes: also
            checkpoint when this much wall time passed since the last one.
        val_count: held-out images; calib_count: synthetic frames for the gain calibration (cycling through
            ``train_dirs`` + ``val_dirs``, a fresh draw each time; see :func:`synthetic_calibration_pairs`).
        max_minutes: wall-time budget; when spent the run checkpoints and returns (resume to continue).
        resume: checkpoint to continue from (its trajectory fields must equal this config's).
        keep_checkpoints: how many ``ckpt_*.pt`` to keep (oldest deleted).
    """

    out_dir: Path
    data: DataKind = DataKind.SYNTHETIC
    train_dirs: tuple[Path, ...] = ()
    val_dirs: tuple[Path, ...] = ()
    sid_root: Path | None = None
    sid_train_list: str = "Sony_train_list.txt"
    sid_val_list: str = ""
    paired_dark: Path | None = None
    paired_bright: Path | None = None
    noise_params: Path | None = None
    cameras: tuple[str, ...] = ()
    ratio_range: tuple[float, float] = (100.0, 300.0)
    red_gain_range: tuple[float, float] = WIDE_WB_RANGE
    blue_gain_range: tuple[float, float] = WIDE_WB_RANGE
    iterations: int = 100_000
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-4
    lr_final: float = 1e-5
    lr_drop_fraction: float = 0.5
    msssim_weight: float = 0.2
    shift_consistency: float = 0.0
    init_from: Path | None = None
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    num_threads: int | None = None
    log_every: int = 10
    val_every: int = 500
    val_count: int = 16
    ckpt_every: int = 1000
    ckpt_every_minutes: float | None = None
    calib_count: int = 1024
    max_minutes: float | None = None
    resume: Path | None = None
    keep_checkpoints: int = 3

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("out_dir", Path(self.out_dir))
        try:
            set_("data", DataKind(self.data))
        except ValueError:
            valid = ", ".join(k.value for k in DataKind)
            raise ConfigError(f"unknown data kind {self.data!r}; valid: {valid}") from None
        set_("train_dirs", tuple(Path(p) for p in self.train_dirs))
        set_("val_dirs", tuple(Path(p) for p in self.val_dirs))
        for name in ("sid_root", "paired_dark", "paired_bright", "noise_params", "resume", "init_from"):
            value = getattr(self, name)
            set_(name, None if value is None else Path(value))
        set_("cameras", tuple(self.cameras))
        set_("ratio_range", tuple(float(v) for v in self.ratio_range))
        for name in ("red_gain_range", "blue_gain_range"):
            set_(name, check_range(name, getattr(self, name)))
        if self.data is DataKind.SYNTHETIC:
            if not self.train_dirs:
                raise ConfigError("synthetic training needs train_dirs (folders of clean photos, e.g. BSDS500/train)")
            if self.noise_params is None:
                raise ConfigError("synthetic training needs noise_params (e.g. eld_camera_noise_params.json)")
        elif self.data is DataKind.SID and self.sid_root is None:
            raise ConfigError("SID training needs sid_root (the folder holding Sony/short and Sony/long)")
        elif self.data is DataKind.PAIRED and (self.paired_dark is None or self.paired_bright is None):
            raise ConfigError("paired training needs paired_dark and paired_bright folders")
        if self.data is DataKind.PAIRED and self.val_dirs and len(self.val_dirs) != 2:
            raise ConfigError("for paired data, val_dirs must be (dark_dir, bright_dir)")
        for name in ("iterations", "batch_size", "log_every", "val_count", "calib_count", "keep_checkpoints"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_every", "ckpt_every"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 disables), got {getattr(self, name)}")
        if self.crop < 32 or self.crop % 32:
            raise ConfigError(f"crop must be a positive multiple of 32, got {self.crop}")
        if not (self.lr > 0 and self.lr_final > 0):
            raise ConfigError(f"learning rates must be > 0, got lr={self.lr}, lr_final={self.lr_final}")
        if not 0 < self.lr_drop_fraction <= 1:
            raise ConfigError(f"lr_drop_fraction must be in (0, 1], got {self.lr_drop_fraction}")
        if not self.msssim_weight >= 0:
            raise ConfigError(f"msssim_weight must be >= 0, got {self.msssim_weight}")
        if not (math.isfinite(self.shift_consistency) and self.shift_consistency >= 0):
            raise ConfigError(f"shift_consistency must be >= 0, got {self.shift_consistency}")
        if self.shift_consistency > 0 and self.crop < 2 * SHIFT_MARGIN:
            raise ConfigError(f"shift_consistency needs crop >= {2 * SHIFT_MARGIN}, got {self.crop}")
        lo, hi = self.ratio_range
        if not 1 <= lo <= hi:
            raise ConfigError(f"ratio_range must satisfy 1 <= lo <= hi, got {self.ratio_range}")
        try:
            dev = torch.device(self.device)
        except RuntimeError:
            raise ConfigError(f"unknown device {self.device!r}; valid: cpu, cuda, cuda:N") from None
        if dev.type not in ("cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}; valid: cpu, cuda, cuda:N")
        if self.amp and dev.type != "cuda":
            raise ConfigError("amp (float16 mixed precision) is CUDA-only; use device='cuda' or amp=False")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"num_threads must be >= 1, got {self.num_threads}")
        for name in ("max_minutes", "ckpt_every_minutes"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be > 0 (or None), got {value}")

    @property
    def lr_drop_iteration(self) -> int:
        """First iteration (0-based step index) trained with ``lr_final``."""
        return max(1, int(round(self.lr_drop_fraction * self.iterations)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (paths as strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, tuple):
                v = [str(x) if isinstance(x, Path) else x for x in v]
            elif isinstance(v, enum.Enum):
                v = v.value
            out[f.name] = v
        return out


# --- loss ----------------------------------------------------------------------------------------------------------

_MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN_SIZE = 11
_WIN_SIGMA = 1.5


def msssim_levels(side: int) -> int:
    """Scales used for an image whose smaller side is ``side``: most of 5 keeping the coarsest >= 11 px.

    Raises:
        ConfigError: ``side`` < 11 (not even single-scale SSIM fits).
    """
    if side < _WIN_SIZE:
        raise ConfigError(f"MS-SSIM needs images of at least {_WIN_SIZE} px, got {side}")
    levels = 1
    while levels < len(_MSSSIM_WEIGHTS) and side // 2**levels >= _WIN_SIZE:
        levels += 1
    return levels


def _gauss_window(device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(_WIN_SIZE, dtype=dtype, device=device) - _WIN_SIZE // 2
    g = torch.exp(-(x**2) / (2 * _WIN_SIGMA**2))
    return g / g.sum()


def ms_ssim(x: Tensor, y: Tensor, *, data_range: float = 1.0, levels: int | None = None) -> Tensor:
    """Mean MS-SSIM of two (N, C, H, W) batches (Wang et al. 2003; matches pytorch-msssim where it applies).

    ``levels`` defaults to :func:`msssim_levels` of the smaller side; with fewer than 5 scales the first
    ``levels`` standard weights are renormalised to sum 1. Contrast terms are clamped at 1e-4 (not ReLU'd) so the
    gradient stays finite. Returns a 0-d tensor.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ConfigError(f"ms_ssim needs two equal (N, C, H, W) shapes, got {tuple(x.shape)}, {tuple(y.shape)}")
    levels = levels or msssim_levels(min(x.shape[-2:]))
    w = torch.tensor(_MSSSIM_WEIGHTS[:levels], dtype=x.dtype, device=x.device)
    w = w / w.sum()
    c = x.shape[1]
    g = _gauss_window(x.device, x.dtype)
    wh = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wv = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, wh, groups=c), wv, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    terms = []
    for i in range(levels):
        mu_x, mu_y = blur(x), blur(y)
        sxx = blur(x * x) - mu_x**2
        syy = blur(y * y) - mu_y**2
        sxy = blur(x * y) - mu_x * mu_y
        cs = (2 * sxy + c2) / (sxx + syy + c2)
        if i < levels - 1:
            terms.append(cs.flatten(2).mean(-1).clamp(min=1e-4))
            pad = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, 2, padding=pad)
            y = F.avg_pool2d(y, 2, padding=pad)
        else:
            lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
            terms.append((lum * cs).flatten(2).mean(-1).clamp(min=1e-4))
    stacked = torch.stack(terms, 0)  # (levels, N, C)
    return torch.prod(stacked ** w.view(-1, 1, 1), 0).mean()


def loss_terms(pred_lin: Tensor, target_lin: Tensor, msssim_weight: float = 0.2) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, l1, msssim)`` with ``loss = L1 + w (1 - MS-SSIM)`` on sRGB-curve-encoded images (float32).

    Args:
        pred_lin: (N, 3, H, W) network output, linear, *unclamped* (see module docstring).
        target_lin: (N, 3, H, W) linear target in [0, 1].
    """
    p = linear_to_srgb(pred_lin.float())
    t = linear_to_srgb(target_lin.float())
    l1 = (p - t).abs().mean()
    ms = ms_ssim(p, t) if msssim_weight > 0 else torch.ones((), device=p.device)
    return l1 + msssim_weight * (1.0 - ms), l1, ms


#: The consistency term's moved view is ``SHIFT_MARGIN`` smaller in each dimension: moves of 0..SHIFT_MARGIN-1 px.
SHIFT_MARGIN = 32
#: ... on SHIFT_POOL x SHIFT_POOL block means: colour and shading must not move with the sampling grid; fine texture
#: may (it is aliased by the 1/32 branch's pixel shuffle whatever the weights).
SHIFT_POOL = 4


def draw_shift(rng: np.random.Generator, *, even: bool = False) -> tuple[int, int]:
    """A move ``(dy, dx)`` for :func:`shift_consistency_loss`: dy in 1..31, dx in 0..31; with ``even`` both even
    (dy in 2..30), for data that can only be moved by cropping its mosaic (RGGB must stay RGGB)."""
    if even:
        return 2 * int(rng.integers(1, SHIFT_MARGIN // 2)), 2 * int(rng.integers(0, SHIFT_MARGIN // 2))
    return int(rng.integers(1, SHIFT_MARGIN)), int(rng.integers(0, SHIFT_MARGIN))


def shift_consistency_loss(forward, moved_input: Tensor, out: Tensor, dy: int, dx: int) -> Tensor:
    """L1 between 4x4 block means (sRGB-curve-encoded) of ``forward(moved_input)`` and of ``out`` moved by
    ``(dy, dx)``.

    Args:
        forward: the network, (N, 1, h, w) -> (N, 3, h, w) linear.
        moved_input: (N, 1, H - 32, W - 32): the scene of ``out`` from row ``dy``, column ``dx`` on, as a fresh
            mosaic (synthetic data: the clean crop moved and synthesised again with the same camera, WB and ratio,
            so an odd move samples the scene on the other Bayer sites) or the batch's mosaic cropped (even moves).
        out: (N, 3, H, W) the network's output for the batch, H and W >= 64 (treated as the target: no gradient).
        dy, dx: in [0, SHIFT_MARGIN).

    Both outputs are compared away from the moved crop's borders (8 px), where padding would differ anyway.
    """
    h, w = out.shape[-2] - SHIFT_MARGIN, out.shape[-1] - SHIFT_MARGIN
    if h < SHIFT_MARGIN or w < SHIFT_MARGIN or not (0 <= dy < SHIFT_MARGIN and 0 <= dx < SHIFT_MARGIN):
        raise ValueError(f"need an output of at least 64x64 and moves in [0, 32), got {tuple(out.shape)}, {dy}, {dx}")
    if tuple(moved_input.shape[-2:]) != (h, w):
        raise ValueError(f"moved input must be {(h, w)}, got {tuple(moved_input.shape[-2:])}")
    moved = forward(moved_input)
    m = SHIFT_MARGIN // 4
    a = linear_to_srgb(moved[..., m : h - m, m : w - m].float())
    b = linear_to_srgb(out.detach()[..., dy + m : dy + h - m, dx + m : dx + w - m].float())
    return F.avg_pool2d(a - b, SHIFT_POOL).abs().mean()


def forward_unclamped(model: RediNet, x: Tensor) -> Tensor:
    """RediNet's forward without the final clamp to [0, 1] (for the loss): (N, 1, H, W) -> (N, 3, H, W)."""
    check_input(x)
    s2 = model.unshuffle(x)
    return model.fb2(model.lse(s2), model.fb1(model.mse(s2), model.hse(s2)))


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-sample PSNR in dB of two (N, ...) batches -> (N,)."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1).clamp(min=1e-12)
    return 10.0 * torch.log10(data_range**2 / mse)


# --- amplifier calibration ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GainCalibration:
    """Result of :func:`calibrate_gain_target`.

    Attributes:
        target: Eq. 5 constant T with ``median(T * S / ratio) = 1`` (S = sum w / sum w r per frame).
        n: frames used (degenerate all-black / all-saturated frames excluded).
        median_ratio, p05_ratio, p95_ratio: quantiles of ``A / true_ratio`` with the clamp [lo, hi] applied.
        clamped_fraction: share of frames whose ``T * S`` falls outside [lo, hi].
        lo, hi: the clamp.
    """

    target: float
    n: int
    median_ratio: float
    p05_ratio: float
    p95_ratio: float
    clamped_fraction: float
    lo: float = 1.0
    hi: float = 300.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def calibrate_gain_target(
    pairs: Iterable[tuple[Tensor, Tensor | float]], *, lo: float = 1.0, hi: float = 300.0
) -> GainCalibration:
    """Fit SPEC §3 Eq. 5's constant so that the automatic gain matches the true ratio in the median.

    Eq. 5 is ``A(T) = clamp(T * S, lo, hi)`` with ``S = sum w(r) / sum w(r) r`` per frame. Before the clamp
    ``A(T) / ratio = T * S / ratio``, so ``median(A / ratio) = 1`` has the closed form
    ``T = median(ratio / S) = median(ratio * sum w r / sum w)`` (NumPy's median: the mean of the two middle values
    for an even count). The clamp only bites where ``T * S`` leaves [lo, hi]; those frames are reported
    (``clamped_fraction``) rather than fitted, so with ratios well inside [lo, hi] the clamped median stays ~1.

    Args:
        pairs: ``(dark, ratio)``: dark (N, ...) or (H, W) normalised unamplified raw in [0, 1] (as the production
            estimator sees it: the whole unpadded frame), ratio (N,) or a float.
    Raises:
        ConfigError: no usable frame.
    """
    ratios, stats = [], []
    for dark, ratio in pairs:
        if dark.dim() == 2:
            dark = dark[None]
        s = gain_statistic(dark).cpu().numpy()
        r = np.broadcast_to(np.asarray(ratio.cpu() if isinstance(ratio, Tensor) else ratio, np.float64), s.shape)
        stats.append(s)
        ratios.append(r)
    if not stats:
        raise ConfigError("gain calibration needs at least one frame")
    s = np.concatenate(stats)
    r = np.concatenate(ratios)
    ok = np.isfinite(s) & (s > 0)
    if not ok.any():
        raise ConfigError("gain calibration: every frame is all black or all saturated")
    s, r = s[ok], r[ok]
    target = float(np.median(r / s))
    raw_a = target * s
    a = np.clip(raw_a, lo, hi)
    q = a / r
    return GainCalibration(
        target=target,
        n=int(s.size),
        median_ratio=float(np.median(q)),
        p05_ratio=float(np.quantile(q, 0.05)),
        p95_ratio=float(np.quantile(q, 0.95)),
        clamped_fraction=float(np.mean((raw_a < lo) | (raw_a > hi))),
        lo=float(lo),
        hi=float(hi),
    )


def _unique(paths: Iterable[Path]) -> tuple[Path, ...]:
    """Paths in order, duplicates removed (e.g. a validation folder that is also a training folder)."""
    return tuple(dict.fromkeys(Path(p) for p in paths))


def synthetic_calibration_pairs(
    photos: CleanImageDataset, synth: PairSynthesizer, *, seed: int, count: int
) -> Iterable[tuple[Tensor, Tensor]]:
    """``(dark, ratio)`` of ``count`` full-size synthetic frames for :func:`calibrate_gain_target`.

    Frame ``j`` is photo ``j % len(photos)`` (whole photo, cropped to multiples of 32, as the production estimator
    sees whole frames) with its own camera, K, colour, ratio and noise draw from a generator seeded by
    ``(seed, j)``: frame ``j`` is the same whatever ``count`` is, and more frames than photos add fresh draws of
    the same photos. ``synth`` sets the cameras and ratio range (use the training ones).
    """
    for j in range(int(count)):
        state = np.random.SeedSequence([int(seed), _CALIB_SEED_OFFSET, j]).generate_state(2, np.uint32)
        g = torch.Generator(synth.device).manual_seed(int(state[0]) << 31 ^ int(state[1]))
        b = synth.synthesize(photos.full(j % len(photos))[None].to(synth.device), g)
        yield b.dark, b.ratio


def calibrate_synthetic(
    photo_dirs: Sequence[str | Path],
    noise_params: str | Path,
    *,
    cameras: Sequence[str] = (),
    ratio_range: tuple[float, float] = (100.0, 300.0),
    red_gain_range: tuple[float, float] = WIDE_WB_RANGE,
    blue_gain_range: tuple[float, float] = WIDE_WB_RANGE,
    count: int = 1024,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[GainCalibration, dict[str, Any]]:
    """Eq. 5 calibration on synthetic frames of clean training photos, as :func:`train` does before training.

    Args:
        photo_dirs: clean photos of the *training* side (e.g. BSDS500 train + val; never the held-out test split).
        noise_params, cameras, ratio_range, red_gain_range, blue_gain_range: the synthesis of the training run
            (default: every camera, ratio U(100, 300), white balance as ``TrainConfig``'s default).
        count, seed: frames and seed of :func:`synthetic_calibration_pairs`.
    Returns:
        (calibration, facts for the weights' provenance: photos, frames, seed, cameras, ratio range).
    """
    synth = PairSynthesizer(
        SynthConfig(noise_params=noise_params, cameras=tuple(cameras), ratio_range=tuple(ratio_range),
                    red_gain_range=tuple(red_gain_range), blue_gain_range=tuple(blue_gain_range)),
        device,
    )
    dirs = _unique(Path(p) for p in photo_dirs)
    photos = CleanImageDataset(dirs, augment=False)
    calibration = calibrate_gain_target(synthetic_calibration_pairs(photos, synth, seed=seed, count=count))
    info = {
        "photos": f"{len(photos)} from {', '.join(str(p) for p in dirs)}",
        "frames": int(count),
        "seed": int(seed),
        "cameras": list(synth.camera_names),
        "ratio_range": [float(v) for v in ratio_range],
        "red_gain_range": [float(v) for v in red_gain_range],
        "blue_gain_range": [float(v) for v in blue_gain_range],
    }
    return calibration, info


def recalibrate_weights(
    weights: str | Path,
    out_path: str | Path,
    calibration: GainCalibration,
    info: Mapping[str, Any] | None = None,
    *,
    version: str | None = None,
) -> Path:
    """Write ``weights`` with a new Eq. 5 ``gain_target`` (network tensors unchanged) to ``out_path``.

    The provenance's ``gain_calibration`` becomes ``calibration`` plus ``info``; a recorded evaluation, which was
    measured with the old constant, moves to ``eval_before_recalibration`` (record a new one with
    :func:`record_eval`).

    Raises:
        WeightsError: unreadable weights, or weights that are not ours (e.g. an official checkpoint).
    """
    from redi_stream.model.weights import WeightsMeta, load_weights, save_weights

    model = load_weights(weights)
    meta: WeightsMeta = model.meta
    if str(meta.output) != "linear_camera_rgb" or "gain_calibration" not in meta.provenance:
        raise WeightsError(f"{weights}: not weights trained by redi-stream (no gain calibration to redo)")
    provenance = dict(meta.provenance)
    if "eval" in provenance:
        provenance["eval_before_recalibration"] = {**provenance.pop("eval"), "gain_target": meta.gain_target}
    provenance["gain_calibration"] = {**calibration.to_dict(), **dict(info or {})}
    new_meta = replace(meta, gain_target=float(calibration.target), provenance=provenance,
                       version=meta.version if version is None else str(version))
    out_path = Path(out_path)
    save_weights(model, out_path, new_meta)
    return out_path


def record_eval(weights: str | Path, result: Mapping[str, Any], command: str = "") -> Path:
    """Store a ``redi-stream eval`` result (its JSON) in the weights' provenance as ``eval``, in place.

    Raises:
        WeightsError: unreadable weights, or a result measured with another ``gain_target`` than the weights'.
    """
    from redi_stream.model.weights import load_weights, save_weights

    model = load_weights(weights)
    meta = model.meta
    measured = result.get("config", {}).get("gain_target")
    if measured is None or not math.isclose(float(measured), float(meta.gain_target), rel_tol=1e-12):
        raise WeightsError(f"the evaluation used gain_target {measured!r}, but {weights} has {meta.gain_target!r}: "
                           "evaluate these weights again")
    provenance = {**meta.provenance, "eval": {"command": command, "result": dict(result)}}
    save_weights(model, weights, replace(meta, provenance=provenance))
    return Path(weights)


# --- data plumbing -------------------------------------------------------------------------------------------------


def _iteration_rng(seed: int, iteration: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(iteration), int(stream)])


def _iteration_torch_generator(seed: int, iteration: int, device: torch.device) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(iteration), 7]).generate_state(2, np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 31 ^ int(state[1]))


@dataclass
class TrainBatch:
    """One batch on the training device: input (N,1,c,c), target (N,3,c,c), ratio (N,), and, for synthetic data,
    the WB (N,3) and colour matrix (N,3,3) that render the target to sRGB."""

    input: Tensor
    target: Tensor
    ratio: Tensor
    wb: Tensor | None = None
    cam_to_srgb: Tensor | None = None
    clean: Tensor | None = None  # synthetic: the clean sRGB crops (N, 3, c, c) on the synthesiser's device
    params: Any = None  # synthetic: their SynthParams


class _SyntheticBatches:
    def __init__(self, dataset: CleanImageDataset, synth: PairSynthesizer, seed: int, batch_size: int):
        self.dataset, self.synth, self.seed, self.batch_size = dataset, synth, seed, batch_size

    def get(self, iteration: int) -> TrainBatch:
        rng = _iteration_rng(self.seed, iteration)
        idx = rng.integers(0, len(self.dataset), size=self.batch_size)
        clean = torch.stack([self.dataset.sample(int(i), rng) for i in idx])
        g = _iteration_torch_generator(self.seed, iteration, self.synth.device)
        b = self.synth.synthesize(clean.to(self.synth.device), g)
        return TrainBatch(b.input, b.target, b.ratio, b.wb, b.cam_to_srgb, b.clean_srgb, b.params)

    even_moves = False

    def moved(self, batch: TrainBatch, dy: int, dx: int, iteration: int) -> Tensor:
        """The batch's clean crops from (dy, dx) on, ``SHIFT_MARGIN`` smaller, synthesised again with the same
        per-sample parameters (fresh noise) -> network input (N, 1, c - 32, c - 32)."""
        c = batch.clean.shape[-1] - SHIFT_MARGIN
        g = _iteration_torch_generator(self.seed + _SHIFT_SEED_OFFSET, iteration, self.synth.device)
        return self.synth.synthesize(batch.clean[..., dy : dy + c, dx : dx + c], g, batch.params).input


class _RealBatches:
    def __init__(self, dataset: RawPairDataset, seed: int, batch_size: int, device: torch.device):
        self.dataset, self.seed, self.batch_size, self.device = dataset, seed, batch_size, device

    def get(self, iteration: int) -> TrainBatch:
        rng = _iteration_rng(self.seed, iteration)
        idx = rng.integers(0, len(self.dataset), size=self.batch_size)
        items = [self.dataset.sample(int(i), rng) for i in idx]
        return TrainBatch(
            torch.stack([it[0] for it in items]).to(self.device),
            torch.stack([it[1] for it in items]).to(self.device),
            torch.tensor([it[2] for it in items], dtype=torch.float32, device=self.device),
        )

    even_moves = True

    def moved(self, batch: TrainBatch, dy: int, dx: int, iteration: int) -> Tensor:
        """Real mosaics can only be cropped: (dy, dx) even, the input ``SHIFT_MARGIN`` smaller."""
        h, w = batch.input.shape[-2] - SHIFT_MARGIN, batch.input.shape[-1] - SHIFT_MARGIN
        return batch.input[..., dy : dy + h, dx : dx + w]


def _build_data(config: TrainConfig, device: torch.device):
    """-> (batch source, validation TrainBatch or None, calibration iterable factory, provenance dict)."""
    if config.data is DataKind.SYNTHETIC:
        assert config.noise_params is not None
        synth = PairSynthesizer(
            SynthConfig(noise_params=config.noise_params, cameras=config.cameras, ratio_range=config.ratio_range,
                        red_gain_range=config.red_gain_range, blue_gain_range=config.blue_gain_range),
            device,
        )
        train_set = CleanImageDataset(config.train_dirs, crop=config.crop)
        source = _SyntheticBatches(train_set, synth, config.seed, config.batch_size)
        val = None
        if config.val_dirs:
            val_set = CleanImageDataset(config.val_dirs, crop=train_set.crop_size, max_images=config.val_count,
                                        augment=False)
            clean = torch.stack([val_set.center(i) for i in range(len(val_set))])
            g = torch.Generator(device).manual_seed(config.seed + _VAL_SEED_OFFSET)
            b = synth.synthesize(clean.to(device), g)
            val = TrainBatch(b.input, b.target, b.ratio, b.wb, b.cam_to_srgb)

        def calib_pairs():
            photos = CleanImageDataset(_unique(config.train_dirs + config.val_dirs), augment=False)
            return synthetic_calibration_pairs(photos, synth, seed=config.seed, count=config.calib_count)

        provenance = {
            "data": f"synthetic: unprocessed clean photos ({len(train_set)} from "
            f"{', '.join(str(p) for p in config.train_dirs)}), crop {train_set.crop_size}",
            "noise_model": f"ELD physics noise ({Path(config.noise_params).name}; cameras "
            f"{', '.join(synth.camera_names)}), ratio U{tuple(config.ratio_range)}, white balance red "
            f"U{tuple(config.red_gain_range)} blue U{tuple(config.blue_gain_range)}",
        }
        return source, val, calib_pairs, provenance, train_set.crop_size

    if config.data is DataKind.SID:
        assert config.sid_root is not None
        train_set: RawPairDataset = SIDDataset(config.sid_root, config.sid_train_list, crop=config.crop)
        val_set = (
            SIDDataset(config.sid_root, config.sid_val_list, crop=config.crop, augment=False)
            if config.sid_val_list
            else None
        )
        desc = f"SID Sony raw pairs ({len(train_set)} from {config.sid_root / config.sid_train_list})"
    else:
        assert config.paired_dark is not None and config.paired_bright is not None
        train_set = PairedFolderDataset(config.paired_dark, config.paired_bright, crop=config.crop)
        val_set = (
            PairedFolderDataset(config.val_dirs[0], config.val_dirs[1], crop=config.crop, augment=False)
            if config.val_dirs
            else None
        )
        desc = f"paired folders ({len(train_set)} pairs, {config.paired_dark} / {config.paired_bright})"
    source = _RealBatches(train_set, config.seed, config.batch_size, device)
    val = None
    if val_set is not None:
        items = [val_set.center(i) for i in range(min(config.val_count, len(val_set)))]
        val = TrainBatch(
            torch.stack([it[0] for it in items]).to(device),
            torch.stack([it[1] for it in items]).to(device),
            torch.tensor([it[2] for it in items], dtype=torch.float32, device=device),
        )

    def calib_pairs():
        for i in range(min(config.calib_count, len(train_set))):
            dark, _ = train_set.load(i)
            yield torch.from_numpy(dark)[None], float(train_set.pairs[i].ratio)

    return source, val, calib_pairs, {"data": desc, "noise_model": "real sensor noise"}, config.crop


# --- checkpoints, log, plot ---------------------------------------------------------------------------------------


def _rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(states["torch_cpu"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if device.type == "cuda" and "torch_cuda" in states:
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint (a trusted pickle) on the CPU.

    Raises:
        WeightsError: unreadable, or not a redi-stream training checkpoint.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many types (OSError, UnpicklingError, RuntimeError, ...)
        raise WeightsError(f"cannot read training checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint (use load_weights for exported weights)")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise WeightsError(f"{path}: checkpoint version {ckpt.get('version')!r} unsupported (valid: 1)")
    return ckpt


def load_initial_weights(model: RediNet, path: str | Path) -> None:
    """Start the weight-normalised ``model`` from ``path``: a training checkpoint, or exported weights.

    Exported weights are folded (one plain weight per conv); assigning it to a weight-norm parametrisation sets
    ``g = ||w||`` and ``v = w`` per output channel (its ``right_inverse``), so the model computes exactly the
    exported network and training continues in the usual parametrisation.

    Raises:
        WeightsError: ``path`` is neither (the message names it and both readers' complaints).
    """
    try:
        state = load_checkpoint(path)["model"]
    except WeightsError as as_checkpoint:
        try:
            plain = load_weights(path)
        except WeightsError as as_weights:
            raise WeightsError(f"--init-from {path}: {as_checkpoint}; {as_weights}") from as_weights
        ref = next(model.parameters())  # the model's device and dtype (it may already sit on a GPU)
        with torch.no_grad():
            for name, src in plain.named_modules():
                if isinstance(src, nn.Conv2d):
                    dst = model.get_submodule(name)
                    dst.weight = src.weight.detach().to(ref.device, ref.dtype).clone()
                    if src.bias is not None:
                        dst.bias.copy_(src.bias)
        return
    model.load_state_dict(state)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_log(path: str | Path) -> list[dict[str, float]]:
    """``log.csv`` rows as floats (empty fields -> NaN)."""
    return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in _read_csv(Path(path))]


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in CSV_COLUMNS})


def plot_curves(csv_path: str | Path, png_path: str | Path) -> None:
    """Loss (left) and validation PSNR (right) against iterations, as a PNG (matplotlib if installed, else cv2)."""
    rows = read_log(csv_path)
    if not rows:
        return
    it = np.array([r["iter"] for r in rows])
    loss = np.array([r["loss"] for r in rows])
    vp = np.array([r["val_psnr"] for r in rows])
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _plot_cv2(it, loss, vp, Path(png_path))
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(it, loss)
    a.set_xlabel("iteration")
    a.set_ylabel("loss")
    a.set_yscale("log")
    ok = np.isfinite(vp)
    b.plot(it[ok], vp[ok], "o-")
    b.set_xlabel("iteration")
    b.set_ylabel("val PSNR (dB)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)


def _plot_cv2(it: np.ndarray, loss: np.ndarray, vp: np.ndarray, path: Path) -> None:
    import cv2

    w, h, m = 480, 320, 50
    canvas = np.full((h, 2 * w, 3), 255, np.uint8)

    def panel(x0: int, xs: np.ndarray, ys: np.ndarray, title: str, log: bool) -> None:
        ok = np.isfinite(ys) & ((ys > 0) if log else True)
        xs, ys = xs[ok], ys[ok]
        cv2.rectangle(canvas, (x0 + m, 20), (x0 + w - 10, h - m + 20), (0, 0, 0), 1)
        cv2.putText(canvas, title, (x0 + m, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        if xs.size == 0:
            return
        yv = np.log10(ys) if log else ys
        x_lo, x_hi = float(xs.min()), float(max(xs.max(), xs.min() + 1))
        y_lo, y_hi = float(yv.min()), float(yv.max())
        if y_hi - y_lo < 1e-9:
            y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
        px = x0 + m + (xs - x_lo) / (x_hi - x_lo) * (w - m - 10)
        py = h - m + 20 - (yv - y_lo) / (y_hi - y_lo) * (h - m)
        pts = np.stack([px, py], 1).round().astype(np.int32)
        cv2.polylines(canvas, [pts], False, (200, 80, 0), 1, cv2.LINE_AA)
        if xs.size < 60:
            for p in pts:
                cv2.circle(canvas, tuple(int(v) for v in p), 2, (200, 80, 0), -1)
        fmt = (lambda v: f"{10 ** v:.3g}") if log else (lambda v: f"{v:.2f}")
        for frac in (0.0, 1.0):
            yy = int(h - m + 20 - frac * (h - m))
            cv2.putText(canvas, fmt(y_lo + frac * (y_hi - y_lo)), (x0 + 2, yy), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (0, 0, 0), 1, cv2.LINE_AA)
        for frac, v in ((0.0, x_lo), (1.0, x_hi)):
            xx = int(x0 + m + frac * (w - m - 10)) - (30 if frac else 0)
            cv2.putText(canvas, f"{v:.0f}", (xx, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)

    panel(0, it, loss, "training loss (log scale) vs iteration", True)
    panel(w, it, vp, "validation PSNR (dB) vs iteration", False)
    cv2.imwrite(str(path), canvas)


# --- the loop ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def validate(model: RediNet, val: TrainBatch, batch_size: int) -> float:
    """Mean PSNR (dB) of the clamped output vs the target, rendered to sRGB (synthetic) or sRGB-curve encoded."""
    was_training = model.training
    model.eval()
    values = []
    for i in range(0, val.input.shape[0], batch_size):
        sl = slice(i, i + batch_size)
        out = model(val.input[sl]).float()
        if val.wb is not None and val.cam_to_srgb is not None:
            a = render_srgb(out, val.wb[sl], val.cam_to_srgb[sl])
            b = render_srgb(val.target[sl], val.wb[sl], val.cam_to_srgb[sl])
        else:
            a, b = linear_to_srgb(out.clamp(0, 1)), linear_to_srgb(val.target[sl].clamp(0, 1))
        values.append(psnr(a, b))
    model.train(was_training)
    return float(torch.cat(values).mean())


def _check_resume_compatible(saved: Mapping[str, Any], config: TrainConfig) -> None:
    now = config.to_dict()
    diffs = [
        f"{k}: checkpoint {_saved_field(saved, k)!r} != now {now[k]!r}"
        for k in _TRAJECTORY_FIELDS
        if _saved_field(saved, k) != now[k]
    ]
    if diffs:
        raise ConfigError("cannot resume exactly with a different training setup: " + "; ".join(diffs))


def _saved_field(saved_config: Mapping[str, Any], name: str) -> Any:
    """A field of a checkpoint's config; checkpoints written before the field existed ran with the value in
    ``_LEGACY_DEFAULTS``, or else with its default."""
    if name in saved_config:
        return saved_config[name]
    return _LEGACY_DEFAULTS.get(name, TrainConfig.__dataclass_fields__[name].default)


def _new_window() -> dict[str, float]:
    """Sums over the iterations since the last log row."""
    return {"loss": 0.0, "l1": 0.0, "msssim": 0.0, "shift_l1": 0.0, "n": 0, "t": 0.0}


def train(config: TrainConfig, *, progress: bool = False) -> Path:
    """Run (or resume) training; return the path of the last checkpoint written.

    Writes into ``config.out_dir``: ``ckpt_<iteration>.pt`` (the last ``keep_checkpoints``), ``log.csv``
    (:data:`CSV_COLUMNS`; loss columns are means over the iterations since the previous row), ``curves.png``.

    Raises:
        ConfigError: invalid data, or a resume checkpoint from a different setup.
        WeightsError: the resume checkpoint cannot be read.
    """
    t_start = time.monotonic()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {config.device!r} requested but CUDA is not available; valid here: cpu")
    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / "log.csv", out_dir / "curves.png"

    source, val, calib_pairs, provenance, crop_used = _build_data(config, device)
    torch.manual_seed(config.seed)  # model init
    model = RediNet(weight_norm=True).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[config.lr_drop_iteration], gamma=config.lr_final / config.lr
    )
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
    window = _new_window()
    elapsed_before = 0.0

    if config.resume is not None:
        ckpt = load_checkpoint(config.resume)
        _check_resume_compatible(ckpt["config"], config)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_states(ckpt["rng"], device)
        iteration = int(ckpt["iteration"])
        window = {**_new_window(), **ckpt["window"]}
        calibration = GainCalibration(**ckpt["gain_calibration"])
        elapsed_before = float(ckpt.get("elapsed_s", 0.0))
        # Rows logged after this checkpoint belong to the abandoned continuation.
        _write_csv(csv_path, [r for r in _read_csv(csv_path) if float(r["iter"]) <= iteration])
    else:
        iteration = 0
        if config.init_from is not None:
            load_initial_weights(model, config.init_from)
        calibration = calibrate_gain_target(calib_pairs())
        _write_csv(csv_path, [])

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def save(it: int) -> Path:
        path = out_dir / f"ckpt_{it:07d}.pt"
        atomic_torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "iteration": it,
                "config": config.to_dict(),
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_states(device),
                # Batches are a pure function of (seed, iteration): this is the whole sampler state.
                "sampler": {"kind": "seeded-per-iteration", "seed": config.seed, "next_iteration": it},
                "window": dict(window),
                "gain_calibration": calibration.to_dict(),
                "provenance": {**provenance, "crop": crop_used},
                "elapsed_s": elapsed_before + time.monotonic() - t_start,
                "device_name": device_name,
            },
            path,
        )
        old = sorted(out_dir.glob("ckpt_*.pt"))
        for stale in old[: max(0, len(old) - config.keep_checkpoints)]:
            if stale != path:
                stale.unlink(missing_ok=True)
        return path

    last_ckpt: Path | None = None
    t_last_ckpt = time.monotonic()
    budget_s = config.max_minutes * 60.0 if config.max_minutes is not None else math.inf
    model.train()
    while iteration < config.iterations:
        t0 = time.perf_counter()
        batch = source.get(iteration)
        with torch.autocast(device.type, dtype=torch.float16, enabled=config.amp):
            out = forward_unclamped(model, batch.input)
        loss, l1, ms = loss_terms(out, batch.target, config.msssim_weight)
        if config.shift_consistency > 0:
            dy, dx = draw_shift(_iteration_rng(config.seed, iteration, _SHIFT_STREAM), even=source.even_moves)
            moved_input = source.moved(batch, dy, dx, iteration)
            with torch.autocast(device.type, dtype=torch.float16, enabled=config.amp):
                shift_l1 = shift_consistency_loss(lambda t: forward_unclamped(model, t), moved_input, out, dy, dx)
            loss = loss + config.shift_consistency * shift_l1
            window["shift_l1"] += float(shift_l1.detach())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at iteration {iteration}: {float(loss)}")
        lr_used = opt.param_groups[0]["lr"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        iteration += 1
        window["loss"] += float(loss.detach())
        window["l1"] += float(l1.detach())
        window["msssim"] += float(ms.detach())
        window["n"] += 1
        window["t"] += time.perf_counter() - t0

        out_of_time = time.monotonic() - t_start >= budget_s
        finished = iteration >= config.iterations
        do_val = val is not None and (
            (config.val_every and iteration % config.val_every == 0) or finished or out_of_time
        )
        if iteration % config.log_every == 0 or do_val or finished or out_of_time:
            val_psnr = validate(model, val, config.batch_size) if do_val else None
            n = max(window["n"], 1)
            row = {
                "iter": iteration,
                "loss": f"{window['loss'] / n:.6g}",
                "l1": f"{window['l1'] / n:.6g}",
                "msssim": f"{window['msssim'] / n:.6g}",
                "lr": f"{lr_used:.3g}",
                "val_psnr": "" if val_psnr is None else f"{val_psnr:.4f}",
                "imgs_per_s": f"{config.batch_size * n / max(window['t'], 1e-9):.4g}",
                "elapsed_s": f"{elapsed_before + time.monotonic() - t_start:.1f}",
                "shift_l1": f"{window['shift_l1'] / n:.6g}" if config.shift_consistency > 0 else "",
            }
            with csv_path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=CSV_COLUMNS).writerow(row)
            window = _new_window()
            if progress:
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
            if do_val:
                plot_curves(csv_path, png_path)
        by_count = config.ckpt_every and iteration % config.ckpt_every == 0
        by_time = (
            config.ckpt_every_minutes is not None
            and time.monotonic() - t_last_ckpt >= config.ckpt_every_minutes * 60.0
        )
        if by_count or by_time or finished or out_of_time:
            last_ckpt = save(iteration)
            t_last_ckpt = time.monotonic()
        if out_of_time and not finished:
            if progress:
                print(f"time budget of {config.max_minutes} min spent at iteration {iteration}; "
                      f"resume with --resume {last_ckpt}", flush=True)
            break
    if last_ckpt is None:  # resumed a finished run
        last_ckpt = save(iteration)
    plot_curves(csv_path, png_path)
    return last_ckpt


# --- export --------------------------------------------------------------------------------------------------------


def export_default(ckpt: str | Path, out_path: str | Path, meta: Mapping[str, Any] | Any | None = None) -> Path:
    """Folded inference weights of a training checkpoint -> our weights format, with provenance.

    Args:
        ckpt: a training checkpoint from :func:`train`.
        out_path: e.g. ``redi_stream/weights/redi_default.pt`` (~3.1 MB float32).
        meta: a ``WeightsMeta`` to use as is, or a dict merged into the provenance (e.g. ``{"eval": {...},
            "version": "..."}``; ``version`` is taken out as the weights' version).

    The metadata states ``output="linear_camera_rgb"``, ``gain_target`` = the checkpoint's calibrated Eq. 5 constant
    (multiplier default 1), and provenance: data, iterations, noise model, gain calibration, training config.
    """
    from redi_stream.model.weights import WeightsMeta, save_weights

    state = load_checkpoint(ckpt)
    model = RediNet(weight_norm=True)
    model.load_state_dict(state["model"])
    model.fold().eval()
    if isinstance(meta, WeightsMeta):
        weights_meta = meta
    else:
        extra = dict(meta or {})
        version = str(extra.pop("version", f"redi-stream-{state['iteration']}it"))
        calib = state["gain_calibration"]
        cfg = state["config"]
        provenance = {
            **state.get("provenance", {}),
            "iterations": int(state["iteration"]),
            # The lr schedule is laid out over the planned iterations; a time budget may stop the run earlier.
            "schedule_iterations": int(cfg["iterations"]),
            "device": str(state.get("device_name", cfg["device"])),
            "recipe": {k: _saved_field(cfg, k)
                       for k in ("batch_size", "crop", "lr", "lr_final", "lr_drop_fraction", "msssim_weight",
                                 "shift_consistency", "init_from", "seed", "amp")},
            "loss": f"L1 + {_saved_field(cfg, 'msssim_weight'):g} (1 - MS-SSIM) on sRGB-curve-encoded linear "
            "camera RGB",
            "gain_calibration": calib,
            "training_time_s": float(state.get("elapsed_s", 0.0)),
            **extra,
        }
        weights_meta = WeightsMeta(
            output="linear_camera_rgb",
            gain_target=float(calib["target"]),
            gain_multiplier_default=1.0,
            provenance=provenance,
            version=version,
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_path, weights_meta)
    return out_path


# --- CLI -----------------------------------------------------------------------------------------------------------


def _split_dirs(values: Sequence[str] | None) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """``--data`` folders -> (train, val): a folder with ``train/`` (and ``val/``) subfolders is a BSDS layout."""
    train_dirs, val_dirs = [], []
    for v in values or []:
        p = Path(v)
        if (p / "train").is_dir():
            train_dirs.append(p / "train")
            if (p / "val").is_dir():
                val_dirs.append(p / "val")
        else:
            train_dirs.append(p)
    return tuple(train_dirs), tuple(val_dirs)


def _add_wb_arguments(p: argparse.ArgumentParser) -> None:
    """``--red-gain-range`` / ``--blue-gain-range``: white balance of synthetic pairs (training and calibration)."""
    for colour in ("red", "blue"):
        p.add_argument(f"--{colour}-gain-range", nargs=2, type=float, default=WIDE_WB_RANGE, metavar=("LO", "HI"),
                       help=f"{colour} white-balance gain of synthetic pairs, uniform (default %(default)s; "
                       "Brooks et al. used 1.9 2.4 red, 1.5 1.9 blue)")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="redi-stream train",
        description="Train REDI on synthetic dark raw pairs (or SID / paired raw data). "
        "'export CKPT OUT' writes inference weights from a checkpoint; 'calibrate WEIGHTS --data ... "
        "--noise-params ...' refits their Eq. 5 gain_target; 'record-eval WEIGHTS EVAL_JSON' stores an evaluation.",
    )
    p.add_argument("--out-dir", default="runs/train", help="checkpoints, log.csv, curves.png (default runs/train)")
    p.add_argument("--data-kind", default="synthetic", choices=[k.value for k in DataKind])
    p.add_argument("--data", nargs="*", help="clean photo folders (a folder with train/ and val/ uses both)")
    p.add_argument("--val-data", nargs="*", help="held-out clean photos (synthetic) or DARK BRIGHT (paired)")
    p.add_argument("--noise-params", help="ELD noise parameters JSON (synthetic data)")
    p.add_argument("--cameras", nargs="*", default=[], help="noise profiles to use (default: all in the file)")
    p.add_argument("--ratio-range", nargs=2, type=float, default=(100.0, 300.0), metavar=("LO", "HI"))
    _add_wb_arguments(p)
    p.add_argument("--sid-root", help="folder holding Sony/short and Sony/long")
    p.add_argument("--sid-train-list", default="Sony_train_list.txt")
    p.add_argument("--sid-val-list", default="")
    p.add_argument("--paired-dark")
    p.add_argument("--paired-bright")
    p.add_argument("--iterations", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--lr-final", type=float, default=1e-5)
    p.add_argument("--lr-drop-fraction", type=float, default=0.5)
    p.add_argument("--msssim-weight", type=float, default=0.2)
    p.add_argument("--shift-consistency", type=float, default=0.0,
                   help="weight of the shift-consistency term (0 = off; see TrainConfig)")
    p.add_argument("--init-from", help="training checkpoint whose network weights start this run (fine-tuning)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_true", help="float16 mixed precision (CUDA only)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-count", type=int, default=16)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--ckpt-minutes", type=float, default=None, help="also checkpoint every N minutes")
    p.add_argument("--calib-count", type=int, default=1024,
                   help="synthetic frames for the Eq. 5 calibration (default 1024)")
    p.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this wall time")
    p.add_argument("--keep-checkpoints", type=int, default=3)
    p.add_argument("--resume", help="training checkpoint to continue from, with its saved setup (options typed "
                   "override it; --out-dir defaults to the checkpoint's folder)")
    p.add_argument("--export-to", help="after training, export inference weights here")
    return p


#: Command-line options whose TrainConfig field has another name, or that set two fields (default: the same name).
_OPTION_FIELDS: dict[str, tuple[str, ...]] = {
    "data": ("train_dirs", "val_dirs"),
    "val_data": ("val_dirs",),
    "data_kind": ("data",),
    "threads": ("num_threads",),
    "ckpt_minutes": ("ckpt_every_minutes",),
    "export_to": (),
}


def _typed_options(argv: Sequence[str]) -> set[str]:
    """The parser destinations the command line sets itself (options left at their defaults are absent)."""
    p = build_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(list(argv))))


def config_from_argv(argv: Sequence[str]) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse a training command line. With ``--resume CKPT`` the checkpoint's saved setup is the default for every
    option not typed (so ``--resume CKPT`` alone continues the run; ``--out-dir`` defaults to the checkpoint's
    folder), and typed options override it (a trajectory field that differs is then refused by :func:`train`).

    Raises:
        WeightsError: the checkpoint cannot be read.
    """
    args = build_parser().parse_args(list(argv))
    if not args.resume:
        return config_from_args(args), args
    saved = load_checkpoint(args.resume)["config"]
    # Fields an older checkpoint lacks ran with their legacy value, or else take the default.
    values = {f.name: _saved_field(saved, f.name) for f in fields(TrainConfig)
              if f.name in saved or f.name in _LEGACY_DEFAULTS}
    values["out_dir"] = Path(args.resume).parent
    typed = _typed_options(argv)
    given = config_fields_from_args(args)
    for dest in typed:
        for name in _OPTION_FIELDS.get(dest, (dest,)):
            values[name] = given[name]
    values["resume"] = Path(args.resume)
    return TrainConfig(**values), args


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The one place a :class:`TrainConfig` is built from command-line arguments (every option as parsed)."""
    return TrainConfig(**config_fields_from_args(args))


def config_fields_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`TrainConfig` keyword arguments from parsed command-line arguments (not yet validated)."""
    train_dirs, val_dirs = _split_dirs(args.data)
    if args.val_data:
        val_dirs = tuple(Path(v) for v in args.val_data)
    return dict(
        out_dir=Path(args.out_dir),
        data=args.data_kind,
        train_dirs=train_dirs,
        val_dirs=val_dirs,
        sid_root=args.sid_root,
        sid_train_list=args.sid_train_list,
        sid_val_list=args.sid_val_list,
        paired_dark=args.paired_dark,
        paired_bright=args.paired_bright,
        noise_params=args.noise_params,
        cameras=tuple(args.cameras),
        ratio_range=tuple(args.ratio_range),
        red_gain_range=tuple(args.red_gain_range),
        blue_gain_range=tuple(args.blue_gain_range),
        iterations=args.iterations,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        lr_final=args.lr_final,
        lr_drop_fraction=args.lr_drop_fraction,
        msssim_weight=args.msssim_weight,
        shift_consistency=args.shift_consistency,
        init_from=args.init_from,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        num_threads=args.threads,
        log_every=args.log_every,
        val_every=args.val_every,
        val_count=args.val_count,
        ckpt_every=args.ckpt_every,
        ckpt_every_minutes=args.ckpt_minutes,
        calib_count=args.calib_count,
        max_minutes=args.max_minutes,
        resume=args.resume,
        keep_checkpoints=args.keep_checkpoints,
    )


def _calibrate_main(argv: Sequence[str]) -> int:
    cp = ArgumentParser(
        prog="redi-stream train calibrate",
        description="Refit Eq. 5's gain_target of exported weights on synthetic frames of the training photos "
        "(as training does) and write the weights with the new constant; the network tensors are unchanged.",
    )
    cp.add_argument("weights", help="our exported weights (.pt)")
    cp.add_argument("--data", nargs="+", required=True,
                    help="training-side clean photos (a folder with train/ and val/ uses both); never the test split")
    cp.add_argument("--noise-params", required=True, help="ELD noise parameters JSON")
    cp.add_argument("--cameras", nargs="*", default=[], help="noise profiles (default: all, as in training)")
    cp.add_argument("--ratio-range", nargs=2, type=float, default=(100.0, 300.0), metavar=("LO", "HI"))
    _add_wb_arguments(cp)
    cp.add_argument("--calib-count", type=int, default=1024, help="synthetic frames (default 1024)")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--device", default="cpu")
    cp.add_argument("--out", help="where to write (default: overwrite WEIGHTS)")
    cp.add_argument("--version", default=None, help="new version string of the weights")
    a = cp.parse_args(list(argv))
    if a.calib_count < 1:
        raise ConfigError(f"--calib-count must be >= 1, got {a.calib_count}")
    train_dirs, val_dirs = _split_dirs(a.data)
    dirs = train_dirs + val_dirs
    if any(p.name.lower() == "test" for p in dirs):
        print("redi-stream train calibrate: warning: a folder named 'test' is used; calibrate on training data "
              "and keep the test split for 'redi-stream eval'", file=sys.stderr)
    calibration, info = calibrate_synthetic(dirs, a.noise_params, cameras=a.cameras, ratio_range=tuple(a.ratio_range),
                                            red_gain_range=tuple(a.red_gain_range),
                                            blue_gain_range=tuple(a.blue_gain_range),
                                            count=a.calib_count, seed=a.seed, device=a.device)
    info["command"] = "redi-stream train calibrate " + " ".join(argv)
    c = calibration
    print(f"gain_target {c.target:.6g} from {c.n} frames ({info['photos']}); on them A / true ratio: median "
          f"{c.median_ratio:.3f}, 5-95% [{c.p05_ratio:.3f}, {c.p95_ratio:.3f}], clamped {c.clamped_fraction:.1%}")
    print(f"wrote {recalibrate_weights(a.weights, a.out or a.weights, calibration, info, version=a.version)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m redi_stream.model.train [options]``, ``... export CKPT OUT``, ``... calibrate WEIGHTS --data ...``
    or ``... record-eval WEIGHTS EVAL_JSON``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["export"]:
            ep = ArgumentParser(prog="redi-stream train export")
            ep.add_argument("checkpoint")
            ep.add_argument("out")
            ep.add_argument("--version", default=None)
            a = ep.parse_args(argv[1:])
            path = export_default(a.checkpoint, a.out, {"version": a.version} if a.version else None)
            print(f"wrote {path}")
            return 0
        if argv[:1] == ["calibrate"]:
            return _calibrate_main(argv[1:])
        if argv[:1] == ["record-eval"]:
            rp = ArgumentParser(
                prog="redi-stream train record-eval",
                description="Store a 'redi-stream eval --json' result in the weights' metadata (in place).")
            rp.add_argument("weights")
            rp.add_argument("eval_json")
            rp.add_argument("--command", default="", help="the eval command line, recorded with the result")
            a = rp.parse_args(argv[1:])
            try:
                result = json.loads(Path(a.eval_json).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"cannot read evaluation result {a.eval_json}: {exc}") from exc
            print(f"wrote {record_eval(a.weights, result, a.command)}")
            return 0
        config, args = config_from_argv(argv)
        if config.resume is not None:
            print(f"resuming {config.resume} (its saved setup, options typed here override it); "
                  f"writing to {config.out_dir}", flush=True)
        ckpt = train(config, progress=True)
        print(f"checkpoint: {ckpt}")
        if args.export_to:
            print(f"wrote {export_default(ckpt, args.export_to)}")
        return 0
    except (ConfigError, WeightsError) as exc:
        print(f"redi-stream train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
