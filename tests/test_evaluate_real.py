"""Real-data sanity check: darkening in the raw domain, the end-to-end report and figures, the eval CLI option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from redi_stream.errors import ConfigError
from redi_stream.evaluate import main
from redi_stream.evaluate_real import (
    ELD_SPAN_DN,
    MAX_FIGURE_BYTES,
    RealDataConfig,
    darken,
    format_real_table,
    load_raw_params_map,
    read_real_frame,
    real_data_check,
)
from redi_stream.frames import CFA, RawFrame, RawMeta
from redi_stream.model.net import RediNet
from redi_stream.model.synth import LogLinearFit, NoiseProfile, PairSynthesizer, SynthConfig
from redi_stream.model.weights import WeightsMeta, save_weights
from tests.conftest import ELD_LIKE_NOISE_PARAMS


def _synth(tmp_path: Path, bias=(10.0, 20.0, 30.0, 40.0)) -> PairSynthesizer:
    """A camera with almost no read/row noise and distinct channel biases (R, G1, G2, B)."""
    quiet = LogLinearFit(slope=0.0, bias=-20.0, sigma=0.0)
    prof = NoiseProfile("Quiet", 1.0, 1.0, (0.0,), quiet, quiet, (tuple(bias),))
    return PairSynthesizer(SynthConfig(tmp_path / "unused.json"), profiles={"Quiet": prof})


def _frame(value: float, cfa: CFA, black: float = 64.0, white: float = 4095.0, shape=(64, 96)) -> RawFrame:
    meta = RawMeta(cfa=cfa, black_level=(black,) * 4, white_level=white)
    return RawFrame(data=np.full(shape, value, np.uint16), meta=meta, index=0, t_ns=0, name="flat")


def test_darken_scales_signal_in_the_raw_domain_and_keeps_the_file_levels(tmp_path):
    synth = _synth(tmp_path, bias=(0.0, 0.0, 0.0, 0.0))
    clean = _frame(64 + 2015.5, CFA.RGGB)  # r = 0.5 of the 12-bit span 4031
    dark = darken(clean, 50.0, synth, "Quiet", 1.0, torch.Generator().manual_seed(0))
    assert dark.data.dtype == np.uint16 and dark.shape == clean.shape and dark.meta == clean.meta
    # signal in ELD units: 0.5 * 15871 / 50 = 158.7 electrons at K = 1 -> back in file DN: x 4031 / 15871
    expected = 64 + 0.5 * 4031 / 50
    assert float(dark.data.mean()) == pytest.approx(expected, abs=0.2)
    # Poisson shot noise at the camera's level, scaled to the file: std = sqrt(158.7) * 4031 / 15871
    assert float(dark.data.std()) == pytest.approx(np.sqrt(0.5 * ELD_SPAN_DN / 50) * 4031 / ELD_SPAN_DN, rel=0.1)


@pytest.mark.parametrize("cfa", [CFA.RGGB, CFA.GRBG, CFA.BGGR])
def test_darken_puts_each_channel_bias_on_its_colour(tmp_path, cfa):
    synth = _synth(tmp_path)
    dark = darken(_frame(64, cfa), 1.0, synth, "Quiet", 1.0, torch.Generator().manual_seed(0))
    means = [float(dark.data[y::2, x::2].astype(float).mean()) - 64 for y in (0, 1) for x in (0, 1)]
    scale = 4031 / ELD_SPAN_DN  # biases in ELD DN -> file DN; then rounded to whole DN (hence the tolerance)
    colours = cfa.colors
    for p, c in enumerate(colours):
        if c == 0:
            assert means[p] == pytest.approx(10 * scale, abs=0.55)
        elif c == 2:
            assert means[p] == pytest.approx(40 * scale, abs=0.55)
    greens = [means[p] for p, c in enumerate(colours) if c == 1]
    assert greens == pytest.approx([20 * scale, 30 * scale], abs=0.55)


@pytest.fixture()
def tiny_real(tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:66, 0:98]
    scene = 200 + 3000 * (0.5 + 0.5 * np.sin(xx / 9.0) * np.cos(yy / 7.0)) + rng.normal(0, 5, yy.shape)
    np.save(tmp_path / "scene.npy", np.clip(scene, 0, 4095).astype(np.uint16))
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"scene.npy": {"cfa": "GBRG", "black": 200, "white": 4095}}))
    noise = tmp_path / "eld.json"
    noise.write_text(json.dumps(ELD_LIKE_NOISE_PARAMS))
    torch.manual_seed(0)
    model = RediNet().fold().eval()
    model.meta = WeightsMeta(gain_target=0.05, version="random")
    return tmp_path, params, noise, model


def test_real_data_check_reports_and_draws(tiny_real):
    root, params, noise, model = tiny_real
    frame = read_real_frame(root / "scene.npy", load_raw_params_map(params))
    assert frame.meta.cfa is CFA.GBRG and frame.meta.black_level == (200.0,) * 4
    cfg = RealDataConfig(sources=(root / "scene.npy",), noise_params=noise, camera="TestCam", raw_params=params,
                         ratios=(50.0, 200.0), figure_ratio=200.0, figures_dir=root / "figs", figure_width=96)
    result = real_data_check(cfg, model)
    assert result["k"] == pytest.approx(1.0)  # sqrt(0.5 * 2.0)
    (entry,) = result["files"]
    assert entry["height"] == 66 and entry["width"] == 98 and entry["cfa"] == "GBRG"
    assert set(entry["ratios"]) == {"x50", "x200"}
    for scores in entry["ratios"].values():
        assert set(scores) == {"dark_as_is", "naive", "classic", "redi_auto", "redi_true"}
        assert all(np.isfinite(s["psnr"]) and -1 <= s["ssim"] <= 1 for s in scores.values())
        assert scores["dark_as_is"]["psnr"] < scores["naive"]["psnr"]  # amplifying brings the scene back
    (fig,) = entry["figures"]
    path = Path(fig["path"])
    assert path.name == "real_scene_x200.jpg" and 0 < path.stat().st_size <= MAX_FIGURE_BYTES
    import cv2

    img = cv2.imread(str(path))
    assert img.shape[1] == 3 * 96 and img.shape[0] > 2 * round(66 * 96 / 98)
    assert "REDI auto" in format_real_table(result)
    json.dumps(result)
    # same seed -> same numbers
    again = real_data_check(cfg, model)
    assert again["files"][0]["ratios"] == entry["ratios"]


def test_eval_cli_runs_the_real_data_check_alone(tiny_real, capsys):
    root, params, noise, model = tiny_real
    weights = root / "w.pt"
    save_weights(model, weights, model.meta)
    out = root / "r.json"
    rc = main([str(weights), "--noise-params", str(noise), "--cameras", "TestCam", "--real-data", str(root),
               "--raw-params", str(params), "--real-ratios", "100", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) == {"real_data"} and data["real_data"]["files"][0]["file"] == "scene.npy"
    assert "real-data sanity" in capsys.readouterr().out
    assert main([str(weights), "--noise-params", str(noise)]) == 2
    assert "--test-data" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="figure ratio"):
        RealDataConfig(sources=(root,), noise_params=noise, ratios=(50.0,), figure_ratio=100.0, figures_dir=root)


def test_shared_raw_params_decode_every_listed_file(shared_data):
    """docs/shared_raw_params.json (the data README's parameters) reads each headerless file it names."""
    params = load_raw_params_map(Path(__file__).resolve().parents[1] / "docs" / "shared_raw_params.json")
    assert len(params) == 5
    for name, p in params.items():
        frame = read_real_frame(shared_data / "raw" / name, params)
        assert frame.shape == (p.height, p.width) and frame.meta.cfa == p.cfa
        assert int(frame.data.max()) <= frame.meta.white_level
