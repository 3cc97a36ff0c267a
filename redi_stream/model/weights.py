"""Checkpoints: our ``redi-stream`` format, the official REDI format, metadata, and the packaged default.

Our format (``torch.save`` of a dict; loaded with ``weights_only=True``, so no code runs on load)::

    {"format": "redi-stream", "version": 1, "meta": WeightsMeta.to_dict(), "state_dict": {name: float32 tensor}}

``state_dict`` holds the folded (inference-form) weights of :class:`~redi_stream.model.net.RediNet` under its own
module names: 36 tensors, 783,432 parameters, about 3.1 MB. Storage is float32: storing float16 would halve the
file but round every weight (relative error ~5e-4), which changes outputs; 3.1 MB is within the 5 MB budget.

The official checkpoint of Lamba & Mitra (non-commercial licence: users may load their own copy; it is never
shipped) is ``{"model": state_dict}`` with 63 keys, each conv stored as ``weight_g`` (out, 1, 1, 1) and
``weight_v`` plus ``bias`` where SPEC §2 says so; keys may carry DataParallel's ``module.`` prefix. It is mapped
key by key, strictly, onto a weight-normalised :class:`RediNet`, which is then folded: that evaluates
``g * v / ||v||`` exactly as the original network does at every forward, so outputs match to float32 rounding.
"""

from __future__ import annotations

import enum
import importlib.resources
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from redi_stream.errors import WeightsError
from redi_stream.model.net import RediNet

FORMAT_NAME = "redi-stream"
FORMAT_VERSION = 1
ARCHITECTURE = "redi-v1"
DEFAULT_WEIGHTS_NAME = "redi_default.pt"


class OutputSpace(enum.StrEnum):
    """Colour space of a model's output."""

    LINEAR_CAMERA_RGB = "linear_camera_rgb"  # our models: the ISP stage applies WB, matrix, sRGB curve
    SRGB = "srgb"  # official checkpoint: rendered like SID's ground truth (Sony a7S II)


