"""`redi-stream bench`: one tiny real run (model-only + DNG -> MP4), JSON contents, option validation."""

from __future__ import annotations

import json

import pytest
import torch

from redi_stream.bench import cpu_precision, main, padded, parse_sizes
from redi_stream.cli import main as cli_main
from redi_stream.errors import ConfigError


def test_bench_tiny_run_reports_model_only_and_e2e(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli_main(["bench", "--sizes", "62x94", "--frames", "3", "--iters", "1", "--device", "cpu",
                     "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    data = json.loads(out.read_text())
    assert printed == data
    assert data["weights"]["source"] in ("random", "packaged default")
    m = data["model_only"]["62x94"]
    ours = cpu_precision()  # the CLI's choice for 8-bit video: bf16 on an AMX CPU, else fp32
    assert m["input"] == [64, 96] and m["ours"] == f"{ours} runner"
    assert m["plain_fp32_ms"] > 0 and m["ours_ms"] > 0 and m["speedup_vs_plain_fp32"] > 0 and m["fp32_runner_ms"] > 0
    assert m["ours_max_abs_diff"] < (1e-4 if ours == "fp32" else 0.05) and "speedup_vs_plain_fp32_tuned" in m
    rows = {(r["precision"], r["setting"]) for r in data["model_only_rows"]}
    assert data["model_only_rows"][0]["setting"] == "eager"
    assert {(p, s) for p in ("fp32", "bf16") for s in ("fast", "eager_tuned", "runner")} <= rows
    runs = {"e2e": ours, **({"e2e_fp32": "fp32"} if ours == "bf16" else {})}
    assert runs.keys() <= data.keys() and ("e2e_fp32" in data) == (ours == "bf16")
    for key, precision in runs.items():
        e = data[key]["62x94"]
        assert e["settings"]["precision"] == precision
        assert e["frames_in_mp4"] == e["frames_out"] == 3 and e["all_frames_in_mp4"]
        assert e["bounding_stage"] in ("capture", "infer", "encode")
        assert e["fps"] > 0 and e["e2e_over_model_only"] > 0 and e["e2e_over_model_only_adjacent"] > 0
        assert {"decode", "infer", "encode"} <= set(e["stages_mean_ms"])


def test_bench_model_only_skips_e2e(capsys):
    assert main(["--sizes", "32x64", "--model-only", "--iters", "1", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "e2e" not in data and "32x64" in data["model_only"]


def test_sizes_and_padding():
    assert parse_sizes("1080p, 4k") == [("1080p", (1080, 1920)), ("4k", (2160, 3840))]
    assert parse_sizes("100x200") == [("100x200", (100, 200))]
    assert padded((1080, 1920)) == (1088, 1952) and padded((2160, 3840)) == (2176, 3872)
    with pytest.raises(ConfigError, match="valid: 720p, 1080p"):
        parse_sizes("8k")
    with pytest.raises(ConfigError, match="empty"):
        parse_sizes(" , ")


@pytest.mark.parametrize("argv, match", [
    (["--device", "tpu"], "valid: auto, cpu, cuda"),
    (["--threads", "many"], "auto or a positive integer"),
    (["--frames", "1"], "--frames >= 2"),
])
def test_bench_option_errors(argv, match):
    with pytest.raises(ConfigError, match=match):
        main(["--sizes", "32x32", *argv])


def test_bench_checks_the_json_path_first(tmp_path, capsys, monkeypatch):
    import redi_stream.bench as bench

    monkeypatch.setattr(bench, "load_bench_network", lambda w: pytest.fail("benchmarked before checking --json"))
    assert cli_main(["bench", "--sizes", "32x32", "--json", str(tmp_path / "no" / "b.json")]) == 1
    assert "cannot write" in capsys.readouterr().err


def test_subcommand_os_errors_are_one_line(tmp_path, capsys):
    from redi_stream.cli import EXIT_FAILED, _guarded

    def writes_into_a_file_as_if_a_folder():
        (tmp_path / "f").write_text("")
        (tmp_path / "f" / "out").mkdir(parents=True)

    assert _guarded(writes_into_a_file_as_if_a_folder) == EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"redi-stream: error: {tmp_path / 'f' / 'out'}: Not a directory"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_bench_cuda_without_cuda():
    assert cli_main(["bench", "--device", "cuda", "--sizes", "32x32"]) == 2


def test_steady_rate_ignores_the_fast_drain_at_the_end() -> None:
    from redi_stream.bench import steady_rate

    t = [0.0, 0.64, 1.28, 1.92, 2.56, 2.635]  # the last frame encoded right after the one before it
    assert steady_rate(t) == pytest.approx(1 / 0.64)
    assert steady_rate([1.0]) != steady_rate([1.0])  # nan
