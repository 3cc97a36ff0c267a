"""Synthetic dark-raw training pairs: clean sRGB photos -> (noisy dark RGGB mosaic, clean linear camera RGB).

The pipeline follows SPEC §5, batched and vectorised in torch so it runs on the training device (CPU or CUDA):

1. **Unprocess** (Brooks et al., "Unprocessing Images for Learned Raw Denoising", CVPR 2019): sRGB in [0, 1] ->
   inverse smoothstep tone curve ``x = 0.5 - sin(asin(1 - 2y) / 3)`` -> exact inverse sRGB transfer curve ->
   linear sRGB -> XYZ -> camera RGB through a random convex mix of real XYZ->camera matrices (rows normalised so
   camera white maps to white) -> divide by random white-balance gains (red ~U(1.9, 2.4), blue ~U(1.5, 1.9),
   green 1) -> clip to [0, 1]. The result is the **target**: the bright scene in the *sensor's own colours*
   (raw camera RGB, white balance not applied), linear, (N, 3, H, W). This is what our models output
   (``meta.output == "linear_camera_rgb"``); the ISP stage then applies the WB gains, ``cam_to_srgb`` and the sRGB
   curve (SPEC §4). With these exact parameters ``render_srgb(target, wb, cam_to_srgb)`` gives back the clean
   photo *without its tone curve* (our ISP applies no tone curve), up to the clipping of out-of-gamut colours.
   Brooks' highlight-preserving "safe" WB inversion and random brightness gain are left out so that the ISP
   inverts the unprocessing exactly.
2. **Mosaic** the target in RGGB (R at (0, 0); the network's phase after CFA unification) and **darken** it by
   the exposure ratio ~U(100, 300).
3. **ELD noise** (Wei et al., "A Physics-based Noise Formation Model for Extreme Low-light Raw Denoising", CVPR
   2020), per camera from the calibrated parameters file, in 14-bit DN on the black-subtracted signal: system
   gain ``K`` log-uniform in [Kmin, Kmax]; shot noise ``Poisson(signal / K) * K``; Tukey-lambda read noise with
   shape from ``G_shape`` and scale from the log-linear fit ``log(scale) = slope log K + bias + N(0, sigma^2)``;
   row noise ``N(0, R_scale^2)`` per row of each of the four Bayer channels (ELD's banding model on the packed
   (4, H/2, W/2) raw); a per-channel bias (a ``color_bias`` row, drawn with the same ISO index as the shape);
   uniform quantisation noise U(-0.5, 0.5); then the absolute value ``black + signal`` is clipped to [0, white].
4. **Normalise** exactly as :func:`redi_stream.kernels.pack_raw` does for real frames:
   ``clip((dn - black) / (white - black), 0, 1)``; the network input is that times the true ratio, clipped at
   ``amplifier.INPUT_CEILING`` as the packers clip real frames.

Every random draw comes from one ``torch.Generator`` on the data's device, in a fixed order, so the same seed on
the same device gives the same tensors (CPU and CUDA streams differ from each other).

:func:`estimate_gain_torch` is a torch twin of SPEC §3 Eq. 5 (the production kernel is
``redi_stream.kernels.estimate_gain``, which ``model/`` may not import; ``redi_stream.evaluate`` checks that the two
agree). Nothing here imports ``capture``, ``kernels`` or ``stream``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from redi_stream.amplifier import BIN_EDGES, BIN_WEIGHTS, INPUT_CEILING
from redi_stream.errors import ConfigError

# --- colour data --------------------------------------------------------------------------------------------------

#: XYZ (D65) -> camera matrices, rows R, G, B of the camera. These are DNG ``ColorMatrix`` values (Adobe's published
#: camera profiles, as tabulated in dcraw/LibRaw ``adobe_coeff``, divided by 10000). The first four are the matrices
#: of Brooks et al. 2019 (google-research/unprocessing ``random_ccm``); three of them match LibRaw's entries for the
#: cameras named. The fifth is LibRaw's Sony ILCE-7S / ILCE-7SM2 entry: the a7S II is the SID camera.
XYZ_TO_CAMERA: dict[str, tuple[tuple[float, float, float], ...]] = {
    "brooks2019_camera1": ((1.0234, -0.2969, -0.2266), (-0.5625, 1.6328, -0.0469), (-0.0703, 0.2188, 0.6406)),
    "sony_ilce7r": ((0.4913, -0.0541, -0.0202), (-0.6130, 1.3513, 0.2906), (-0.1564, 0.2151, 0.7183)),
    "olympus_e_p5": ((0.8380, -0.2630, -0.0639), (-0.2887, 1.0725, 0.2496), (-0.0627, 0.1427, 0.5438)),
    "sony_rx100m2": ((0.6596, -0.2079, -0.0562), (-0.4782, 1.3016, 0.1933), (-0.0970, 0.1581, 0.5181)),
    "sony_ilce7s": ((0.5838, -0.1430, -0.0246), (-0.3497, 1.1477, 0.2297), (-0.0748, 0.1885, 0.5778)),
}

#: Linear sRGB (D65) -> XYZ, IEC 61966-2-1.
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))

#: Default levels of the synthetic sensor, in the 14-bit DN units of the ELD parameters (Sony a7S II's levels).
DEFAULT_BLACK_LEVEL = 512.0
DEFAULT_WHITE_LEVEL = 16383.0


def srgb_to_linear(x: Tensor) -> Tensor:
    """Exact inverse sRGB transfer curve (IEC 61966-2-1); any shape, values clipped to [0, 1] first."""
    x = x.clamp(0.0, 1.0)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    """sRGB transfer curve, extended linearly below 0 (slope 12.92) and by the power law above 1.

    Differentiable everywhere with finite gradients: the power branch only ever sees values >= 0.0031308 (the
    clamp is what keeps ``torch.where``'s unused branch from producing inf * 0 = NaN gradients). Callers that
    want display values clip the result.
    """
    safe = x.clamp(min=0.0031308)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * safe ** (1.0 / 2.4) - 0.055)


def inverse_smoothstep(y: Tensor) -> Tensor:
    """Inverse of ``3x^2 - 2x^3`` on [0, 1] (Brooks et al.): ``0.5 - sin(asin(1 - 2y) / 3)``; y clipped to [0, 1]."""
    y = y.clamp(0.0, 1.0)
    return 0.5 - torch.sin(torch.asin(1.0 - 2.0 * y) / 3.0)


def smoothstep(x: Tensor) -> Tensor:
    """``3x^2 - 2x^3`` on [0, 1] (the tone curve that :func:`inverse_smoothstep` undoes)."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def rgb_to_camera_matrices(weights: Tensor) -> Tensor:
    """Row-normalised linear-sRGB -> camera matrices from convex weights over :data:`XYZ_TO_CAMERA`.

    Args:
        weights: (N, M) non-negative, M = len(XYZ_TO_CAMERA); normalised here to sum to 1 per row.
    Returns:
        (N, 3, 3) float32 on ``weights.device``: ``normalise_rows(xyz_to_cam @ srgb_to_xyz)``, so (1, 1, 1) maps to
        (1, 1, 1) (camera white = white after white balance).
    """
    dev = weights.device
    xyz2cam = torch.tensor(list(XYZ_TO_CAMERA.values()), dtype=torch.float32, device=dev)  # (M, 3, 3)
    w = weights.float() / weights.float().sum(dim=1, keepdim=True)
    mixed = torch.einsum("nm,mij->nij", w, xyz2cam)
    rgb2cam = mixed @ torch.tensor(SRGB_TO_XYZ, dtype=torch.float32, device=dev)
    return rgb2cam / rgb2cam.sum(dim=2, keepdim=True)


def render_srgb(lin_cam: Tensor, wb: Tensor, cam_to_srgb: Tensor, *, clip: bool = True) -> Tensor:
    """Torch twin of the ISP stage: WB gains, clipped at 1, camera -> sRGB matrix, clip, sRGB curve (no tone curve).

    Args:
        lin_cam: (N, 3, H, W) linear raw camera RGB (e.g. a network output or :attr:`SynthBatch.target`).
        wb: (N, 3) white-balance multipliers (R, G, B), G == 1.
        cam_to_srgb: (N, 3, 3) white-balanced camera RGB -> linear sRGB.
    Returns:
        (N, 3, H, W) display sRGB in [0, 1] (``clip=False`` skips both clips, the highlight clip after the white
        balance and the final one, for losses).
    """
    x = lin_cam * wb[:, :, None, None]
    if clip:
        x = x.clamp(max=1.0)  # kernels.isp's highlight clip
    x = torch.einsum("nij,njhw->nihw", cam_to_srgb, x)
    if clip:
        x = x.clamp(0.0, 1.0)
    return linear_to_srgb(x)


def mosaic_rggb(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) RGGB mosaic (R at (0, 0), B at (1, 1)); H and W even."""
    packed = pack_rggb(rgb)
    return F.pixel_shuffle(packed, 2)


def pack_rggb(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 4, H/2, W/2) Bayer planes R, G1 (top right), G2 (bottom left), B."""
    if rgb.shape[-1] % 2 or rgb.shape[-2] % 2:
        raise ConfigError(f"mosaicing needs even height and width, got {tuple(rgb.shape[-2:])}")
    return torch.stack(
        (rgb[:, 0, 0::2, 0::2], rgb[:, 1, 0::2, 1::2], rgb[:, 1, 1::2, 0::2], rgb[:, 2, 1::2, 1::2]), dim=1
    )


# --- ELD noise parameters ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLinearFit:
    """``log(scale) = slope * log(K) + bias + N(0, sigma^2)`` (natural logs), one of ELD's ``Profile-1`` fits."""

    slope: float
    bias: float
    sigma: float


@dataclass(frozen=True)
class NoiseProfile:
    """One camera's calibrated ELD noise model, in 14-bit DN.

    Attributes:
        name: camera name as in the parameters file (e.g. ``SonyA7S2``).
        k_min, k_max: range of the system gain K (DN per electron); K is sampled log-uniformly.
        g_shape: Tukey-lambda shapes observed over the calibrated ISO range.
        g_scale: fit of the Tukey-lambda read-noise scale against K.
        r_scale: fit of the row-noise standard deviation against K.
        color_bias: per-ISO black-level offsets (R, G1, G2, B) in DN; row i goes with ``g_shape[i]``.
    """

    name: str
    k_min: float
    k_max: float
    g_shape: tuple[float, ...]
    g_scale: LogLinearFit
    r_scale: LogLinearFit
    color_bias: tuple[tuple[float, float, float, float], ...]

    def __post_init__(self) -> None:
        if not 0 < self.k_min <= self.k_max:
            raise ConfigError(f"{self.name}: need 0 < Kmin <= Kmax, got {self.k_min}, {self.k_max}")
        if not self.g_shape or len(self.color_bias) != len(self.g_shape):
            raise ConfigError(
                f"{self.name}: G_shape ({len(self.g_shape)}) and color_bias ({len(self.color_bias)}) must be "
                "non-empty and of equal length (one entry per calibrated ISO)"
            )


def load_noise_profiles(path: str | Path) -> dict[str, NoiseProfile]:
    """Read ``eld_camera_noise_params.json`` (format in ``../shared/data/README.md``) -> {camera: profile}.

    Raises:
        ConfigError: the file is missing, not JSON, or lacks a field (the message names the file and camera).
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"noise parameters file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read noise parameters {path}: {exc}") from exc
    profiles = {}
    for name, p in raw.items():
        try:
            fits = p["Profile-1"]
            profiles[name] = NoiseProfile(
                name=name,
                k_min=float(p["Kmin"]),
                k_max=float(p["Kmax"]),
                g_shape=tuple(float(v) for v in p["G_shape"]),
                g_scale=LogLinearFit(**{k: float(fits["G_scale"][k]) for k in ("slope", "bias", "sigma")}),
                r_scale=LogLinearFit(**{k: float(fits["R_scale"][k]) for k in ("slope", "bias", "sigma")}),
                color_bias=tuple(tuple(float(v) for v in row) for row in p["color_bias"]),  # type: ignore[misc]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: camera {name!r} has a missing or malformed field: {exc!r}") from exc
    if not profiles:
        raise ConfigError(f"{path}: no camera profiles")
    return profiles


# --- configuration and per-sample parameters ------------------------------------------------------------------------


#: White-balance gains of Brooks et al.'s unprocessing (daylight on the cameras they modelled): red, blue.
DAYLIGHT_RED_GAINS = (1.9, 2.4)
DAYLIGHT_BLUE_GAINS = (1.5, 1.9)


def check_range(name: str, value) -> tuple[float, float]:
    """``value`` as a float ``(lo, hi)`` with ``0 < lo <= hi`` (a uniform draw's bounds).

    Raises:
        ConfigError: not two numbers, or not ``0 < lo <= hi``; the message names ``name``.
    """
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be (lo, hi), got {value!r}") from None
    if not 0 < lo <= hi:
        raise ConfigError(f"{name} must satisfy 0 < lo <= hi, got ({lo}, {hi})")
    return lo, hi


@dataclass(frozen=True)
class SynthConfig:
    """How pairs are synthesised.

    Attributes:
        noise_params: path of the ELD parameters JSON.
        cameras: noise profiles to draw from (uniformly per sample); empty = every camera in the file.
        ratio_range: exposure ratio, uniform in [lo, hi].
        red_gain_range, blue_gain_range: white-balance gains, uniform (green is 1).
        black_level, white_level: levels of the synthetic 14-bit sensor in DN.
        tone_curve: undo a smoothstep tone curve before linearising (Brooks et al.).
    """

    noise_params: Path
    cameras: tuple[str, ...] = ()
    ratio_range: tuple[float, float] = (100.0, 300.0)
    red_gain_range: tuple[float, float] = DAYLIGHT_RED_GAINS
    blue_gain_range: tuple[float, float] = DAYLIGHT_BLUE_GAINS
    black_level: float = DEFAULT_BLACK_LEVEL
    white_level: float = DEFAULT_WHITE_LEVEL
    tone_curve: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "noise_params", Path(self.noise_params))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        for name in ("ratio_range", "red_gain_range", "blue_gain_range"):
            object.__setattr__(self, name, check_range(name, getattr(self, name)))
        if self.ratio_range[0] < 1:
            raise ConfigError(f"ratio_range must be >= 1 (a darkening), got {self.ratio_range}")
        if not 0 <= self.black_level < self.white_level:
            raise ConfigError(f"need 0 <= black_level < white_level, got {self.black_level}, {self.white_level}")


@dataclass
class SynthParams:
    """Per-sample random parameters of one batch (all tensors on the synthesiser's device, leading dim N).

    Attributes:
        ratio: (N,) exposure ratio.
        wb: (N, 3) white-balance gains (R, 1, B) that the ISP multiplies by.
        rgb_to_cam: (N, 3, 3) linear sRGB -> white-balanced camera RGB; ``cam_to_srgb`` is its inverse.
        camera: (N,) int64 index into :attr:`PairSynthesizer.camera_names`.
        k: (N,) system gain, DN per electron.
        tl_shape, tl_scale: (N,) Tukey-lambda read-noise shape and scale (DN).
        row_scale: (N,) row-noise standard deviation (DN).
        color_bias: (N, 4) per-channel offsets (R, G1, G2, B) in DN.
    """

    ratio: Tensor
    wb: Tensor
    rgb_to_cam: Tensor
    camera: Tensor
    k: Tensor
    tl_shape: Tensor
    tl_scale: Tensor
    row_scale: Tensor
    color_bias: Tensor

    @property
    def cam_to_srgb(self) -> Tensor:
        """(N, 3, 3) white-balanced camera RGB -> linear sRGB (rows sum to 1)."""
        return torch.linalg.inv(self.rgb_to_cam)

    def __len__(self) -> int:
        return int(self.ratio.shape[0])

    def repeat(self, n: int) -> "SynthParams":
        """A batch of ``n`` copies of sample 0 (one clip's camera, WB, K, ratio for every frame)."""
        return SynthParams(**{k: v[:1].expand(n, *v.shape[1:]).contiguous() for k, v in vars(self).items()})


@dataclass
class SynthBatch:
    """One synthetic batch (tensors on the synthesiser's device).

    Attributes:
        input: (N, 1, H, W) float32 network input, RGGB: ``dark * ratio`` (true-ratio amplification).
        target: (N, 3, H, W) float32 clean linear raw camera RGB in [0, 1] (no WB applied).
        dark: (N, 1, H, W) float32 normalised noisy mosaic in [0, 1] (what ``pack_raw`` gives with gain 1).
        raw_dn: (N, 1, H, W) float32 absolute noisy values in DN, in [0, white] (round to get a uint16 frame).
        clean_srgb: (N, 3, H, W) the input photos (the unprocessing's source).
        params: the per-sample parameters (ratio, WB, colour matrix, noise levels).
        black_level, white_level: levels in DN.
        cfa: always ``"RGGB"``.
    """

    input: Tensor
    target: Tensor
    dark: Tensor
    raw_dn: Tensor
    clean_srgb: Tensor
    params: SynthParams
    black_level: float
    white_level: float
    cfa: str = "RGGB"

    @property
    def ratio(self) -> Tensor:
        return self.params.ratio

    @property
    def wb(self) -> Tensor:
        return self.params.wb

    @property
    def cam_to_srgb(self) -> Tensor:
        return self.params.cam_to_srgb


def tukey_lambda_icdf(u: Tensor, lam: Tensor) -> Tensor:
    """Standard Tukey-lambda quantile ``(u^lam - (1-u)^lam) / lam``, ``log(u / (1-u))`` as lam -> 0.

    ``u`` in (0, 1); ``lam`` broadcastable to ``u``. Both branches are computed on safe inputs so no NaN appears.
    """
    small = lam.abs() < 1e-6
    safe_lam = torch.where(small, torch.ones_like(lam), lam)
    general = (u**safe_lam - (1.0 - u) ** safe_lam) / safe_lam
    return torch.where(small, torch.log(u) - torch.log1p(-u), general)


@dataclass
class _ProfileTable:
    """Noise profiles stacked into tensors for per-sample gathering (padded to the longest ISO list)."""

    log_k_min: Tensor  # (C,)
    log_k_max: Tensor  # (C,)
    g_scale: Tensor  # (C, 3) slope, bias, sigma
    r_scale: Tensor  # (C, 3)
    n_iso: Tensor  # (C,) int64
    g_shape: Tensor  # (C, L)
    color_bias: Tensor  # (C, L, 4)


class PairSynthesizer:
    """Makes :class:`SynthBatch` es from clean sRGB photos on one device. Stateless apart from its tables.

    Args:
        config: the synthesis settings.
        device: where the tensors live ("cpu", "cuda", torch.device).
        profiles: noise profiles (default: read from ``config.noise_params``).

    Raises:
        ConfigError: unknown camera names (the message lists the valid ones) or a bad parameters file.
    """

    #: number of U(0,1) draws per sample in :meth:`sample_params` (fixed so the draw order never changes).
    _N_UNIFORM = 7 + len(XYZ_TO_CAMERA)

    def __init__(
        self,
        config: SynthConfig,
        device: str | torch.device = "cpu",
        profiles: dict[str, NoiseProfile] | None = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        profiles = profiles if profiles is not None else load_noise_profiles(config.noise_params)
        names = config.cameras or tuple(profiles)
        unknown = [n for n in names if n not in profiles]
        if unknown:
            raise ConfigError(f"unknown noise camera(s) {unknown}; valid: {', '.join(profiles)}")
        self.camera_names: tuple[str, ...] = tuple(names)
        chosen = [profiles[n] for n in names]
        longest = max(len(p.g_shape) for p in chosen)
        dev = self.device

        def pad(values: Sequence, fill) -> list:
            return list(values) + [values[-1]] * (longest - len(values)) if values else [fill] * longest

        self._table = _ProfileTable(
            log_k_min=torch.tensor([math.log(p.k_min) for p in chosen], device=dev),
            log_k_max=torch.tensor([math.log(p.k_max) for p in chosen], device=dev),
            g_scale=torch.tensor([[p.g_scale.slope, p.g_scale.bias, p.g_scale.sigma] for p in chosen], device=dev),
            r_scale=torch.tensor([[p.r_scale.slope, p.r_scale.bias, p.r_scale.sigma] for p in chosen], device=dev),
            n_iso=torch.tensor([len(p.g_shape) for p in chosen], dtype=torch.int64, device=dev),
            g_shape=torch.tensor([pad(p.g_shape, 0.0) for p in chosen], device=dev),
            color_bias=torch.tensor([pad(p.color_bias, (0.0,) * 4) for p in chosen], device=dev),
        )

    # -- random parameters --------------------------------------------------------------------------------------
    def sample_params(self, n: int, generator: torch.Generator) -> SynthParams:
        """Draw ``n`` samples' parameters (camera, colour matrix, WB, ratio, K, noise levels) from ``generator``."""
        cfg, t, dev = self.config, self._table, self.device
        u = torch.rand((n, self._N_UNIFORM), generator=generator, device=dev)
        z = torch.randn((n, 2), generator=generator, device=dev)

        def uniform(col: int, lo_hi: tuple[float, float]) -> Tensor:
            lo, hi = lo_hi
            return lo + (hi - lo) * u[:, col]

        ratio = uniform(0, cfg.ratio_range)
        red = uniform(1, cfg.red_gain_range)
        blue = uniform(2, cfg.blue_gain_range)
        cam = torch.clamp((u[:, 3] * len(self.camera_names)).long(), max=len(self.camera_names) - 1)
        log_k = t.log_k_min[cam] + (t.log_k_max[cam] - t.log_k_min[cam]) * u[:, 4]
        iso = torch.minimum((u[:, 5] * t.n_iso[cam]).long(), t.n_iso[cam] - 1)
        # u[:, 6] is reserved (kept so adding a draw later does not shift the others).
        mix = u[:, 7 : 7 + len(XYZ_TO_CAMERA)] + 1e-8
        gs, rs = t.g_scale[cam], t.r_scale[cam]
        tl_scale = torch.exp(gs[:, 0] * log_k + gs[:, 1] + gs[:, 2] * z[:, 0])
        row_scale = torch.exp(rs[:, 0] * log_k + rs[:, 1] + rs[:, 2] * z[:, 1])
        ones = torch.ones_like(red)
        return SynthParams(
            ratio=ratio,
            wb=torch.stack((red, ones, blue), dim=1),
            rgb_to_cam=rgb_to_camera_matrices(mix),
            camera=cam,
            k=torch.exp(log_k),
            tl_shape=t.g_shape[cam, iso],
            tl_scale=tl_scale,
            row_scale=row_scale,
            color_bias=t.color_bias[cam, iso],
        )

    def params_at(self, camera: str, k: float, ratio: float, *, iso: int | None = None) -> SynthParams:
        """One sample's parameters with nothing random: ``camera``'s noise at system gain ``k``.

        The read- and row-noise scales are their log-linear fits' central values at ``k`` (no scatter); the
        Tukey-lambda shape and the channel bias are those of calibrated ISO ``iso`` (default: the middle one).
        White balance 1 and the identity colour matrix: meant for :meth:`add_noise` on real raw data (darkening a
        real frame), whose colour its file states.

        Raises:
            ConfigError: unknown camera, ``k`` <= 0, ``ratio`` < 1 or ``iso`` out of range.
        """
        c = self._camera_index(camera)
        if not (math.isfinite(k) and k > 0) or not (math.isfinite(ratio) and ratio >= 1):
            raise ConfigError(f"need k > 0 and ratio >= 1, got k={k}, ratio={ratio}")
        t, dev = self._table, self.device
        n_iso = int(t.n_iso[c])
        iso = n_iso // 2 if iso is None else int(iso)
        if not 0 <= iso < n_iso:
            raise ConfigError(f"iso index must be in [0, {n_iso}) for {camera}, got {iso}")
        log_k = math.log(k)
        gs, rs = t.g_scale[c], t.r_scale[c]
        one = torch.ones(1, device=dev)
        return SynthParams(
            ratio=one * float(ratio),
            wb=torch.ones(1, 3, device=dev),
            rgb_to_cam=torch.eye(3, device=dev)[None],
            camera=torch.tensor([c], dtype=torch.int64, device=dev),
            k=one * float(k),
            tl_shape=t.g_shape[c, iso].view(1),
            tl_scale=torch.exp(gs[0] * log_k + gs[1]).view(1),
            row_scale=torch.exp(rs[0] * log_k + rs[1]).view(1),
            color_bias=t.color_bias[c, iso].view(1, 4),
        )

    def k_range(self, camera: str) -> tuple[float, float]:
        """``(Kmin, Kmax)`` of ``camera``'s system gain (DN per electron)."""
        c = self._camera_index(camera)
        return math.exp(float(self._table.log_k_min[c])), math.exp(float(self._table.log_k_max[c]))

    def _camera_index(self, camera: str) -> int:
        if camera not in self.camera_names:
            raise ConfigError(f"unknown noise camera {camera!r}; valid: {', '.join(self.camera_names)}")
        return self.camera_names.index(camera)

    # -- the stages ---------------------------------------------------------------------------------------------
    def unprocess(self, srgb: Tensor, params: SynthParams) -> Tensor:
        """(N, 3, H, W) sRGB in [0, 1] -> (N, 3, H, W) linear raw camera RGB in [0, 1] (the training target)."""
        x = srgb.to(self.device, torch.float32).clamp(0.0, 1.0)
        if self.config.tone_curve:
            x = inverse_smoothstep(x)
        x = srgb_to_linear(x)
        x = torch.einsum("nij,njhw->nihw", params.rgb_to_cam, x)
        x = x / params.wb[:, :, None, None]
        return x.clamp(0.0, 1.0)

    def add_noise(self, packed_signal_dn: Tensor, params: SynthParams, generator: torch.Generator) -> Tensor:
        """ELD noise on a black-subtracted (N, 4, h, w) Bayer-plane signal in DN -> noisy signal in DN (not clipped)."""
        n, c, h, w = packed_signal_dn.shape
        dev = self.device
        k = params.k.view(n, 1, 1, 1)
        shot = torch.poisson(packed_signal_dn / k, generator=generator) * k
        u = torch.rand((n, c, h, w), generator=generator, device=dev).clamp_(1e-6, 1.0 - 1e-6)
        read = tukey_lambda_icdf(u, params.tl_shape.view(n, 1, 1, 1)) * params.tl_scale.view(n, 1, 1, 1)
        row = torch.randn((n, c, h, 1), generator=generator, device=dev) * params.row_scale.view(n, 1, 1, 1)
        quant = torch.rand((n, c, h, w), generator=generator, device=dev) - 0.5
        return shot + read + row + quant + params.color_bias.view(n, c, 1, 1)

    def synthesize(
        self, srgb: Tensor, generator: torch.Generator, params: SynthParams | None = None
    ) -> SynthBatch:
        """Clean sRGB photos -> one :class:`SynthBatch`.

        Args:
            srgb: (N, 3, H, W) float in [0, 1], H and W even (multiples of 32 for the network); any device
                (moved to the synthesiser's).
            generator: a ``torch.Generator`` on the synthesiser's device; consumed in a fixed order.
            params: per-sample parameters (default: drawn from ``generator`` first).
        """
        if srgb.dim() != 4 or srgb.shape[1] != 3:
            raise ConfigError(f"expected (N, 3, H, W) sRGB, got {tuple(srgb.shape)}")
        n = srgb.shape[0]
        if params is None:
            params = self.sample_params(n, generator)
        elif len(params) != n:
            raise ConfigError(f"params for {len(params)} samples given for a batch of {n}")
        black, white = self.config.black_level, self.config.white_level
        span = white - black
        target = self.unprocess(srgb, params)
        signal = pack_rggb(target) * (span / params.ratio.view(n, 1, 1, 1))
        noisy = self.add_noise(signal, params, generator)
        raw_dn = (noisy + black).clamp_(0.0, white)
        dark = ((raw_dn - black) / span).clamp_(0.0, 1.0)
        raw_dn, dark = F.pixel_shuffle(raw_dn, 2), F.pixel_shuffle(dark, 2)
        return SynthBatch(
            input=(dark * params.ratio.view(n, 1, 1, 1)).clamp_(max=INPUT_CEILING),
            target=target,
            dark=dark,
            raw_dn=raw_dn,
            clean_srgb=srgb.to(self.device, torch.float32),
            params=params,
            black_level=black,
            white_level=white,
        )

    def synthesize_clip(self, frames_srgb: Tensor, seed: int, *, chunk: int = 16) -> SynthBatch:
        """A dark raw clip: one camera / colour matrix / WB / K / ratio / noise level, fresh noise every frame.

        Args:
            frames_srgb: (T, 3, H, W) sRGB in [0, 1].
            seed: seeds a generator on the synthesiser's device; same seed -> same clip.
            chunk: frames synthesised per step (bounds peak memory). The noise drawn depends on it, so keep it
                fixed when comparing runs.
        """
        g = torch.Generator(self.device).manual_seed(int(seed))
        one = self.sample_params(1, g)
        parts = []
        for i in range(0, frames_srgb.shape[0], chunk):
            part = frames_srgb[i : i + chunk]
            parts.append(self.synthesize(part, g, one.repeat(part.shape[0])))
        first = parts[0]
        return SynthBatch(
            input=torch.cat([p.input for p in parts]),
            target=torch.cat([p.target for p in parts]),
            dark=torch.cat([p.dark for p in parts]),
            raw_dn=torch.cat([p.raw_dn for p in parts]),
            clean_srgb=torch.cat([p.clean_srgb for p in parts]),
            params=one.repeat(frames_srgb.shape[0]),
            black_level=first.black_level,
            white_level=first.white_level,
        )


def synth_video_frames(
    frames_srgb: Tensor,
    seed: int,
    synthesizer: PairSynthesizer | None = None,
    *,
    config: SynthConfig | None = None,
    device: str | torch.device = "cpu",
) -> SynthBatch:
    """Dark raw video from clean frames: the clip shares camera, WB, K and ratio; the noise is fresh per frame.

    Args:
        frames_srgb: (T, 3, H, W) sRGB in [0, 1] (e.g. decoded real footage, or one photo repeated T times for a
            static scene).
        seed: reproducibility seed.
        synthesizer: an existing :class:`PairSynthesizer`, or ``config`` (+ ``device``) to build one.
    """
    if synthesizer is None:
        if config is None:
            raise ConfigError("synth_video_frames needs a synthesizer or a config")
        synthesizer = PairSynthesizer(config, device)
    return synthesizer.synthesize_clip(frames_srgb, seed)


# --- SPEC §3 Eq. 5, torch twin ------------------------------------------------------------------------------------

#: Histogram edges b_i = (2^(8i/127) - 1) / 255, i = 0..127 (``amplifier.BIN_EDGES``).
GAIN_BIN_EDGES = tuple(float(b) for b in BIN_EDGES)
#: Bin weights: the darkest bin weighs 1, the brightest 1e-5 (``amplifier.BIN_WEIGHTS``).
GAIN_BIN_WEIGHTS = tuple(float(w) for w in BIN_WEIGHTS)


def gain_statistic(dark: Tensor) -> Tensor:
    """``S = sum w(r) / sum w(r) r`` per sample, so Eq. 5 is ``A = clamp(target * S, lo, hi)``.

    Args:
        dark: (N, ...) normalised raw in [0, 1] (values are clipped to [0, 1] first, as ``pack_raw`` does); the
            unamplified, unpadded frame.
    Returns:
        (N,) float64. Edge cases as ``kernels.estimate_gain``: ``inf`` for an all-black frame (sum w r = 0 < sum w;
        Eq. 5 then clamps to ``hi``), 0 for an all-saturated one (sum w = 0; clamps to ``lo``).

    A pixel falls in bin j when ``b_j <= r < b_{j+1}``; pixels ``>= b_127 = 1`` (saturated) weigh 0.
    """
    dev = dark.device
    r = dark.reshape(dark.shape[0], -1).to(torch.float64).clamp(0.0, 1.0)
    edges = torch.tensor(GAIN_BIN_EDGES, dtype=torch.float64, device=dev)
    weights = torch.tensor(GAIN_BIN_WEIGHTS + (0.0,), dtype=torch.float64, device=dev)
    idx = torch.bucketize(r, edges, right=True) - 1  # number of edges <= r, minus 1: bin index, 127 for r >= 1
    w = weights[idx.clamp(0, 127)]
    sw = w.sum(dim=1)
    swr = (w * r).sum(dim=1)
    black_or_saturated = torch.where(sw > 0, torch.full_like(sw, math.inf), torch.zeros_like(sw))
    return torch.where(swr > 0, sw / swr.clamp(min=1e-300), black_or_saturated)


def estimate_gain_torch(
    dark: Tensor, target: float = 0.01, lo: float = 1.0, hi: float = 300.0
) -> Tensor:
    """SPEC §3 Eq. 5: ``A = clamp(target * sum w(r) / sum w(r) r, lo, hi)`` per sample; (N, ...) -> (N,) float64."""
    return (target * gain_statistic(dark)).clamp(lo, hi)