@dataclass(frozen=True, kw_only=True)
class WeightsMeta:
    """What a checkpoint's weights mean and where they come from.

    Attributes:
        architecture: network family; only ``"redi-v1"`` (SPEC §2) exists.
        output: :class:`OutputSpace` of the network's output (a plain string is converted).
        gain_target: the target constant of the amplification estimate (SPEC §3, Eq. 5:
            ``A = clamp(gain_target * sum w / sum w r, 1, 300)``) that the model was trained with. 0.01 for the
            official checkpoint; ours state the value calibrated for their training data.
        gain_multiplier_default: the user multiplier ``m`` to use when none is given (network input is
            ``r * A * m``). Official: 5.0, the value the authors' training-time code used (inside the clamp) and
            the middle of the demo's m in {1, 5, 8}; the pipeline applies it after the clamp, which differs only
            for frames whose estimate is clamped.
        provenance: JSON-able facts: training data, iterations, noise model, evaluation numbers, source file.
        version: free-form version string of these weights.
    """

    architecture: str = ARCHITECTURE
    output: OutputSpace = OutputSpace.LINEAR_CAMERA_RGB
    gain_target: float = 0.01
    gain_multiplier_default: float = 1.0
    provenance: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        if self.architecture != ARCHITECTURE:
            raise WeightsError(f"unknown architecture {self.architecture!r}; valid: {ARCHITECTURE!r}")
        try:
            object.__setattr__(self, "output", OutputSpace(self.output))
        except ValueError:
            valid = ", ".join(repr(o.value) for o in OutputSpace)
            raise WeightsError(f"unknown output space {self.output!r}; valid: {valid}") from None
        for name in ("gain_target", "gain_multiplier_default"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1e6:
                raise WeightsError(f"{name} must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.provenance, Mapping):
            raise WeightsError(f"provenance must be a dict, got {type(self.provenance).__name__}")
        object.__setattr__(self, "provenance", dict(self.provenance))
        object.__setattr__(self, "version", str(self.version))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict (``output`` as its string value)."""
        d = asdict(self)
        d["output"] = self.output.value
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WeightsMeta":
        """Inverse of :meth:`to_dict`.

        Raises:
            WeightsError: ``d`` is not a mapping, has unknown keys, or holds invalid values.
        """
        if not isinstance(d, Mapping):
            raise WeightsError(f"weights metadata must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise WeightsError(f"unknown weights metadata fields {unknown}; valid: {sorted(known)}")
        return cls(**dict(d))


def official_meta(source: str | os.PathLike[str] = "") -> WeightsMeta:
    """Metadata of the official REDI checkpoint (facts from SPEC §2, §3, §5)."""
    return WeightsMeta(
        output=OutputSpace.SRGB,
        gain_target=0.01,
        gain_multiplier_default=5.0,
        provenance={
            "source": "official REDI checkpoint (Lamba & Mitra, CVPR 2021); non-commercial licence, never shipped",
            "file": str(source),
            "data": "SID Sony a7S II (real low-light pairs)",
            "iterations": 1_000_000,
            "noise_model": "real sensor noise (SID)",
            "eval": {"sid_sony_test_psnr_db": 28.66, "sid_sony_test_ssim": 0.790},
        },
        version="official-cvpr2021",
    )


# --- official key mapping -------------------------------------------------------------------------------------
# Module prefixes of the official checkpoint (SPEC §2) -> ours (net.py drops the one-element Sequential wrappers).
_OFFICIAL_PREFIX_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), repl)
    for pattern, repl in (
        (r"^conv32x\.([01])\.0$", r"conv32x.\1"),
        (r"^RDB([123])\.dense_layers\.0\.conv\.0$", r"rdb\1.layers.0.conv"),
        (r"^RDB([123])\.dense_layers\.([1-9])\.conv\.1$", r"rdb\1.layers.\2.conv"),
        (r"^RDB([123])\.conv_1x1\.0$", r"rdb\1.conv1x1"),
        (r"^rdball\.0$", "rdball"),
        (r"^conv_rdb8x\.0$", "conv_rdb8x"),
        (r"^resblock8x\.conv([12])\.0$", r"resblock8x.conv\1"),
        (r"^conv32_8_cat\.([01])\.0$", r"conv32_8_cat.\1"),
        (r"^conv2x\.0$", "conv2x"),
        (r"^conv_2_8_32\.0$", "conv_2_8_32"),
    )
)
# Old-style torch.nn.utils.weight_norm names -> the parametrisation's names.
_OFFICIAL_PARAM_NAMES = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
    "bias": "bias",
}


def official_key_to_ours(key: str) -> str | None:
    """Map one official state-dict key (``module.`` prefix already stripped) to our weight-normalised name.

    Returns None for a key that names no part of the network.
    """
    prefix, _, param = key.rpartition(".")
    if param not in _OFFICIAL_PARAM_NAMES:
        return None
    for pattern, repl in _OFFICIAL_PREFIX_RULES:
        if pattern.match(prefix):
            return f"{pattern.sub(repl, prefix)}.{_OFFICIAL_PARAM_NAMES[param]}"
    return None


def _strip_data_parallel(state: Mapping[str, Any]) -> dict[str, Any]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def _check_and_load(model: RediNet, state: Mapping[str, Any], source: str, unmapped: list[str]) -> None:
    """Strictly load ``state`` (already in our names) into ``model``; WeightsError lists every mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(unmapped + [k for k in state if k not in expected])
    mismatched = sorted(
        f"{k}: checkpoint {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
        f" != network {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and (not isinstance(v, torch.Tensor) or v.shape != expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched}")
        raise WeightsError(f"{source}: checkpoint does not match the REDI network: " + "; ".join(parts))
    with torch.no_grad():
        model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)


def model_from_official_state(state: Mapping[str, Any], source: str = "<state_dict>") -> RediNet:
    """Build a folded, eval-mode :class:`RediNet` from an official-format state dict (strict key mapping).

    Raises:
        WeightsError: a key is missing, unexpected or of the wrong shape (all of them are listed).
    """
    state = _strip_data_parallel(state)
    mapped: dict[str, Any] = {}
    unmapped: list[str] = []
    for key, value in state.items():
        ours = official_key_to_ours(key)
        if ours is None:
            unmapped.append(key)
        else:
            mapped[ours] = value
    model = RediNet(weight_norm=True)
    _check_and_load(model, mapped, source, unmapped)
    model.fold().eval()
    model.meta = official_meta(source)
    return model


def _is_official_state(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and any(k.endswith(".weight_g") for k in obj)
    )


# --- public API -------------------------------------------------------------------------------------------------
def load_weights(path: str | os.PathLike[str]) -> RediNet:
    """Load a checkpoint (ours, or the official REDI one) into a folded, eval-mode :class:`RediNet` on the CPU.

    The returned model has a ``meta`` attribute (:class:`WeightsMeta`); for official checkpoints it says
    ``output="srgb"``, ``gain_target=0.01``.

    Raises:
        WeightsError: the file cannot be read (message names the path), is of neither format, or its keys or
            shapes do not match the network (all offending keys are listed).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # a file that is not a checkpoint: UnpicklingError, RuntimeError, IndexError, ...
        # The first sentence only: torch's longer texts go on to advise weights_only=False, which is not the point.
        detail = str(exc).strip().splitlines()[0].split(". ")[0][:200] if str(exc).strip() else ""
        raise WeightsError(f"{path}: not a PyTorch checkpoint (torch.load: {type(exc).__name__}"
                           f"{': ' + detail if detail else ''})") from exc
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME:
        return _load_ours(obj, str(path))
    if isinstance(obj, Mapping) and _is_official_state(obj.get("model")):
        return model_from_official_state(obj["model"], str(path))
    if _is_official_state(obj):  # a bare official state dict
        return model_from_official_state(obj, str(path))
    what = f"dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
    raise WeightsError(
        f"{path}: not a REDI checkpoint (expected {{'format': '{FORMAT_NAME}', ...}} or the official "
        f"{{'model': state_dict}} with weight_g/weight_v keys; found {what})"
    )


def _load_ours(obj: Mapping[str, Any], source: str) -> RediNet:
    version = obj.get("version")
    if version != FORMAT_VERSION:
        raise WeightsError(f"{source}: {FORMAT_NAME} format version {version!r} is not supported (valid: 1)")
    try:
        meta = WeightsMeta.from_dict(obj.get("meta", {}))
    except WeightsError as exc:
        raise WeightsError(f"{source}: {exc}") from exc
    state = obj.get("state_dict")
    if not isinstance(state, Mapping):
        raise WeightsError(f"{source}: 'state_dict' is missing or not a dict")
    model = RediNet(weight_norm=False)
    _check_and_load(model, state, source, [])
    model.eval()
    model.meta = meta
    return model


def save_weights(model: RediNet, path: str | os.PathLike[str], meta: WeightsMeta) -> None:
    """Write ``model``'s folded weights and ``meta`` in our format (float32, ~3.1 MB).

    ``model`` is not modified (a weight-normalised model is folded on a copy). The file is written to a temporary
    name beside ``path`` and renamed, so a reader never sees half a file.

    Raises:
        WeightsError: ``model`` is not a RediNet or ``meta`` is not a WeightsMeta, or the file cannot be written.
    """
    if not isinstance(model, RediNet):
        raise WeightsError(f"save_weights needs a RediNet, got {type(model).__name__}")
    if not isinstance(meta, WeightsMeta):
        raise WeightsError(f"save_weights needs a WeightsMeta, got {type(meta).__name__}")
    state = model.state_dict() if model.is_folded else model.folded_copy().state_dict()
    payload = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "meta": meta.to_dict(),
        "state_dict": {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in state.items()},
    }
    path = Path(path)
    try:
        atomic_torch_save(payload, path)
    except OSError as exc:
        raise WeightsError(f"cannot write weights file {path}: {exc}") from exc


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``: a reader (or a crash) never
    sees half a file. The temporary file is removed if anything fails; the error propagates."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def default_weights_path() -> Path | None:
    """``redi_stream/weights/redi_default.pt`` if the package ships it, else None."""
    candidate = importlib.resources.files("redi_stream").joinpath("weights", DEFAULT_WEIGHTS_NAME)
    if candidate.is_file():
        return Path(str(candidate))
    return None
