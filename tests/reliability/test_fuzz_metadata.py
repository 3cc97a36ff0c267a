"""Fuzzing metadata parsing: HeaderlessParams from dicts and JSON sidecars, CFA.from_pattern, RawMeta validation.
Whatever the input, the result is a valid object or the one documented exception -- never another one."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redi_stream.capture import HeaderlessParams
from redi_stream.errors import ConfigError
from redi_stream.frames import CFA, RawMeta

FIELDS = ["width", "height", "cfa", "black", "white", "dtype", "offset", "bits"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-5, 70_000),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-10, 70_000),
    st.sampled_from(["RGGB", "bggr", "GrBg", "XTRANS", "", "u1", "<u2", ">u2", "uint16", "float32", "<u4", "12"]),
    st.text(max_size=8),
)
values = st.one_of(scalars, st.lists(scalars, max_size=6), st.dictionaries(st.text(max_size=4), scalars, max_size=3))
param_dicts = st.dictionaries(st.sampled_from(FIELDS), values, max_size=8) | st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=6)


def _check_valid(p: HeaderlessParams) -> None:
    for v in (p.width, p.height):
        assert v is None or (isinstance(v, int) and v >= 1)
    assert isinstance(p.cfa, CFA)
    assert len(p.black_level) == 4 and all(isinstance(b, float) and math.isfinite(b) and b >= 0 for b in p.black)
    assert p.white is None or (math.isfinite(p.white) and p.white > max(p.black))
    assert p.dtype in ("u1", "<u2", ">u2")
    assert isinstance(p.offset, int) and p.offset >= 0
    assert p.bits is None or 1 <= p.bits <= 16
    try:
        meta = p.meta()
    except ConfigError:  # e.g. bits=8 with black 300: the default white does not exceed black
        return
    assert meta.white_level > max(meta.black_level) and meta.cfa == p.cfa


@settings(max_examples=400, deadline=None)
@given(data=param_dicts)
def test_headerless_params_from_any_dict(data):
    try:
        p = HeaderlessParams.from_dict(data, source="fuzz")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz: ")
        return
    _check_valid(p)


json_values = st.recursive(scalars.filter(lambda v: not (isinstance(v, float) and not math.isfinite(v))),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                       max_size=4), max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(doc=st.one_of(json_values.map(json.dumps), param_dicts.map(lambda d: json.dumps(d, default=str)),
                     st.text(max_size=60), st.binary(max_size=60).map(lambda b: b.decode("latin-1"))))
def test_headerless_params_from_any_sidecar(doc):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "frame.raw.json"
        path.write_text(doc, encoding="utf-8", errors="surrogatepass")
        try:
            p = HeaderlessParams.from_json(path)
        except ConfigError as exc:
            assert str(path) in str(exc)
            return
    _check_valid(p)


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.one_of(
        st.lists(st.integers(-6, 8), min_size=4, max_size=4).map(lambda v: np.array(v).reshape(2, 2)),
        st.lists(st.integers(0, 3), min_size=0, max_size=9).map(np.array),
        st.lists(st.integers(0, 3), min_size=6, max_size=6).map(lambda v: np.array(v).reshape(2, 3)),
    ),
    desc=st.sampled_from(["RGBG", "RGB", "RGBE", "GMCY", "RG", ""]),
)
def test_cfa_from_any_pattern(pattern, desc):
    try:
        cfa = CFA.from_pattern(pattern, desc)
    except ValueError:
        return
    # Accepted only for a real 2x2 Bayer pattern, read in order.
    assert pattern.shape == (2, 2)
    assert all(0 <= int(i) < len(desc) for i in pattern.ravel())
    assert cfa.value == "".join(desc[int(i)] for i in pattern.ravel())
    assert sorted(cfa.value) == ["B", "G", "G", "R"]


levels = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-1, 70_000) | st.integers(-5, 70_000)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # a float64 entry beyond float32: rejected
@settings(max_examples=400, deadline=None)
@given(
    black=(st.lists(levels, min_size=4, max_size=4) | st.lists(levels, max_size=6)).map(tuple),
    white=levels,
    matrix=st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=9, max_size=9).map(
            lambda v: np.array(v).reshape(3, 3)),
        st.lists(st.floats(-3, 3), min_size=9, max_size=9).map(lambda v: np.array(v).reshape(3, 3)),
        st.lists(st.floats(-3, 3), min_size=0, max_size=12).map(np.array),
    ),
)
def test_raw_meta_validation(black, white, matrix):
    try:
        meta = RawMeta(cfa=CFA.RGGB, black_level=black, white_level=white, cam_to_srgb=matrix)
    except ValueError:
        return
    # Accepted metadata is safe for the kernels: finite levels, white above every black, a finite 3x3 matrix.
    assert len(meta.black_level) == 4
    assert all(math.isfinite(b) for b in meta.black_level) and math.isfinite(meta.white_level)
    assert meta.white_level > max(meta.black_level)
    assert meta.cam_to_srgb.shape == (3, 3) and meta.cam_to_srgb.dtype == np.float32
    assert np.all(np.isfinite(meta.cam_to_srgb))
