"""Real-data sanity check for ``redi-stream eval --real-data``: real raw frames, darkened, enhanced, compared.

Each real raw file (anything :class:`~redi_stream.capture.RawFileSource` reads: DNG / camera raw via LibRaw,
``.npy``, headerless ``.raw`` with parameters from ``--raw-params`` or a sidecar) is taken as the clean, well
exposed scene and made extremely dark the way a shorter exposure would be, in the file's own linear raw domain:

1. per 2x2 position, subtract the black level and normalise: ``r = clip((dn - black) / (white - black), 0, 1)``;
2. express the signal in the 14-bit DN units of the ELD noise parameters and divide by the exposure ratio:
   ``s = r * (16383 - 512) / ratio`` (the synthetic sensor of :mod:`redi_stream.model.synth`);
3. add ELD physics noise (:meth:`PairSynthesizer.add_noise`: Poisson shot noise at system gain K, Tukey-lambda
   read noise, row noise, the camera's per-channel bias, quantisation) for one calibrated camera at a fixed K
   (:meth:`PairSynthesizer.params_at`: the fits' central values, default K the geometric middle of the camera's
   range), so the noise relative to full scale is that camera's;
4. scale back to the file's levels, re-add the black level, round and clip to ``[0, white]``: a uint16 frame with
   the file's bit depth and metadata.

The dark frame then goes through what users run: ``ClassicEnhancer`` at gain 1 ("dark input as is"), at the true
ratio ("naive": amplify + demosaic + ISP), at the true ratio with denoising ("classic"), and ``RediEnhancer`` with
the automatic amplifier and with the true ratio. The reference is the *clean* file through the same pipeline at
gain 1 (``ClassicEnhancer``: OpenCV demosaic + our ISP with the file's white balance and colour matrix). PSNR and
SSIM of each output against it are reported, and optionally a 2x3 before/after JPEG per file is written.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from redi_stream.capture import HeaderlessParams, RawFileSource, collect_frame_paths
from redi_stream.errors import ConfigError
from redi_stream.evaluate import psnr_ssim
from redi_stream.frames import CFA, RawFrame
from redi_stream.model.net import RediNet
from redi_stream.model.runner import TorchRunner
from redi_stream.model.synth import DEFAULT_BLACK_LEVEL, DEFAULT_WHITE_LEVEL, PairSynthesizer, SynthConfig
from redi_stream.model.weights import WeightsMeta
from redi_stream.stream.enhance import ClassicEnhancer, RediEnhancer

#: Span of the ELD parameters' 14-bit DN scale (the synthetic sensor's white - black).
ELD_SPAN_DN = DEFAULT_WHITE_LEVEL - DEFAULT_BLACK_LEVEL
#: Largest JPEG written for a figure.
MAX_FIGURE_BYTES = 300_000
#: Method keys in report and figure order, with their labels.
METHODS = {
    "dark_as_is": "dark input, x1",
    "naive": "naive x{ratio:g}: amplify + demosaic",
    "classic": "classic x{ratio:g} + {denoise}",
    "redi_auto": "REDI, auto gain A={gain:.0f}",
    "redi_true": "REDI, true ratio x{ratio:g}",
}


@dataclass(frozen=True)
class RealDataConfig:
    """Settings of the real-data sanity check.

    Attributes:
        sources: raw files and/or folders (a folder contributes every raw frame in it).
        noise_params: ELD parameters JSON; camera: whose noise darkens the frames; k: its system gain (DN per
            electron, 14-bit units); None = the geometric middle of the camera's calibrated range.
        raw_params: JSON object mapping file names to :class:`HeaderlessParams` keys, for headerless files
            without a sidecar (e.g. ``docs/shared_raw_params.json`` for ``../shared/data/raw``).
        ratios: exposure ratios applied to every file; figure_ratio: the one shown in the figures (must be one of
            ``ratios``).
        figures_dir: where ``real_<file stem>_x<ratio>.jpg`` go (None: no figures); figure_width: pixels per panel.
        denoise: ``ClassicEnhancer`` denoiser of the "classic" column (``bilateral`` or ``nlm``).
        seed: the noise of file ``i`` at ratio ``j`` comes from ``(seed, i, j)``.
        device: network device.
    """

    sources: tuple[Path, ...]
    noise_params: Path
    camera: str = "SonyA7S2"
    k: float | None = None
    raw_params: Path | None = None
    ratios: tuple[float, ...] = (50.0, 100.0, 200.0)
    figure_ratio: float = 100.0
    figures_dir: Path | None = None
    figure_width: int = 400
    denoise: str = "bilateral"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(Path(p) for p in self.sources))
        object.__setattr__(self, "noise_params", Path(self.noise_params))
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        for name in ("raw_params", "figures_dir"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None else Path(v))
        if not self.sources:
            raise ConfigError("the real-data check needs raw files or folders")
        if not self.ratios or any(not 1 <= r <= 300 for r in self.ratios):
            raise ConfigError(f"real-data ratios must be in [1, 300], got {self.ratios}")
        if self.figures_dir is not None and self.figure_ratio not in self.ratios:
            raise ConfigError(f"figure ratio {self.figure_ratio:g} is not one of the ratios {self.ratios}")
        if self.k is not None and not (math.isfinite(self.k) and self.k > 0):
            raise ConfigError(f"k must be > 0, got {self.k}")
        if self.denoise not in ("bilateral", "nlm"):
            raise ConfigError(f"denoise must be 'bilateral' or 'nlm', got {self.denoise!r}")
        if self.figure_width < 64:
            raise ConfigError(f"figure_width must be >= 64, got {self.figure_width}")


def load_raw_params_map(path: str | Path | None) -> dict[str, HeaderlessParams]:
    """``{file name: HeaderlessParams}`` from a JSON object of sidecar-style entries (None -> empty).

    Raises:
        ConfigError: unreadable file, not an object, or an invalid entry (the message names the entry).
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read raw parameters {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object {{file name: parameters}}, got {type(data).__name__}")
    return {str(name): HeaderlessParams.from_dict(entry, source=f"{path} [{name}]") for name, entry in data.items()}


def read_real_frame(path: Path, params: dict[str, HeaderlessParams]) -> RawFrame:
    """Decode one file with :class:`RawFileSource` (``params[path.name]`` if present, else its own metadata)."""
    with RawFileSource(path, raw_params=params.get(path.name)) as src:
        return src.read(0)


def _position_map(values: Sequence[float], h: int, w: int) -> np.ndarray:
    """(H, W) float64 map of one value per 2x2 position (TL, TR, BL, BR)."""
    return np.tile(np.asarray(values, np.float64).reshape(2, 2), (h // 2, w // 2))


def _bias_order(cfa: CFA) -> list[int]:
    """Index into ELD's (R, G1, G2, B) channel biases for each 2x2 position (TL, TR, BL, BR) of ``cfa``."""
    order, greens = [], iter((1, 2))
    for colour in cfa.colors:
        order.append(0 if colour == 0 else 3 if colour == 2 else next(greens))
    return order


def darken(
    frame: RawFrame, ratio: float, synth: PairSynthesizer, camera: str, k: float, generator: torch.Generator
) -> RawFrame:
    """The frame as a ``ratio`` times shorter exposure with ``camera``'s ELD noise at gain ``k`` (module docstring).

    Frames of odd height or width lose their last row / column (whole 2x2 cells are needed); the returned frame
    has the same metadata, uint16 data in ``[0, white]``.
    """
    meta = frame.meta
    h, w = (frame.shape[0] // 2) * 2, (frame.shape[1] // 2) * 2
    dn = frame.data[:h, :w].astype(np.float64)
    black = _position_map(meta.black_level, h, w)
    span = meta.white_level - black
    r = np.clip((dn - black) / span, 0.0, 1.0)
    planes = np.stack([r[y::2, x::2] for y in (0, 1) for x in (0, 1)])[None]  # (1, 4, h/2, w/2), TL TR BL BR
    signal = torch.from_numpy(planes * (ELD_SPAN_DN / ratio)).float().to(synth.device)
    params = synth.params_at(camera, k, ratio)
    params.color_bias = params.color_bias[:, _bias_order(meta.cfa)]
    noisy = synth.add_noise(signal, params, generator)[0].double().cpu().numpy()
    out = np.empty((h, w), np.float64)
    for p, (y, x) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[y::2, x::2] = noisy[p]
    out = np.clip(np.rint(black + out * (span / ELD_SPAN_DN)), 0.0, meta.white_level)
    return RawFrame(data=np.ascontiguousarray(out.astype(np.uint16)), meta=meta, index=frame.index,
                    t_ns=frame.t_ns, name=f"{frame.name} x{ratio:g} dark")


def _classic(frame: RawFrame, gain: float, denoise: str | None = None) -> np.ndarray:
    with ClassicEnhancer(gain=gain, denoise=denoise or False) as enh:
        return enh.process(frame).rgb


def _figure(panels: Sequence[tuple[str, np.ndarray]], title: str, width: int, path: Path) -> int:
    """2x3 grid of labelled RGB panels (each ``width`` px wide) with a title bar, as a JPEG <= 300 KB."""
    import cv2

    h0, w0 = panels[0][1].shape[:2]
    ph = max(1, round(h0 * width / w0))
    bar = 22
    tiles = []
    for label, rgb in panels:
        tile = np.full((ph + bar, width, 3), 255, np.uint8)
        tile[bar:] = cv2.resize(rgb, (width, ph), interpolation=cv2.INTER_AREA)
        cv2.putText(tile, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    rows = [np.concatenate(tiles[i : i + 3], axis=1) for i in range(0, len(tiles), 3)]
    grid = np.concatenate(rows, axis=0)
    head = np.full((bar + 4, grid.shape[1], 3), 255, np.uint8)
    cv2.putText(head, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    bgr = cv2.cvtColor(np.concatenate([head, grid], axis=0), cv2.COLOR_RGB2BGR)
    path.parent.mkdir(parents=True, exist_ok=True)
    for quality in range(90, 29, -5):
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(buf) <= MAX_FIGURE_BYTES:
            break
    if not ok or len(buf) > MAX_FIGURE_BYTES:
        raise ConfigError(f"{path.name}: cannot fit the figure in {MAX_FIGURE_BYTES} bytes; use a smaller figure width")
    path.write_bytes(buf.tobytes())
    return len(buf)


def real_data_check(config: RealDataConfig, model: RediNet, *, progress: bool = False) -> dict[str, Any]:
    """Run the check on every file; return the JSON-able result (see :func:`format_real_table`).

    Args:
        model: the network to evaluate (with ``meta``, as :func:`redi_stream.evaluate.evaluate` uses).

    Raises:
        ConfigError: bad settings or parameters; CaptureError (FrameError): an unreadable file.
    """
    meta = getattr(model, "meta", None) or WeightsMeta()
    params_map = load_raw_params_map(config.raw_params)
    paths = [p for src in config.sources for p in collect_frame_paths(src)]
    synth = PairSynthesizer(SynthConfig(config.noise_params, cameras=(config.camera,)), "cpu")
    k_lo, k_hi = synth.k_range(config.camera)
    k = config.k if config.k is not None else math.sqrt(k_lo * k_hi)
    runner = TorchRunner(model, config.device)
    files = []
    try:
        for i, path in enumerate(paths):
            clean = read_real_frame(path, params_map)
            ref = _classic(clean, 1.0)
            entry: dict[str, Any] = {
                "file": path.name, "height": clean.shape[0], "width": clean.shape[1], "cfa": str(clean.meta.cfa),
                "black": list(clean.meta.black_level), "white": clean.meta.white_level,
                "warnings": list(clean.meta.warnings), "ratios": {},
            }
            for j, ratio in enumerate(config.ratios):
                g = torch.Generator().manual_seed(int(np.random.SeedSequence([config.seed, i, j]).generate_state(1)[0]))
                dark = darken(clean, ratio, synth, config.camera, k, g)
                outs = {
                    "dark_as_is": (_classic(dark, 1.0), 1.0),
                    "naive": (_classic(dark, ratio), ratio),
                    "classic": (_classic(dark, ratio, config.denoise), ratio),
                }
                with RediEnhancer(runner, meta, gain=None, gain_multiplier=1.0, smoothing_frames=0.0) as enh:
                    o = enh.process(dark)
                    outs["redi_auto"] = (o.rgb, o.gain)
                with RediEnhancer(runner, meta, gain=ratio, gain_multiplier=1.0) as enh:
                    outs["redi_true"] = (enh.process(dark).rgb, ratio)
                ref_c = ref[: dark.shape[0], : dark.shape[1]]
                scores = {}
                for name, (rgb, gain) in outs.items():
                    psnr, ssim = psnr_ssim(rgb, ref_c)
                    scores[name] = {"psnr": psnr, "ssim": ssim, "gain": float(gain)}
                entry["ratios"][f"x{ratio:g}"] = scores
                if config.figures_dir is not None and ratio == config.figure_ratio:
                    fig = config.figures_dir / f"real_{path.stem}_x{ratio:g}.jpg"
                    labels = {n: METHODS[n].format(ratio=ratio, gain=outs[n][1], denoise=config.denoise)
                              for n in METHODS}
                    panels = [(labels[n], outs[n][0]) for n in METHODS] + [("clean original, same ISP", ref_c)]
                    title = (f"{path.name}: darkened x{ratio:g} with {config.camera} noise at K={k:.3g}; "
                             f"PSNR vs clean: naive {scores['naive']['psnr']:.1f}, classic "
                             f"{scores['classic']['psnr']:.1f}, REDI {scores['redi_auto']['psnr']:.1f} / "
                             f"{scores['redi_true']['psnr']:.1f} dB")
                    size = _figure(panels, title, config.figure_width, fig)
                    entry.setdefault("figures", []).append({"path": str(fig), "bytes": size, "ratio": ratio})
            files.append(entry)
            if progress:
                print(f"real file {i + 1}/{len(paths)}: {path.name}", file=sys.stderr, flush=True)
    finally:
        runner.close()
    return {
        "camera": config.camera, "k": k, "k_range": [k_lo, k_hi], "ratios": list(config.ratios),
        "denoise": config.denoise, "seed": config.seed, "gain_target": meta.gain_target,
        "reference": "the clean file through ClassicEnhancer at gain 1 (OpenCV demosaic + our ISP), uint8",
        "files": files,
    }


def format_real_table(result: dict[str, Any]) -> str:
    """The real-data result as a fixed-width table (PSNR dB; the auto gain as a multiple of the true ratio)."""
    lines = [
        f"real-data sanity: darkened with {result['camera']} ELD noise at K={result['k']:.3g} "
        f"(range {result['k_range'][0]:.3g}-{result['k_range'][1]:.3g}); PSNR (dB) vs the clean file through the "
        "same ISP",
        f"{'file':<40}{'ratio':>6}{'dark x1':>9}{'naive':>8}{'classic':>9}{'REDI auto':>11}{'A/ratio':>9}"
        f"{'REDI true':>11}",
    ]
    for f in result["files"]:
        for key, s in f["ratios"].items():
            ratio = float(key[1:])
            lines.append(
                f"{f['file'][:39]:<40}{key:>6}{s['dark_as_is']['psnr']:>9.2f}{s['naive']['psnr']:>8.2f}"
                f"{s['classic']['psnr']:>9.2f}{s['redi_auto']['psnr']:>11.2f}{s['redi_auto']['gain'] / ratio:>9.2f}"
                f"{s['redi_true']['psnr']:>11.2f}"
            )
    lines.append(f"(classic = naive + {result['denoise']} denoise; figures: "
                 + (", ".join(fig["path"] for f in result["files"] for fig in f.get("figures", [])) or "none") + ")")
    return "\n".join(lines)
