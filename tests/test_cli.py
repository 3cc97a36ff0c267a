"""The command line end to end: outputs, and every bad input ending in one clear line and a non-zero exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from redi_stream.capture import make_dng
from redi_stream.cli import EXIT_FAILED, EXIT_USAGE, main


def _decoded_frames(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = sum(1 for _ in c.decode(s))
        return n, float(s.average_rate)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """8 small dark DNG frames at 30 fps."""
    d = tmp_path_factory.mktemp("clip")
    make_dng(None, d, n_frames=8, size=(64, 96), fps=30.0, ratio=100)
    return d


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A randomly initialised checkpoint in our format (speed and plumbing do not depend on the values)."""
    from redi_stream.model import RediNet, WeightsMeta, save_weights

    path = tmp_path_factory.mktemp("w") / "random.pt"
    save_weights(RediNet(), path, WeightsMeta(output="linear_camera_rgb", gain_target=0.1, version="test"))
    return path


def test_dng_folder_to_mp4_keeps_every_frame_and_the_fps(clip: Path, tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "out.mp4"
    assert main([str(clip), "--out", str(out), "--weights", str(weights), "--no-progress", "-q"]) == 0
    assert _decoded_frames(out) == (8, 30.0)


def test_temporal_denoise_runs_end_to_end(clip: Path, tmp_path: Path, weights: Path) -> None:
    out = tmp_path / "tnr.mp4"
    assert main([str(clip), "--out", str(out), "--weights", str(weights), "--temporal-denoise", "4", "-q"]) == 0
    assert _decoded_frames(out) == (8, 30.0)


def test_classic_model_to_png16_sequence(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "frames"
    assert main([str(clip), "--out", f"{out}/", "--model", "classic", "-q"]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 8
    import cv2

    img = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (64, 96, 3)


def test_last_line_says_what_was_written(clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.mp4"
    assert main([str(clip), "--out", str(out), "--model", "classic", "--no-progress", "--frames", "5"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"redi-stream: wrote {out} (5 frames)"
    assert main([str(clip), "--out", "null", "--model", "classic", "--no-progress"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "redi-stream: --out null: 8 frames enhanced and discarded, nothing written"


def test_glob_source_and_fps_override(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.mkv"
    assert main([f"{clip}/*.dng", "--out", str(out), "--model", "classic", "--fps", "12", "-q"]) == 0
    assert _decoded_frames(out) == (8, 12.0)


def test_fps_as_a_ratio_gives_the_exact_ntsc_rate(clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "n.mp4"
    assert main([str(clip), "--out", str(out), "--model", "classic", "--fps", "30000/1001", "-q"]) == 0
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
    with pytest.raises(SystemExit):
        main([str(clip), "--out", str(out), "--fps", "30/0"])
    assert "invalid frame rate '30/0'" in capsys.readouterr().err


def test_missing_path(tmp_path: Path, capsys) -> None:
    code = main([str(tmp_path / "nope"), "--out", str(tmp_path / "o.mp4"), "--model", "classic"])
    assert code == EXIT_FAILED
    assert "nope" in _error_line(capsys)
    assert not (tmp_path / "o.mp4").exists()


def test_empty_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o.mp4"), "--model", "classic"]) == EXIT_FAILED
    assert "empty" in _error_line(capsys)


def test_non_raw_file_among_frames_stop_and_skip(clip: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "mixed"
    shutil.copytree(clip, src)
    (src / "frame_000003b.dng").write_text("not a raw file")  # sorts between frames 3 and 4
    out = tmp_path / "stop.mp4"
    assert main([str(src), "--out", str(out), "--model", "classic", "-q"]) == EXIT_FAILED
    assert "frame_000003b.dng" in _error_line(capsys)
    n_stop, _ = _decoded_frames(out)  # what was encoded before the bad frame is kept and plays
    assert n_stop == 4  # exactly frames 0..3, every frame before the bad one
    out = tmp_path / "skip.mp4"
    assert main([str(src), "--out", str(out), "--model", "classic", "--on-error", "skip", "-q"]) == 0
    assert _decoded_frames(out)[0] == 8


def test_truncated_frame_is_named(clip: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "trunc"
    shutil.copytree(clip, src)
    victim = src / "frame_000005.dng"
    victim.write_bytes(victim.read_bytes()[:3000])
    assert main([str(src), "--out", str(tmp_path / "t.mp4"), "--model", "classic"]) == EXIT_FAILED
    assert "frame_000005.dng" in _error_line(capsys)


def test_frames_of_different_size(clip: Path, tmp_path: Path, capsys) -> None:
    src = tmp_path / "sizes"
    shutil.copytree(clip, src)
    make_dng(None, tmp_path / "big", n_frames=1, size=(96, 128))
    shutil.copy(tmp_path / "big" / "frame_000000.dng", src / "frame_000006.dng")
    assert main([str(src), "--out", str(tmp_path / "s.mp4"), "--model", "classic"]) == EXIT_FAILED
    line = _error_line(capsys)
    assert "frame_000006.dng" in line and "96x128" in line and "(separate photos? --stills takes each as it is)" in line


def test_stills_each_keep_their_size_gain_and_name(clip: Path, tmp_path: Path, capsys) -> None:
    """A folder of separate photos: each enhanced as it is (its own size, pattern and amplification), each image
    named after its file; two files of one name get the later one's number."""
    from redi_stream.cli import build_parser, build_run_config

    photos = tmp_path / "photos"
    photos.mkdir()
    make_dng(None, tmp_path / "big", n_frames=1, size=(96, 128), cfa="BGGR")
    shutil.copy(tmp_path / "big" / "frame_000000.dng", photos / "DSC01240.dng")
    shutil.copy(clip / "frame_000000.dng", photos / "DSC01234.dng")
    shutil.copy(clip / "frame_000001.dng", photos / "DSC01240.DNG")
    out = tmp_path / "out"
    assert main([str(photos), "--out", str(out) + "/", "--stills", "--model", "classic", "--no-progress"]) == 0
    sizes = {f.name: cv2.imread(str(f), cv2.IMREAD_UNCHANGED).shape for f in out.iterdir()}
    assert sizes == {"DSC01234.png": (64, 96, 3), "DSC01240.png": (64, 96, 3), "DSC01240_000002.png": (96, 128, 3)}
    assert "DSC01240.dng and an earlier frame share the name DSC01240" in capsys.readouterr().err
    cfg = build_run_config(build_parser().parse_args([str(photos), "--out", "o/", "--stills"]))
    assert cfg.gain_smoothing_frames == 0  # no smoothing across photos
    for argv, says in [
        (["--out", "o.mp4"], "--stills writes one image per photo, named after it: give --out DIR/"),
        (["--out", "o/", "--gain-smoothing", "4"], "--stills gives each photo its own"),
        (["--out", "o/", "--temporal-denoise", "4"], "--stills are separate photos"),
    ]:
        assert main([str(photos), "--stills", "--model", "classic", *argv]) == EXIT_USAGE
        assert says in _error_line(capsys)


def test_headerless_dump_is_not_read_by_libraws_size_guess(tmp_path: Path, capsys) -> None:
    src = tmp_path / "dumps"
    src.mkdir()
    bayer = np.random.default_rng(1).integers(64, 1024, (1080, 1920), dtype=np.uint16)
    for i in range(2):
        bayer.astype("<u2").tofile(src / f"f{i}.raw")  # 1920x1080 uint16: a size LibRaw reads as a GBRG frame
    out = tmp_path / "d.mp4"
    assert main([str(src), "--out", str(out), "--model", "classic"]) == EXIT_FAILED
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "f0.raw" in errors[0] and "no raw header" in errors[0] and "--raw-width" in errors[0]
    assert not out.exists() and "no file created" in err and "keeps" not in err  # no "keeps 0 frames"
    layout = ["--raw-width", "1920", "--raw-height", "1080", "--cfa", "GRBG", "--white", "1023"]
    assert main([str(src), "--out", str(out), "--model", "classic", "-q", *layout]) == 0
    assert _decoded_frames(out)[0] == 2


def test_portrait_dng_gives_a_portrait_video(tmp_path: Path) -> None:
    from tests.capture.conftest import _write_plain_dng

    src = tmp_path / "portrait"
    src.mkdir()
    bayer = np.full((64, 96), 200, np.uint16)
    bayer[:16, :8] = 3000  # a bright patch at the stored top-left
    _write_plain_dng(src / "a.dng", bayer, Orientation=6)  # camera turned a quarter clockwise
    out = tmp_path / "p.mp4"
    assert main([str(src), "--out", str(out), "--model", "classic", "-q"]) == 0
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24").mean(axis=2)
    assert frame.shape == (96, 64)  # upright: taller than wide
    corners = {"top right": frame[:8, 48:], "top left": frame[:8, :16], "bottom left": frame[-8:, :16],
               "bottom right": frame[-8:, 48:]}
    means = {k: v.mean() for k, v in corners.items()}
    assert max(means, key=means.get) == "top right"  # the patch turned with the picture
    assert means["top right"] > max(v for k, v in means.items() if k != "top right") + 50


def test_a_prores_master_carries_the_time_code_of_its_first_frame(clip: Path, tmp_path: Path) -> None:
    """The filmmaker's round trip: CinemaDNG frames with time codes -> ProRes in .mov (10-bit 4:2:2 unasked), its
    tmcd track at the code of the first frame written (--start included), every frame there."""
    from redi_stream.capture import RawFileSource, write_dng

    coded = tmp_path / "coded"
    coded.mkdir()
    with RawFileSource(clip) as src:
        for i in range(4):
            frame = src.read(i)
            write_dng(coded / f"A_{i:04d}.dng", frame.data, frame.meta, fps=30, timecode=f"01:00:00:{10 + i:02d}")
    out = tmp_path / "master.mov"
    assert main([str(coded), "--out", str(out), "--model", "classic", "-q", "--codec", "prores_ks",
                 "--start", "1"]) == 0
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.pix_fmt) == ("prores", "yuv422p10le")
        assert [st.metadata.get("timecode") for st in c.streams if st.type == "data"] == ["01:00:00:11"]
        assert len(list(c.decode(video=0))) == 3
    # Cut into files, each file starts at the code of its own first frame.
    assert main([str(coded), "--out", str(tmp_path / "cut.mov"), "--model", "classic", "-q", "--segment",
                 str(2 / 30)]) == 0
    for name, code in [("cut_000.mov", "01:00:00:10"), ("cut_001.mov", "01:00:00:12")]:
        with av.open(str(tmp_path / name)) as c:
            assert [st.metadata.get("timecode") for st in c.streams if st.type == "data"] == [code]


def test_segment_cuts_a_recording_into_files_and_names_them(clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rec.mkv"
    assert main([str(clip), "--out", str(out), "--model", "classic", "--no-progress", "--segment", "0.1s"]) == 0
    files = sorted(tmp_path.glob("rec_*.mkv"))
    assert [f.name for f in files] == ["rec_000.mkv", "rec_001.mkv", "rec_002.mkv"]  # 8 frames at 30 fps: 3 + 3 + 2
    assert [_decoded_frames(f)[0] for f in files] == [3, 3, 2]
    assert f"wrote {files[0]} .. rec_002.mkv (3 files) (8 frames)" in capsys.readouterr().err
    for argv, says in [
        (["--out", str(tmp_path / "f") + "/", "--segment", "10m"], "--segment cuts video files"),
        (["--out", str(tmp_path / "x.mp4"), "--segment", "-1"], "--segment must be a positive length, got -1 s"),
        (["--out", str(tmp_path / "x.mp4"), "--segment", "1d"], "invalid length '1d'; give seconds (600) or e.g."),
    ]:
        try:
            code = main([str(clip), "--model", "classic", *argv])
        except SystemExit as exc:  # argparse's own checks exit
            code = exc.code
        assert code == EXIT_USAGE and says in _error_line(capsys)


def test_follow_enhances_frames_as_a_capture_program_writes_them(clip: Path, tmp_path: Path, capsys) -> None:
    import threading

    live = tmp_path / "live"
    live.mkdir()
    frames = sorted(clip.glob("*.dng"))

    def write() -> None:  # as a capture program does: each frame under a hidden name, then renamed into place
        for f in frames:
            tmp = live / f".{f.name}.part"
            shutil.copy(f, tmp)
            tmp.rename(live / f.name)
            time.sleep(0.05)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    out = tmp_path / "live.mp4"
    assert main([str(live), "--follow", "1.5", "--out", str(out), "--model", "classic", "--no-progress", "-q"]) == 0
    writer.join(5)
    assert _decoded_frames(out)[0] == len(frames) == 8
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--follow", "0.5", "--out", str(tmp_path / "e.mp4"), "--model", "classic"]) == EXIT_FAILED
    assert "--follow: no frame arrived in" in _error_line(capsys) and not (tmp_path / "e.mp4").exists()
    for argv, says in [
        (["--camera", "fake", "--follow"], "a camera, the demo or a list of files does not grow"),
        ([str(frames[0]), str(frames[1]), "--follow"], "quote the glob ('frames/*.dng')"),
        ([str(live), "--follow", "0"], "--follow must wait between 0 and 24 h"),
    ]:
        assert main([*argv, "--out", str(tmp_path / "x.mp4"), "--model", "classic"]) == EXIT_USAGE
        assert says in _error_line(capsys)


def test_ten_bit_video_keeps_the_colours_of_the_eight_bit_one(clip: Path, tmp_path: Path) -> None:
    outs = {}
    for pix_fmt in ("yuv420p", "yuv420p10le"):
        out = tmp_path / f"{pix_fmt}.mp4"
        assert main([str(clip), "--out", str(out), "--model", "classic", "-q", "--pix-fmt", pix_fmt]) == 0
        with av.open(str(out)) as c:
            s = c.streams.video[0]
            assert s.codec_context.pix_fmt == pix_fmt
            frames = list(c.decode(s))
        assert len(frames) == 8
        outs[pix_fmt] = frames
    means = {k: np.mean([f.to_ndarray(format="rgb24").reshape(-1, 3).mean(0) for f in v], 0) for k, v in outs.items()}
    # Same colour: the channel means agree (the clip is far from grey, so a swapped or mis-scaled channel shows).
    assert np.abs(means["yuv420p"] - means["yuv420p10le"]).max() < 2.5, means
    assert means["yuv420p"][0] - means["yuv420p"][2] > 50


def test_linear_dng_is_rejected(tmp_path: Path, capsys) -> None:
    from tests.capture.conftest import _write_plain_dng

    src = tmp_path / "lin"
    src.mkdir()
    _write_plain_dng(src / "linear.dng", np.full((32, 48, 3), 1000, np.uint16), PhotometricInterpretation=34892)
    assert main([str(src), "--out", str(tmp_path / "l.mp4"), "--model", "classic"]) == EXIT_FAILED
    assert "linear.dng" in _error_line(capsys)


def test_dng_without_colour_matrix_warns_but_runs(tmp_path: Path, capsys) -> None:
    from tests.capture.conftest import _write_plain_dng

    src = tmp_path / "nomatrix"
    src.mkdir()
    bayer = np.random.default_rng(0).integers(0, 200, (64, 96), dtype=np.uint16)
    _write_plain_dng(src / "a.dng", bayer, ColorMatrix1=None)
    out = tmp_path / "n.mp4"
    assert main([str(src), "--out", str(out), "--model", "classic", "--no-progress"]) == 0
    assert "colour matrix" in capsys.readouterr().err
    assert _decoded_frames(out)[0] == 1


@pytest.mark.parametrize("target", ["missing_dir/o.mp4", "file_as_dir/o.mp4", "a_dir.mp4"])
def test_unwritable_output_fails_before_any_work(clip: Path, tmp_path: Path, capsys, target: str) -> None:
    (tmp_path / "file_as_dir").write_text("x")
    (tmp_path / "a_dir.mp4").mkdir()
    assert main([str(clip), "--out", str(tmp_path / target), "--model", "classic"]) == EXIT_FAILED
    assert Path(target).name in _error_line(capsys)


def test_a_trailing_slash_means_a_folder_of_frames_even_with_a_video_suffix(clip: Path, tmp_path: Path) -> None:
    assert main([str(clip), "--out", f"{tmp_path / 'o.mkv'}/", "--model", "classic", "--frames", "2", "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "o.mkv").iterdir()) == ["frame_000000.png", "frame_000001.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(clip: Path, tmp_path: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    assert main([str(clip), "--out", str(ro / "o.mp4"), "--model", "classic"]) == EXIT_FAILED
    assert "o.mp4" in _error_line(capsys)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["x", "--out", "o.mp4", "--model", "unet"], "valid: redi, classic"),
        (["x", "--out", "o.mp4", "--device", "tpu"], "valid: auto, cpu, cuda"),
        (["x", "--out", "o.mp4", "--cfa", "RGBW"], "valid: RGGB"),
        (["x", "--out", "o.mp4", "--crf", "99"], "--crf"),
        (["x", "--out", "o.mp4", "--crf", "60"], "--crf must be in 0..51, got 60"),
        (["x", "--out", "o.webm", "--crf", "64"], "--crf must be in 0..63 for libvpx-vp9, got 64"),
        (["x", "--out", "o.webm", "--qp", "20"], "--qp applies to libx264 and libx265 video output"),
        (["x", "--out", "frames/", "--qp", "20"], "--qp applies to libx264 and libx265 video output"),
        (["x", "--out", "o.mp4", "--qp", "52"], "--qp must be in 0..51, got 52"),
        (["x"], "--out"),
        ([], "exactly one input"),
        (["x", "--camera", "0"], "exactly one input"),
        (["x", "--out", "o.mp4", "--device", "cpu", "--precision", "fp16"], "fp16"),
        (["x", "--out", "o.mp4", "--temporal-denoise", "0.5"], "--temporal-denoise"),
        (["x", "--out", "o.mp4", "--cuda-net", "turbo"], "valid: fast, streams, sequential"),
        (["x", "--out", "o.mp4", "--tile", "512x512"], "larger than 768"),
        (["x", "--out", "o.webm", "--codec", "libx264"], "a WebM file holds VP8, VP9 or AV1 video, not libx264"),
        (["x", "--out", "o.mp4", "--raw-dtype", "<u4"], "unsupported --raw-dtype '<u4'; valid: 'u1' (uint8)"),
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], needle: str, capsys) -> None:
    assert main(argv) == EXIT_USAGE
    assert needle in _error_line(capsys)


@pytest.mark.parametrize("argv", [["x", "--out", "o.mp4", "--bogus"], ["x", "--out", "o.mp4", "--fps", "abc"],
                                  ["make-dng"], ["train", "--bogus"], ["eval"], ["bench", "--bogus"],
                                  ["demo", "--bogus"], ["doctor", "--bogus"]])
def test_argparse_errors_are_one_line(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0] and "--help')" in err[0], err  # no 20-line usage block


@pytest.mark.parametrize("extra, want", [([], "fast"), (["--cuda-net", "streams"], "streams"),
                                          (["--sequential"], "sequential"),
                                          (["--cuda-net", "sequential"], "sequential")])
def test_cuda_net_option(extra: list[str], want: str) -> None:
    from redi_stream.cli import build_parser, build_run_config

    cfg = build_run_config(build_parser().parse_args(["x", "--out", "o.mp4", *extra]))
    assert cfg.cuda_net == want


def test_small_tile_is_refused_before_the_output_is_touched(clip: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o.mp4"
    assert main([str(clip), "--out", str(out), "--tile", "512x1024"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tile 512x1024" in err[0], err  # the error alone: no model line, no sink report
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [(["--device", "cuda"], "--device cuda: no CUDA GPU"),
                                           (["--precision", "fp16"], "--precision fp16 needs a CUDA device")])
def test_device_errors_come_before_the_output_is_touched(clip: Path, tmp_path: Path, capsys, argv, needle) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: these options are valid here")
    out = tmp_path / "o.mp4"
    assert main([str(clip), "--out", str(out), *argv]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_cuda_only_options_on_the_cpu_are_warned_about(clip: Path, tmp_path: Path, weights: Path, capsys) -> None:
    out = tmp_path / "o.mp4"
    assert main([str(clip), "--out", str(out), "--weights", str(weights), "--device", "cpu", "--sequential",
                 "--no-progress"]) == 0
    assert "--no-cuda-graph apply to a CUDA device; ignored on the cpu" in capsys.readouterr().err


def test_classic_denoise_with_the_network_is_warned_about(clip: Path, tmp_path: Path, weights: Path, capsys) -> None:
    out = tmp_path / "o.mp4"
    assert main([str(clip), "--out", str(out), "--weights", str(weights), "--denoise", "--no-progress"]) == 0
    assert "--denoise applies to --model classic only" in capsys.readouterr().err
    assert _decoded_frames(out)[0] == 8


def test_missing_weights_file(clip: Path, tmp_path: Path, capsys) -> None:
    code = main([str(clip), "--out", str(tmp_path / "o.mp4"), "--weights", str(tmp_path / "w.pt")])
    assert code == EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "w.pt" in err[0], err  # the weights are read before the output is opened


def test_doctor_runs() -> None:
    assert main(["doctor"]) == 0


def test_doctor_says_where_a_preview_would_show(monkeypatch) -> None:
    from redi_stream.doctor import report

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert dict(report())["display"].startswith("none (DISPLAY and WAYLAND_DISPLAY unset)")
    monkeypatch.setenv("DISPLAY", ":7")
    rows = dict(report())
    assert rows["display"] == ":7" and "cameras" in rows


@pytest.mark.parametrize("fused", [True, False])
def test_doctor_says_whether_the_cpu_network_has_fused_convolutions(monkeypatch, fused: bool) -> None:
    from redi_stream.doctor import report
    from redi_stream.model import fast

    monkeypatch.setattr(fast, "FUSED_CONVS", fused)
    assert dict(report())["onednn"].startswith("fused convolutions available" if fused else "no fused convolutions")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_finalises_a_playable_file(tmp_path: Path, sig: int) -> None:
    src = tmp_path / "long"
    total = 1200
    make_dng(None, src, n_frames=total, size=(128, 192), fps=24.0)
    out = tmp_path / "sig.mp4"
    # DNG frames decode in ~0.1 ms here (the tifffile fast path), so the run is kept long by its length: ~3 s of
    # denoising classic model after start-up. The signal goes as soon as the first fragment is on disk.
    proc = subprocess.Popen(
        [sys.executable, "-m", "redi_stream.cli", str(src), "--out", str(out), "--model", "classic", "--denoise",
         "--no-progress", "--decode-workers", "1"],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 2000):
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + sig, err
    n, _ = _decoded_frames(out)
    assert 0 < n < total
    assert f"{n} frames" in err, err  # the summary states exactly how many frames the file holds


def test_make_dng_writes_a_sequence_the_tool_reads(tmp_path: Path) -> None:
    import cv2

    from redi_stream.capture import RawFileSource
    from redi_stream.frames import CFA
    from tests.conftest import write_grey_ramp_video

    out = tmp_path / "demo_clip"
    assert main(["make-dng", "--out", str(out), "--frames", "3", "--size", "64x96", "--cfa", "GBRG",
                 "--fps", "30", "--ratio", "200"]) == 0  # the photo shipped with scikit-image
    with RawFileSource(out) as src:
        assert len(src) == 3 and src.fps == 30
        f = src.read(2)
        assert f.shape == (64, 96) and f.meta.cfa is CFA.GBRG
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    assert main(["make-dng", str(photo), "--out", str(tmp_path / "from_png"), "--frames", "2"]) == 0
    with RawFileSource(tmp_path / "from_png") as src:
        assert len(src) == 2 and src.read(0).shape == (40, 60)  # the input's size by default
    video = write_grey_ramp_video(tmp_path / "v.mp4", 4, (48, 64), rate=25)
    assert main(["make-dng", str(video), "--out", str(tmp_path / "from_video"), "--frames", "4"]) == 0
    with RawFileSource(tmp_path / "from_video") as src:
        assert len(src) == 4 and src.read(3).shape == (48, 64)
        assert src.fps == 25  # the video's own rate (the command's default of 24 used to win)


def test_make_dng_says_when_the_video_is_shorter_than_asked(tmp_path: Path, capsys) -> None:
    from tests.conftest import write_grey_ramp_video

    video = write_grey_ramp_video(tmp_path / "v.mp4", 3, (48, 64))
    assert main(["make-dng", str(video), "--out", str(tmp_path / "c"), "--frames", "5"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"redi-stream: {video} has 3 frames: wrote 3 of the 5 asked"]


@pytest.mark.parametrize("argv, code, needle", [
    (["--frames", "0"], EXIT_USAGE, "--frames must be >= 1"),
    (["--size", "64"], EXIT_USAGE, "--size wants HxW"),
    (["--cfa", "RGBW"], EXIT_USAGE, "valid: RGGB"),
    (["nope.png"], EXIT_FAILED, "nope.png"),
    (["README.md"], EXIT_FAILED, "README.md as a video (Invalid data found when processing input); images are read "
                                 "by their suffix: .bmp,"),
])
def test_make_dng_bad_input_is_one_line(tmp_path: Path, capsys, argv: list[str], code: int, needle: str) -> None:
    if argv == ["README.md"]:
        (tmp_path / "README.md").write_text("# not a video\n")
        argv = [str(tmp_path / "README.md")]
    assert main(["make-dng", "--out", str(tmp_path / "o"), "--frames", "2", *argv]) == code
    line = _error_line(capsys)
    assert needle in line and "Errno" not in line


def test_make_dng_overwrite_replaces_every_frame_but_not_for_an_unreadable_input(tmp_path: Path, capsys) -> None:
    out = tmp_path / "clip"
    assert main(["make-dng", "--out", str(out), "--frames", "3", "--size", "32x32"]) == 0
    assert main(["make-dng", "--out", str(out), "--frames", "2", "--size", "32x32"]) == EXIT_FAILED
    assert "make-dng --overwrite" in _error_line(capsys)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    assert main(["make-dng", str(junk), "--out", str(out), "--overwrite"]) == EXIT_FAILED
    assert "junk.mp4" in _error_line(capsys)
    assert len(list(out.glob("frame_*.dng"))) == 3  # the failed run deleted nothing
    assert main(["make-dng", "--out", str(out), "--frames", "2", "--size", "32x32", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["frame_000000.dng", "frame_000001.dng"]  # no stale third frame


def test_a_library_error_carrying_bytes_is_told_as_text_once() -> None:
    from redi_stream.cli import _one_line

    try:
        try:
            raise OSError(b"Input/output error")  # as rawpy's LibRawIOError carries it
        except OSError as exc:
            raise RuntimeError("frame 4 (x.dng): truncated or unreadable (LibRaw: Input/output error)") from exc
    except RuntimeError as exc:
        assert _one_line(exc) == "frame 4 (x.dng): truncated or unreadable (LibRaw: Input/output error)"
    try:
        try:
            raise ValueError(b"bad \xff header")
        except ValueError as exc:
            raise RuntimeError("decode failed") from exc
    except RuntimeError as exc:
        assert _one_line(exc) == "decode failed: bad \ufffd header"


def test_raw_dtype_takes_numpy_names(tmp_path: Path) -> None:
    frames = tmp_path / "hr"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        (rng.poisson(3, (64, 96)) + 64).astype("<u2").tofile(frames / f"f{i}.raw")
    out = tmp_path / "h.mp4"
    assert main([str(frames), "--raw-width", "96", "--raw-height", "64", "--black", "64", "--white", "1023",
                 "--raw-dtype", "uint16", "--out", str(out), "--model", "classic", "-q"]) == 0
    assert _decoded_frames(out)[0] == 2


def test_start_resumes_a_sequence_under_its_own_frame_numbers(clip: Path, tmp_path: Path, capsys) -> None:
    frames = tmp_path / "seq"
    assert main([str(clip), "--out", f"{frames}/", "--model", "classic", "--start", "5", "-q"]) == 0
    assert sorted(p.name for p in frames.iterdir()) == ["frame_000005.png", "frame_000006.png", "frame_000007.png"]
    out = tmp_path / "trim.mp4"
    assert main([str(clip), "--out", str(out), "--model", "classic", "--start", "2", "--frames", "3", "-q"]) == 0
    with av.open(str(out)) as c:
        assert [round(float(f.time), 3) for f in c.decode(video=0)] == [0.0, 0.033, 0.067]  # from 0, not 2/30 s
    assert main([str(clip), "--out", str(tmp_path / "no.mp4"), "--model", "classic", "--start", "8"]) == EXIT_USAGE
    assert f"--start 8: {clip} has 8 frames (0..7)" in _error_line(capsys)
    assert not (tmp_path / "no.mp4").exists()


def test_crf_takes_the_vp9_and_av1_scale_for_those_encoders() -> None:
    from redi_stream.cli import build_parser, build_run_config

    assert build_run_config(build_parser().parse_args(["x", "--out", "o.webm", "--crf", "63"])).crf == 63
    cfg = build_run_config(build_parser().parse_args(["x", "--out", "o.mkv", "--codec", "libsvtav1", "--crf", "50"]))
    assert cfg.codec_for("o.mkv") == "libsvtav1" and cfg.crf == 50


def test_several_outputs_from_one_pass(tmp_path: Path, capsys) -> None:
    """A proxy video and 16-bit frames for grading from one run of the enhancer."""
    import av
    import cv2

    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=6, size=(64, 96), fps=24.0, ratio=100)
    video, frames = tmp_path / "proxy.mp4", f"{tmp_path}/frames/"
    assert main([str(clip), "--out", str(video), "--out", frames, "--model", "classic", "--no-progress"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"redi-stream: wrote {video} and {frames} (6 frames)"
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert len(pngs) == 6 and cv2.imread(str(pngs[3]), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with av.open(str(video)) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 6
    # The video, made from the 16-bit frames, has the PNG's levels and colour (x264 and 4:2:0 chroma move single
    # pixels of this grainy picture by ~12 codes, 8-bit frames alike, but not the channel means).
    png8 = cv2.cvtColor(cv2.imread(str(pngs[3]), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB) / 257.0
    np.testing.assert_allclose(decoded[3].reshape(-1, 3).mean(0), png8.reshape(-1, 3).mean(0), atol=2.5)

    assert main([str(clip), "--out", str(video), "--out", str(video)]) == 2
    assert "--out " + str(video) + " is given twice" in capsys.readouterr().err
    assert main([str(clip), "--out", str(tmp_path / "x.mp4"), "--out", str(tmp_path / "nodir" / "y.mp4"),
                 "--model", "classic"]) == 1
    assert "cannot write" in capsys.readouterr().err and not (tmp_path / "x.mp4").exists()


def test_a_single_raw_to_an_image_file(tmp_path: Path, capsys) -> None:
    """``redi-stream shot.dng --out shot.png`` writes shot.png; a sequence to x.jpg writes x_000000.jpg ..."""
    import cv2

    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=3, size=(64, 96), fps=24.0, ratio=100)
    one = clip / "frame_000001.dng"
    assert main([str(one), "--out", str(tmp_path / "shot.png"), "--model", "classic", "--no-progress"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"redi-stream: wrote {tmp_path / 'shot.png'} (1 frame)"
    assert cv2.imread(str(tmp_path / "shot.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert main([str(one), "--out", str(tmp_path / "shot.jpg"), "--model", "classic", "--no-progress"]) == 0
    assert cv2.imread(str(tmp_path / "shot.jpg"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert main([str(clip), "--frames", "1", "--out", str(tmp_path / "first.tif"), "--model", "classic"]) == 0
    assert (tmp_path / "first.tif").is_file()
    assert main([str(clip), "--out", str(tmp_path / "seq.jpg"), "--model", "classic", "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.glob("seq*")) == ["seq_000000.jpg", "seq_000001.jpg", "seq_000002.jpg"]


def test_a_shells_expanded_glob_is_taken_in_natural_order(tmp_path: Path, capsys) -> None:
    """``redi-stream clip/*.dng`` unquoted: the shell passes f1, f10, f2; the frames go f1, f2, f10, as from the
    folder, and the folder's sound is found."""
    import shutil
    import wave

    import cv2

    made = tmp_path / "made"
    make_dng(None, made, n_frames=3, size=(64, 96), fps=24.0, ratio=100)
    clip = tmp_path / "clip"
    clip.mkdir()
    for src, name in zip(sorted(made.glob("*.dng")), ("f1.dng", "f2.dng", "f10.dng")):
        shutil.copy(src, clip / name)
    shell_order = [str(clip / n) for n in ("f1.dng", "f10.dng", "f2.dng")]
    assert main([*shell_order, "--out", f"{tmp_path}/listed/", "--model", "classic", "--no-progress"]) == 0
    assert main([str(clip), "--out", f"{tmp_path}/folder/", "--model", "classic", "--no-progress"]) == 0
    def frames(folder: str) -> list[np.ndarray]:
        return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((tmp_path / folder).glob("*.png"))]

    for a, b in zip(frames("listed"), frames("folder"), strict=True):
        np.testing.assert_array_equal(a, b)
    with wave.open(str(clip / "take.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    capsys.readouterr()
    assert main([*shell_order, "--out", str(tmp_path / "o.mp4"), "--model", "classic", "--no-progress"]) == 0
    assert f"sound: {clip / 'take.wav'}" in capsys.readouterr().err


def test_hot_pixels_flag_reaches_the_config() -> None:
    from redi_stream.cli import build_parser, build_run_config

    assert build_run_config(build_parser().parse_args(["x", "--out", "o.mp4", "--hot-pixels"])).hot_pixels is True
    assert build_run_config(build_parser().parse_args(["x", "--out", "o.mp4"])).hot_pixels is False
