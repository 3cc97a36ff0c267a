"""Evaluation engine: runs end to end on two tiny photos with a random-weights model and emits every key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from redi_stream.errors import ConfigError
from redi_stream.evaluate import EvalConfig, evaluate, format_table, held_out_stills, load_model_for_eval, main
from redi_stream.model.net import RediNet
from redi_stream.model.runner import TorchRunner
from redi_stream.model.weights import WeightsMeta, save_weights
from tests.conftest import write_tiny_photos_and_noise

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("cv2")
    root = tmp_path_factory.mktemp("eval")
    photos, noise = write_tiny_photos_and_noise(root, "test", 2, (70, 100), seed=1)
    torch.manual_seed(0)
    model = RediNet().fold().eval()
    model.meta = WeightsMeta(gain_target=0.05, version="random")
    weights = root / "w.pt"
    save_weights(model, weights, model.meta)
    return photos, noise, weights, model


def test_evaluate_emits_all_keys(tiny):
    photos, noise, _, model = tiny
    cfg = EvalConfig(test_dirs=(photos,), noise_params=noise, cameras=("TestCam",), count=2, video_frames=3,
                     ratios=(100.0, 300.0), demo_frames=2)
    result = evaluate(cfg, model=model)
    assert set(result["stills"]) == {"redi_true_ratio", "redi_auto_gain", "classic"}
    for entry in result["stills"].values():
        assert set(entry) == {"x100", "x300", "mean"}
        assert np.isfinite(entry["mean"]["psnr"]) and -1 <= entry["mean"]["ssim"] <= 1
    g = result["gain"]
    assert {"target", "auto_over_true_median", "auto_over_true_p05", "auto_over_true_p95", "clamped_fraction",
            "twin_max_rel_diff", "twin_agree"} <= set(g)
    assert g["twin_agree"], g["twin_max_rel_diff"]  # torch twin of Eq. 5 == production kernel
    v = result["video"]
    assert set(v["methods"]) == {"redi_true_ratio", "redi_auto_per_frame", "redi_auto_smoothed",
                                 "redi_auto_smoothed_tnr", "classic"}
    assert all(m["temporal_std"] >= 0 for m in v["methods"].values())
    assert v["methods"]["redi_true_ratio"]["gain_cv"] == 0.0
    assert np.isfinite(result["reference_vs_photo_psnr"])
    d = result["demo"]
    assert d["frames"] == 2 and 0.05 < d["dark_fraction"] < 0.95  # the demo photo has dark areas, and others
    assert set(d["methods"]) == {"redi_true_ratio", "redi_auto_gain", "classic"}
    assert all(len(m["dark_offset"]) == 3 and np.isfinite(m["psnr"]) for m in d["methods"].values())
    assert "redi_true_ratio" in format_table(result) and "dark offset" in format_table(result)
    json.dumps(result)  # JSON-able


def test_eval_cli_writes_json(tiny, tmp_path, capsys):
    photos, noise, weights, _ = tiny
    out = tmp_path / "r.json"
    rc = main([str(weights), "--test-data", str(photos), "--noise-params", str(noise), "--cameras", "TestCam",
               "--count", "1", "--video-frames", "0", "--ratios", "250", "--no-classic", "--demo-frames", "0",
               "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data["stills"]) == {"redi_true_ratio", "redi_auto_gain"} and "video" not in data
    assert "demo" not in data
    assert "PSNR" in capsys.readouterr().out
    assert load_model_for_eval(weights).meta.version == "random"


def test_eval_cli_checks_the_json_path_before_evaluating(tiny, tmp_path, capsys, monkeypatch):
    import redi_stream.evaluate as ev

    photos, noise, weights, _ = tiny
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking --json"))
    rc = main([str(weights), "--test-data", str(photos), "--noise-params", str(noise), "--cameras", "TestCam",
               "--json", str(tmp_path / "no" / "r.json")])
    assert rc == 2
    assert f"cannot write {tmp_path / 'no' / 'r.json'}: directory {tmp_path / 'no'} does not exist" in (
        capsys.readouterr().err)


def test_eval_config_validation(tiny):
    photos, noise, _, _ = tiny
    with pytest.raises(ConfigError, match="ratios"):
        EvalConfig(test_dirs=(photos,), noise_params=noise, ratios=(1000.0,))
    with pytest.raises(ConfigError, match="weights"):
        evaluate(EvalConfig(test_dirs=(photos,), noise_params=noise, cameras=("TestCam",), count=1))
    with pytest.raises(ConfigError, match="demo_frames"):
        EvalConfig(test_dirs=(photos,), noise_params=noise, demo_frames=-1)


def test_white_balance_of_the_held_out_pairs_is_a_setting(tiny, tmp_path, capsys):
    photos, noise, weights, _ = tiny
    with pytest.raises(ConfigError, match="red_gain_range"):
        EvalConfig(test_dirs=(photos,), noise_params=noise, red_gain_range=(2.0, 1.0))

    def gains(config):
        return {(round(float(b.params.wb[0, 0]), 4), round(float(b.params.wb[0, 2]), 4))
                for *_, b in held_out_stills(config)}

    base = dict(test_dirs=(photos,), noise_params=noise, cameras=("TestCam",), count=2, ratios=(100.0,))
    daylight = gains(EvalConfig(**base))
    assert all(1.9 <= r <= 2.4 and 1.5 <= b <= 1.9 for r, b in daylight)
    tungsten = gains(EvalConfig(**base, red_gain_range=(1.0, 1.3), blue_gain_range=(2.4, 3.0)))
    assert len(tungsten) == 2 and all(1.0 <= r <= 1.3 and 2.4 <= b <= 3.0 for r, b in tungsten)
    out = tmp_path / "e.json"
    assert main([str(weights), "--test-data", str(photos), "--noise-params", str(noise), "--cameras", "TestCam",
                 "--count", "1", "--ratios", "100", "--video-frames", "0", "--demo-frames", "0", "--no-classic",
                 "--red-gain-range", "1",
                 "1.3", "--blue-gain-range", "2.4", "3", "--json", str(out)]) == 0
    config = json.loads(out.read_text())["config"]
    assert config["red_gain_range"] == [1.0, 1.3] and config["blue_gain_range"] == [2.4, 3.0]
    assert "white balance red U(1, 1.3) blue U(2.4, 3)" in capsys.readouterr().out


def test_shipped_gain_target_is_calibrated_on_the_held_out_population(shared_data):
    """Acceptance 2 with less sampling noise than the README's 24 photos: over all 200 BSDS500 test photos at the
    eval's ratios (the production kernel on uint16 frames), the shipped constant gives a median auto / true ratio
    of about 1. The first shipped constant (0.116, a 64-frame fit) gave 0.92 here, 0.80 on the first 24 photos."""
    from redi_stream import kernels
    from redi_stream.evaluate import _raw_frame, held_out_stills
    from redi_stream.model.weights import default_weights_path, load_weights

    path = default_weights_path()
    assert path is not None
    target = load_weights(path).meta.gain_target
    cfg = EvalConfig(test_dirs=(shared_data / "clean/bsds500/test",),
                     noise_params=shared_data / "noise/eld_camera_noise_params.json", count=200, video_frames=0)
    q = []
    for i, _, ratio, _, batch in held_out_stills(cfg):
        frame = _raw_frame(batch, 0, index=i)
        meta = frame.meta
        q.append(kernels.estimate_gain(frame.data, meta.black_level_array, meta.white_level, target=target) / ratio)
    assert len(q) == 600
    assert 0.95 <= float(np.median(q)) <= 1.06, float(np.median(q))


def test_shipped_weights_do_not_lift_the_demo_clips_dark_areas():
    """The embedded demo clip is mostly dark, saturated surfaces. Weights that lift dark areas or veil them in colour
    show it here while scoring well on the BSDS500 stills: a GPU-trained candidate of 2026-12-04 was +0.3 dB on the
    held-out stills at x100 and lifted these pixels by +11.4/+22.6/+37.0 codes (R/G/B) at the true ratio on these 4
    frames. The shipped 0.1.3 weights: +0.0/+5.0/+11.7."""
    from redi_stream.evaluate import evaluate_demo_clip
    from redi_stream.model.weights import default_weights_path, load_weights

    path = default_weights_path()
    if path is None:
        pytest.skip("no packaged weights in this build")
    model = load_weights(path)
    with TorchRunner(model, "cpu") as runner:
        demo = evaluate_demo_clip(runner, model.meta, 4, classic=False)
    offset = demo["methods"]["redi_true_ratio"]["dark_offset"]
    assert max(abs(v) for v in offset) <= 20.0, offset
