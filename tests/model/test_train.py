"""Training: config validation, loss, gain calibration, datasets, a tiny run, exact resume, export, CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from redi_stream.errors import ConfigError, WeightsError
from redi_stream.model.data import (
    CleanImageDataset,
    PairedFolderDataset,
    RawPair,
    RawPairDataset,
    SIDDataset,
    parse_sid_list,
    read_raw_normalised,
    sid_exposure_s,
)
from redi_stream.model.net import RediNet
from redi_stream.model.synth import PairSynthesizer, SynthConfig
from redi_stream.model.train import (
    CSV_COLUMNS,
    TrainConfig,
    SHIFT_MARGIN,
    calibrate_gain_target,
    calibrate_synthetic,
    draw_shift,
    export_default,
    forward_unclamped,
    load_checkpoint,
    loss_terms,
    main,
    ms_ssim,
    msssim_levels,
    read_log,
    recalibrate_weights,
    record_eval,
    shift_consistency_loss,
    synthetic_calibration_pairs,
    train,
)
from tests.conftest import write_tiny_photos_and_noise

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    """Three smooth 80x96 photos and an ELD-format noise file, fabricated."""
    pytest.importorskip("cv2")
    return write_tiny_photos_and_noise(tmp_path_factory.mktemp("tiny"), "photos", 3, (80, 96), seed=0)


def tiny_config(tiny_data, out_dir: Path, **kw) -> TrainConfig:
    photos, noise = tiny_data
    base = dict(
        out_dir=out_dir, train_dirs=(photos,), val_dirs=(photos,), noise_params=noise, iterations=6,
        batch_size=2, crop=64, log_every=1, val_every=3, ckpt_every=3, val_count=2, calib_count=3, num_threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


# --- config -----------------------------------------------------------------------------------------------------


def test_config_validation(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="CUDA-only"):
        tiny_config(tiny_data, tmp_path, amp=True)
    with pytest.raises(ConfigError, match="multiple of 32"):
        tiny_config(tiny_data, tmp_path, crop=100)
    with pytest.raises(ConfigError, match="valid: synthetic, sid, paired"):
        tiny_config(tiny_data, tmp_path, data="imagenet")
    with pytest.raises(ConfigError, match="noise_params"):
        TrainConfig(out_dir=tmp_path, train_dirs=(tmp_path,))
    with pytest.raises(ConfigError, match="device"):
        tiny_config(tiny_data, tmp_path, device="tpu")
    assert tiny_config(tiny_data, tmp_path).lr_drop_iteration == 3


# --- loss -------------------------------------------------------------------------------------------------------


def test_ms_ssim_matches_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 192, 192, generator=g)
    y = (x + 0.1 * torch.rand(2, 3, 192, 192, generator=g)).clamp(0, 1)
    ours = ms_ssim(x, y)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0)
    assert float(ours) == pytest.approx(float(ref), abs=1e-5)
    assert msssim_levels(192) == 5 and msssim_levels(128) == 4 and msssim_levels(64) == 3


def test_loss_gradient_finite_for_negative_and_zero_outputs():
    pred = torch.tensor([-0.5, 0.0, 1e-9, 0.5, 1.5]).view(1, 1, 1, 5).expand(1, 3, 16, 5).contiguous()
    pred = pred.repeat(1, 1, 1, 4).requires_grad_(True)
    target = torch.rand_like(pred)
    loss, l1, ms = loss_terms(pred, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert (pred.grad[..., 0] != 0).any()  # below-zero outputs still get a gradient


def test_forward_unclamped_equals_forward_when_clamped():
    torch.manual_seed(0)
    m = RediNet().eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(forward_unclamped(m, x).clamp(0, 1), m(x))


# --- gain calibration -------------------------------------------------------------------------------------------


def test_calibration_closed_form():
    """Constant frames: S = 1 / v exactly, so T = median(ratio * v)."""
    darks = [torch.full((1, 8, 8), v) for v in (0.001, 0.002, 0.004)]
    ratios = [100.0, 200.0, 300.0]  # ratio * v = 0.1, 0.4, 1.2 -> T = 0.4
    cal = calibrate_gain_target(zip(darks, ratios))
    assert cal.target == pytest.approx(0.4, rel=1e-5)
    # A = clamp(0.4 / v) = 300 (clamped from 400), 200, 100 -> A / ratio = 3, 1, 1/3
    assert cal.median_ratio == pytest.approx(1.0, rel=1e-5)
    assert cal.clamped_fraction == pytest.approx(1 / 3)
    assert cal.n == 3
    # batched input and a degenerate (all black) frame, which is excluded
    cal2 = calibrate_gain_target([(torch.stack(darks + [torch.zeros(1, 8, 8)]), torch.tensor(ratios + [5.0]))])
    assert cal2.target == pytest.approx(0.4, rel=1e-5) and cal2.n == 3
    with pytest.raises(ConfigError):
        calibrate_gain_target([])


def test_calibration_frames_cycle_photos_with_fresh_draws(tiny_data):
    """More frames than photos: every photo again with a new camera/ratio/noise draw; frame j never depends on the
    count. (The first shipped weights used one frame per photo, 64 in all: a median off by 8%.)"""
    photos_dir, noise = tiny_data
    photos = CleanImageDataset(photos_dir, augment=False)
    synth = PairSynthesizer(SynthConfig(noise, ratio_range=(100.0, 300.0)))
    frames = list(synthetic_calibration_pairs(photos, synth, seed=0, count=7))
    assert len(frames) == 7 and len(photos) == 3
    assert frames[3][0].shape == frames[0][0].shape == (1, 1, 64, 96)  # photo 0 again, whole frame
    assert float(frames[3][1]) != float(frames[0][1]) and not torch.equal(frames[3][0], frames[0][0])
    again = list(synthetic_calibration_pairs(photos, synth, seed=0, count=4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(again, frames))
    other_seed = next(iter(synthetic_calibration_pairs(photos, synth, seed=1, count=1)))
    assert not torch.equal(other_seed[0], frames[0][0])
    assert TrainConfig(out_dir=Path("x"), train_dirs=(photos_dir,), noise_params=noise).calib_count >= 1024


def _weights_with_calibration(path: Path, target: float) -> Path:
    from redi_stream.model.weights import WeightsMeta, save_weights

    torch.manual_seed(0)
    model = RediNet().fold().eval()
    meta = WeightsMeta(gain_target=target, version="v1",
                       provenance={"gain_calibration": {"target": target, "n": 1}, "eval": {"result": {"x": 1}},
                                   "iterations": 5})
    save_weights(model, path, meta)
    return path


def test_recalibrate_weights_changes_only_the_constant(tmp_path, tiny_data):
    from redi_stream.model.weights import load_weights

    photos, noise = tiny_data
    src = _weights_with_calibration(tmp_path / "w.pt", 0.5)
    cal, info = calibrate_synthetic([photos, photos], noise, count=5, seed=3)
    assert cal.n == 5 and info["photos"].startswith("3 from") and info["frames"] == 5  # duplicates dropped
    assert cal == calibrate_synthetic([photos], noise, count=5, seed=3)[0]  # reproducible
    out = recalibrate_weights(src, tmp_path / "w2.pt", cal, info, version="v2")
    old, new = load_weights(src), load_weights(out)
    assert new.meta.gain_target == cal.target != old.meta.gain_target and new.meta.version == "v2"
    sa, sb = old.state_dict(), new.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    prov = new.meta.provenance
    assert prov["gain_calibration"]["target"] == cal.target and prov["gain_calibration"]["frames"] == 5
    assert "eval" not in prov and prov["eval_before_recalibration"]["gain_target"] == 0.5  # stale eval set aside
    assert prov["iterations"] == 5
    # record-eval accepts only a result measured with the weights' constant
    with pytest.raises(WeightsError, match="gain_target"):
        record_eval(out, {"config": {"gain_target": 0.5}})
    record_eval(out, {"config": {"gain_target": cal.target}, "gain": {"auto_over_true_median": 1.0}}, "cmd")
    assert load_weights(out).meta.provenance["eval"]["command"] == "cmd"


def test_cli_calibrate_and_record_eval(tmp_path, tiny_data, capsys):
    from redi_stream.model.weights import load_weights

    photos, noise = tiny_data
    w = _weights_with_calibration(tmp_path / "w.pt", 0.5)
    assert main(["calibrate", str(w), "--data", str(photos), "--noise-params", str(noise),
                 "--calib-count", "4"]) == 0
    target = load_weights(w).meta.gain_target
    assert target != 0.5 and f"gain_target {target:.6g}" in capsys.readouterr().out
    assert "calibrate" in load_weights(w).meta.provenance["gain_calibration"]["command"]
    res = tmp_path / "eval.json"
    res.write_text(json.dumps({"config": {"gain_target": target}}))
    assert main(["record-eval", str(w), str(res), "--command", "redi-stream eval ..."]) == 0
    assert load_weights(w).meta.provenance["eval"]["command"] == "redi-stream eval ..."
    assert main(["calibrate", str(w), "--data", str(photos), "--noise-params", str(noise),
                 "--calib-count", "0"]) == 2


# --- datasets ---------------------------------------------------------------------------------------------------


def test_clean_dataset_crop_fits_small_photos(tiny_data):
    ds = CleanImageDataset(tiny_data[0], crop=512)
    assert ds.crop_size == 64 and len(ds) == 3  # 80 px short side -> 64
    a = ds.sample(0, np.random.default_rng(1))
    b = ds.sample(0, np.random.default_rng(1))
    assert a.shape == (3, 64, 64) and torch.equal(a, b)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert ds.full(0).shape == (3, 64, 96)
    with pytest.raises(ConfigError, match="not found"):
        CleanImageDataset("/nonexistent/photos")


def test_sid_list_parsing_and_ratio(tmp_path):
    (tmp_path / "Sony_train_list.txt").write_text(
        "./Sony/short/00001_00_0.04s.ARW ./Sony/long/00001_00_10s.ARW ISO200 F8\n"
        "\n"
        "./Sony/short/00002_00_0.1s.ARW ./Sony/long/00002_00_10s.ARW ISO200 F8\n"
        "./Sony/short/00003_00_0.033s.ARW ./Sony/long/00003_00_30s.ARW ISO200 F8\n"
    )
    pairs = parse_sid_list(tmp_path, "Sony_train_list.txt")
    assert [p.ratio for p in pairs] == pytest.approx([250.0, 100.0, 300.0])  # 30/0.033 = 909 -> capped at 300
    assert pairs[0].dark == tmp_path / "Sony/short/00001_00_0.04s.ARW"
    assert sid_exposure_s("00001_00_0.1s.ARW") == 0.1
    with pytest.raises(ConfigError, match="exposure"):
        sid_exposure_s("00001_00.ARW")
    (tmp_path / "bad.txt").write_text("only_one_token\n")
    with pytest.raises(ConfigError, match="bad.txt:1"):
        parse_sid_list(tmp_path, "bad.txt")


def _coded_pair(h: int = 40, w: int = 50):
    """Dark mosaic whose value encodes (Bayer colour, position); bright RGB carries the same codes per channel.
    8 x dark: integer part = colour index, fraction = position (small, so that dark x ratio 2 stays below the
    network's input ceiling)."""
    y, x = np.mgrid[0:h, 0:w]
    pos = (y * w + x).astype(np.float32) / (h * w) * 0.001
    colour = np.where((y % 2 == 0) & (x % 2 == 0), 0, np.where((y % 2 == 1) & (x % 2 == 1), 2, 1))
    dark = (pos + colour.astype(np.float32)) / 8
    bright = np.stack([pos, pos, pos], axis=2)
    return dark, bright


def test_raw_pair_crops_and_flips_preserve_bayer_phase_and_alignment():
    dark, bright = _coded_pair()
    ds = RawPairDataset(
        [RawPair(Path("d"), Path("b"), 2.0)], crop=32, dark_reader=lambda p: dark, bright_reader=lambda p: bright
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        inp, tgt, ratio = ds.sample(0, rng)
        assert inp.shape == (1, 32, 32) and tgt.shape == (3, 32, 32) and ratio == 2.0
        d = inp[0].numpy() / ratio * 8
        colour = np.floor(d)
        assert np.all(colour[0::2, 0::2] == 0) and np.all(colour[1::2, 1::2] == 2)
        assert np.all(colour[0::2, 1::2] == 1) and np.all(colour[1::2, 0::2] == 1)
        np.testing.assert_allclose(d - colour, tgt[0].numpy(), atol=1e-6)  # same pixels in input and target
    inp, tgt, _ = ds.center(0)
    assert np.floor(inp[0, 0, 0].item() / 2.0 * 8) == 0


def test_sid_dataset_with_mocked_reader(tmp_path):
    (tmp_path / "list.txt").write_text("./Sony/short/00001_00_0.1s.ARW ./Sony/long/00001_00_10s.ARW ISO200 F8\n")
    dark, bright = _coded_pair(64, 64)
    ds = SIDDataset(tmp_path, "list.txt", crop=32, dark_reader=lambda p: dark, bright_reader=lambda p: bright)
    inp, tgt, ratio = ds.sample(0, np.random.default_rng(0))
    assert ratio == 100.0 and inp.shape == (1, 32, 32)


def test_paired_folder_dataset(tmp_path):
    d, b = tmp_path / "dark", tmp_path / "bright"
    d.mkdir()
    b.mkdir()
    rng = np.random.default_rng(0)
    bright = rng.random((64, 64, 3)).astype(np.float32)
    for name in ("a", "b"):
        np.save(d / f"{name}.npy", (bright[:, :, 1] / 50).astype(np.float32))
        np.save(b / f"{name}.npy", bright)
    (d / "ratios.json").write_text(json.dumps({"a": 120.0}))
    ds = PairedFolderDataset(d, b, crop=32)
    assert ds.pairs[0].ratio == 120.0
    assert 30 < ds.pairs[1].ratio < 70  # estimated from the data (~50 on green; R and B differ)
    inp, tgt, _ = ds.sample(1, np.random.default_rng(0))
    assert inp.shape == (1, 32, 32) and tgt.shape == (3, 32, 32)
    (d / "c.npy").write_bytes((d / "a.npy").read_bytes())
    with pytest.raises(ConfigError, match="no bright partner"):
        PairedFolderDataset(d, b, crop=32)


def test_rawpy_reader_on_real_dng(shared_data):
    mosaic = read_raw_normalised(shared_data / "raw" / "colorchart_canon550d_magiclantern.dng")
    assert mosaic.ndim == 2 and mosaic.dtype == np.float32
    assert 0 <= mosaic.min() and mosaic.max() <= 1


# --- training -----------------------------------------------------------------------------------------------------


def test_tiny_run_and_exact_resume(tmp_path, tiny_data):
    """6 iterations straight == 3, then a fresh process state resumed from the iteration-3 checkpoint, then 3."""
    straight = tiny_config(tiny_data, tmp_path / "a")
    last = train(straight)
    assert last.name == "ckpt_0000006.pt"
    rows = read_log(tmp_path / "a" / "log.csv")
    assert [r["iter"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert np.isfinite(rows[2]["val_psnr"]) and np.isfinite(rows[5]["val_psnr"])
    assert (tmp_path / "a" / "curves.png").stat().st_size > 0
    assert rows[2]["lr"] == pytest.approx(1e-4) and rows[3]["lr"] == pytest.approx(1e-5)  # drop after half

    # Interrupted run: only its first 3 iterations' checkpoint and its log (with rows past it) survive.
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "ckpt_0000003.pt", tmp_path / "b" / "ckpt_0000003.pt")
    shutil.copy(tmp_path / "a" / "log.csv", tmp_path / "b" / "log.csv")
    torch.manual_seed(1234)
    np.random.seed(1234)  # disturb global RNGs: resume must restore them
    resumed = tiny_config(tiny_data, tmp_path / "b", resume=tmp_path / "b" / "ckpt_0000003.pt")
    train(resumed)
    rows_b = read_log(tmp_path / "b" / "log.csv")
    assert [r["iter"] for r in rows_b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(rows, rows_b):
        for k in ("loss", "l1", "msssim", "lr", "val_psnr"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-6, abs=1e-9, nan_ok=True), (ra["iter"], k)
    ma = load_checkpoint(tmp_path / "a" / "ckpt_0000006.pt")["model"]
    mb = load_checkpoint(tmp_path / "b" / "ckpt_0000006.pt")["model"]
    for k in ma:
        torch.testing.assert_close(mb[k], ma[k], rtol=1e-6, atol=1e-7)

    with pytest.raises(ConfigError, match="seed"):
        train(replace(resumed, seed=5))


def test_time_budget_checkpoints_and_stops(tmp_path, tiny_data):
    cfg = tiny_config(tiny_data, tmp_path, iterations=1000, max_minutes=1e-6, val_every=0, ckpt_every=0)
    last = train(cfg)
    ckpt = load_checkpoint(last)
    assert 1 <= ckpt["iteration"] < 1000


def test_export_default_round_trips(tmp_path, tiny_data):
    from redi_stream.model.weights import load_weights

    ckpt = train(tiny_config(tiny_data, tmp_path, iterations=2, val_every=0, ckpt_every=0))
    out = export_default(ckpt, tmp_path / "w.pt", {"eval": {"psnr": 1.0}, "version": "test"})
    model = load_weights(out)
    state = load_checkpoint(ckpt)
    assert model.meta.output == "linear_camera_rgb" and model.meta.version == "test"
    assert model.meta.gain_target == pytest.approx(state["gain_calibration"]["target"])
    assert model.meta.provenance["iterations"] == 2 and model.meta.provenance["eval"] == {"psnr": 1.0}
    assert model.meta.provenance["schedule_iterations"] == 2 and model.meta.provenance["device"] == "cpu"
    ref = RediNet()
    ref.load_state_dict(state["model"])
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.eval()(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(WeightsError):
        export_default(out, tmp_path / "w2.pt")  # exported weights are not a training checkpoint


def test_cli_main(tmp_path, tiny_data, capsys):
    photos, noise = tiny_data
    args = ["--data", str(photos), "--noise-params", str(noise), "--out-dir", str(tmp_path / "run"),
            "--iterations", "1", "--batch-size", "1", "--crop", "64", "--threads", "1", "--calib-count", "2"]
    assert main(args) == 0
    assert main(["export", str(tmp_path / "run" / "ckpt_0000001.pt"), str(tmp_path / "w.pt")]) == 0
    assert (tmp_path / "w.pt").is_file()
    assert main(args[:-2] + ["--amp"]) == 2
    assert "CUDA-only" in capsys.readouterr().err


def test_cli_resume_alone_continues_the_saved_setup(tmp_path, tiny_data, capsys):
    """``--resume CKPT`` with no other option: the checkpoint's setup, written beside it, equal to a straight run."""
    photos, noise = tiny_data
    assert main(["--data", str(photos), "--noise-params", str(noise), "--out-dir", str(tmp_path / "a"),
                 "--iterations", "4", "--batch-size", "1", "--crop", "64", "--threads", "1", "--calib-count", "2",
                 "--val-every", "0", "--ckpt-every", "2", "--seed", "3"]) == 0
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "ckpt_0000002.pt", tmp_path / "b" / "ckpt_0000002.pt")
    ckpt = str(tmp_path / "b" / "ckpt_0000002.pt")
    assert main(["--resume", ckpt, "--log-every", "1"]) == 0  # a typed non-trajectory option is taken
    assert "resuming" in capsys.readouterr().out
    ma = load_checkpoint(tmp_path / "a" / "ckpt_0000004.pt")
    mb = load_checkpoint(tmp_path / "b" / "ckpt_0000004.pt")
    assert mb["config"]["log_every"] == 1 and mb["config"]["seed"] == 3
    for k in ma["model"]:
        torch.testing.assert_close(mb["model"][k], ma["model"][k], rtol=1e-6, atol=1e-7)

    assert main(["--resume", ckpt, "--crop", "96"]) == 2  # a typed trajectory option that differs is refused
    assert "crop: checkpoint 64 != now 96" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "none.pt")]) == 2
    assert "none.pt" in capsys.readouterr().err


# --- shift consistency --------------------------------------------------------------------------------------------


def test_shift_consistency_loss_is_zero_for_a_translation_equivariant_network_only():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 3, 3, padding=1)
    x = torch.rand(2, 1, 96, 128)
    moved = x[..., 5 : 5 + 64, 6 : 6 + 96]
    with torch.no_grad():
        out = conv(x)
        assert shift_consistency_loss(conv, moved, out, 5, 6) < 1e-6  # a convolution commutes with moves
        # Position-dependent output (a ramp over rows): a move changes what each pixel gets.
        ramp = torch.linspace(0, 0.2, 96).view(1, 1, -1, 1)
        pos = lambda t: conv(t) + ramp[..., : t.shape[-2], :]  # noqa: E731
        assert shift_consistency_loss(pos, moved, pos(x), 5, 6) > 1e-3
    with pytest.raises(ValueError, match="moves"):
        shift_consistency_loss(conv, moved, out, 32, 0)
    with pytest.raises(ValueError, match="moved input"):
        shift_consistency_loss(conv, x, out, 2, 0)
    with pytest.raises(ValueError, match="64x64"):
        shift_consistency_loss(conv, torch.rand(1, 1, 0, 32), torch.rand(1, 3, 32, 64), 2, 0)


