"""bench_model on tiny sizes: the rows' contents, baseline first, validation."""

from __future__ import annotations

import json

import pytest

from redi_stream.errors import ConfigError
from redi_stream.model.bench import bench_model, format_table


def test_cpu_bench_rows_are_json_able_with_baseline_first():
    rows = bench_model(sizes=[(64, 64), (32, 96)], device="cpu", warmup=0, iters=1)
    assert [(r["precision"], r["setting"]) for r in rows[:3]] == [("fp32", "eager"), ("fp32", "channels_last"),
                                                                  ("fp32", "fast")]
    assert len(rows) == 6 and rows[3]["size"] == [32, 96]
    assert rows[0]["ratio_vs_baseline"] == 1.0
    for r in rows:
        assert r["ms_per_frame"] > 0 and r["best_ms_per_frame"] <= r["ms_per_frame"]
        assert r["max_abs_diff"] < 1e-5  # every CPU fp32 setting computes the same function
        assert "threads" in r["device"]
    json.dumps(rows)
    assert "channels_last" in format_table(rows)


def test_cpu_bench_explicit_settings_and_bf16():
    rows = bench_model(sizes=[(32, 32)], precisions=["bf16"], settings=["fast"], warmup=0, iters=1, batch=2)
    assert [(r["precision"], r["setting"]) for r in rows] == [("fp32", "eager"), ("bf16", "fast")]
    assert rows[1]["max_abs_diff"] < 0.1 and rows[1]["batch"] == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"settings": ["graph"]}, "valid: eager, channels_last, fast, compile"),
        ({"precisions": ["fp16"]}, "needs CUDA"),
        ({"sizes": [(33, 64)]}, "multiple of 32"),
        ({"iters": 0}, "iters >= 1"),
    ],
)
def test_bench_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        bench_model(**{"sizes": [(32, 32)], "warmup": 0, "iters": 1, **kwargs})