def test_draw_shift_ranges():
    rng = np.random.default_rng(0)
    even = [draw_shift(rng, even=True) for _ in range(200)]
    assert all(dy % 2 == 0 and dx % 2 == 0 and 2 <= dy < SHIFT_MARGIN and 0 <= dx < SHIFT_MARGIN for dy, dx in even)
    anyp = [draw_shift(rng) for _ in range(400)]
    assert all(1 <= dy < SHIFT_MARGIN and 0 <= dx < SHIFT_MARGIN for dy, dx in anyp)
    assert {dy % 2 for dy, _ in anyp} == {0, 1} and len(set(anyp)) > 100


def test_moved_synthetic_view_is_the_same_scene_on_the_same_camera(tmp_path, tiny_data):
    """The second view of the consistency term: the clean crop moved, with the same camera, WB and ratio; an
    odd move puts the scene on other Bayer sites, which only a fresh mosaic (not a cropped one) can do."""
    from redi_stream.model.train import _build_data

    cfg = tiny_config(tiny_data, tmp_path, shift_consistency=1.0)
    source, *_ = _build_data(cfg, torch.device("cpu"))
    batch = source.get(0)
    x2 = source.moved(batch, 3, 1, 0)
    c = batch.input.shape[-1] - SHIFT_MARGIN
    assert x2.shape == (batch.input.shape[0], 1, c, c)
    b2 = source.synth.synthesize(batch.clean[..., 3 : 3 + c, 1 : 1 + c], torch.Generator().manual_seed(0),
                                 batch.params)
    torch.testing.assert_close(b2.target, batch.target[..., 3 : 3 + c, 1 : 1 + c], rtol=1e-5, atol=1e-6)
    assert not torch.equal(x2, batch.input[..., 3 : 3 + c, 1 : 1 + c])  # a new mosaic and new noise
    torch.testing.assert_close(x2, source.moved(batch, 3, 1, 0))  # seeded by the iteration


def test_shift_consistency_run_logs_the_term_resumes_exactly_and_fine_tunes_from_a_checkpoint(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="crop >= 64"):
        tiny_config(tiny_data, tmp_path, crop=32, shift_consistency=1.0)
    with pytest.raises(ConfigError, match="shift_consistency"):
        tiny_config(tiny_data, tmp_path, shift_consistency=-1.0)
    base = train(tiny_config(tiny_data, tmp_path / "base", iterations=2, val_every=0, ckpt_every=0))
    cfg = tiny_config(tiny_data, tmp_path / "a", shift_consistency=1.0, init_from=base)
    full = train(cfg)
    rows = read_log(tmp_path / "a" / "log.csv")
    assert all(r["shift_l1"] > 0 for r in rows)
    # Resume from the middle checkpoint: the same log rows and the same weights at the end.
    mid = tmp_path / "a" / "ckpt_0000003.pt"
    resumed_dir = tmp_path / "b"
    resumed_dir.mkdir()
    (resumed_dir / "log.csv").write_text((tmp_path / "a" / "log.csv").read_text())
    again = train(replace(cfg, out_dir=resumed_dir, resume=mid))
    rows_b = read_log(resumed_dir / "log.csv")
    for ra, rb in zip(rows, rows_b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["shift_l1"] == pytest.approx(rb["shift_l1"], rel=1e-5)
    a, b = load_checkpoint(full)["model"], load_checkpoint(again)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # The first iteration starts from the base checkpoint's network, not from a fresh initialisation.
    fresh = train(tiny_config(tiny_data, tmp_path / "c", shift_consistency=1.0, iterations=1, val_every=0,
                              ckpt_every=0))
    tuned = train(replace(cfg, out_dir=tmp_path / "d", iterations=1, val_every=0, ckpt_every=0))
    assert read_log(tmp_path / "d" / "log.csv")[0]["loss"] != pytest.approx(
        read_log(tmp_path / "c" / "log.csv")[0]["loss"], rel=1e-3)
    assert fresh != tuned
    # A resume with a different consistency weight is refused (it changes the trajectory).
    with pytest.raises(ConfigError, match="shift_consistency"):
        train(replace(cfg, out_dir=resumed_dir, resume=mid, shift_consistency=2.0))


# --- fine-tuning from exported weights, white-balance range -------------------------------------------------------


def test_init_from_exported_weights_starts_from_the_same_network(tmp_path, tiny_data):
    base = train(tiny_config(tiny_data, tmp_path / "base", iterations=2, val_every=0, ckpt_every=0))
    exported = export_default(base, tmp_path / "w.pt", {"version": "test"})
    one = dict(iterations=1, val_every=0, ckpt_every=0)
    from_ckpt = train(tiny_config(tiny_data, tmp_path / "a", init_from=base, **one))
    from_weights = train(tiny_config(tiny_data, tmp_path / "b", init_from=exported, **one))
    loss_a = read_log(tmp_path / "a" / "log.csv")[0]["loss"]
    loss_b = read_log(tmp_path / "b" / "log.csv")[0]["loss"]
    assert loss_b == pytest.approx(loss_a, rel=1e-4)  # folded weights re-parametrised: the same function
    a, b = load_checkpoint(from_ckpt)["model"], load_checkpoint(from_weights)["model"]
    for k in a:
        if k.endswith("original1"):  # v: direction only; compare the weights the convs compute
            continue
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-5)
    junk = tmp_path / "junk.pt"
    torch.save({"hello": torch.zeros(1)}, junk)
    with pytest.raises(WeightsError, match="init-from .*junk.pt"):
        train(tiny_config(tiny_data, tmp_path / "c", init_from=junk, **one))


def test_init_from_exported_weights_follows_the_models_device_and_dtype(tmp_path):
    """The folded weights are moved to the model's device and dtype (training builds the model on the GPU first)."""
    from redi_stream.model.train import load_initial_weights
    from redi_stream.model.weights import WeightsMeta, save_weights

    torch.manual_seed(0)
    src = RediNet().eval()
    path = tmp_path / "w.pt"
    save_weights(src, path, WeightsMeta(version="test"))
    model = RediNet().double()
    load_initial_weights(model, path)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x).float(), src(x.float()), rtol=0, atol=1e-5)


def test_white_balance_ranges_are_validated_and_old_checkpoints_resume_with_their_own(tmp_path, tiny_data):
    with pytest.raises(ConfigError, match="red_gain_range"):
        tiny_config(tiny_data, tmp_path, red_gain_range=(2.0, 1.0))
    with pytest.raises(ConfigError, match="blue_gain_range"):
        tiny_config(tiny_data, tmp_path, blue_gain_range=(0.0, 1.0))
    narrow = dict(red_gain_range=(1.9, 2.4), blue_gain_range=(1.5, 1.9))
    cfg = tiny_config(tiny_data, tmp_path / "a", iterations=2, val_every=0, ckpt_every=1, **narrow)
    train(cfg)
    # A checkpoint written before these fields existed: its run used the narrow daylight ranges.
    old = tmp_path / "a" / "ckpt_0000001.pt"
    state = torch.load(old, weights_only=False)
    for name in ("red_gain_range", "blue_gain_range"):
        del state["config"][name]
    torch.save(state, old)
    with pytest.raises(ConfigError, match=r"red_gain_range: checkpoint \[1.9, 2.4\]"):
        train(tiny_config(tiny_data, tmp_path / "a", iterations=2, resume=old, val_every=0, ckpt_every=0))
    train(replace(cfg, resume=old))
    assert [r["iter"] for r in read_log(tmp_path / "a" / "log.csv")] == [1, 2]


def test_white_balance_flags_reach_the_config(tmp_path, tiny_data):
    from redi_stream.model.train import build_parser, config_from_args

    photos, noise = tiny_data
    args = ["--data", str(photos), "--noise-params", str(noise), "--out-dir", str(tmp_path)]
    wide = config_from_args(build_parser().parse_args(args))
    assert wide.red_gain_range == (1.0, 3.0) and wide.blue_gain_range == (1.0, 3.0)
    daylight = config_from_args(build_parser().parse_args(
        args + ["--red-gain-range", "1.9", "2.4", "--blue-gain-range", "1.5", "1.9"]))
    assert daylight.red_gain_range == (1.9, 2.4) and daylight.blue_gain_range == (1.5, 1.9)
