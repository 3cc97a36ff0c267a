"""Fuzzing headerless frames: random sizes, dtypes, offsets and black/white levels against random file sizes
(.raw: one frame, a dump of several, or a bad size), random arrays and damaged files (.npy), random sidecars.
``RawFileSource.read`` returns the correct frame or raises FrameError naming the frame -- never another
exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redi_stream.capture import HeaderlessParams, RawFileSource
from redi_stream.errors import ConfigError, FrameError
from redi_stream.frames import CFA


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 40),
    height=st.integers(1, 40),
    dtype=st.sampled_from(["u1", "<u2", ">u2"]),
    offset=st.integers(0, 70),
    size_delta=st.sampled_from([0, 0, 0, -1, 1, -2, 7]) | st.integers(-2000, 2000),
    black=st.floats(0, 300),
    white=st.none() | st.floats(0, 70_000),
    bits=st.none() | st.integers(1, 16),
    cfa=st.sampled_from(list(CFA)),
    seed=st.integers(0, 2**32 - 1),
)
def test_headerless_raw_is_the_right_frame_or_a_frame_error(width, height, dtype, offset, size_delta, black, white,
                                                             bits, cfa, seed):
    try:
        params = HeaderlessParams(width, height, cfa=cfa, black=black, white=white, dtype=dtype, offset=offset,
                                  bits=bits)
    except ConfigError:
        return  # e.g. white below black: rejected where the parameters are given (CLI: exit 2)
    itemsize = np.dtype(dtype).itemsize
    expected = offset + width * height * itemsize
    n_bytes = max(0, expected + size_delta)
    blob = np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    # A size that is a whole number k > 1 of frames after the offset is a dump of k frames, named f.raw[i].
    frames, rest = divmod(n_bytes - offset, width * height * itemsize) if n_bytes > offset else (0, 1)
    many = frames > 1 and rest == 0
    name = "f.raw[0]" if many else "f.raw"
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.raw"
        path.write_bytes(blob)
        with RawFileSource(path, raw_params=params) as src:
            assert len(src) == (frames if many else 1)
            try:
                frame = src.read(0)
            except FrameError as exc:
                assert exc.index == 0 and exc.name == name and name in str(exc)
                assert (n_bytes != expected and not many) or params.white_level() <= max(params.black_level)
                return
    assert n_bytes == expected or many
    want = np.frombuffer(blob, dtype=np.dtype(dtype), count=width * height, offset=offset).reshape(height, width)
    assert frame.data.dtype == np.uint16 and frame.data.flags.c_contiguous
    np.testing.assert_array_equal(frame.data, want.astype(np.uint16))
    assert frame.meta.cfa == cfa and frame.meta.black_level == params.black_level
    assert frame.meta.white_level == params.white_level() > max(frame.meta.black_level)


arrays = st.one_of(
    st.tuples(st.integers(0, 20), st.integers(0, 20), st.sampled_from(
        ["u1", "<u2", ">u2", "<u4", "<i2", "<i8", "<f4", "<f8", "<f2", "?", "<c8"])),
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.sampled_from(["<u2"])).map(lambda t: (*t, 3)),
)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # float16 test arrays beyond 65504 become inf
@settings(max_examples=300, deadline=None)
@given(spec=arrays, seed=st.integers(0, 2**32 - 1), extreme=st.booleans(), cut=st.none() | st.integers(0, 300),
       sidecar=st.none() | st.dictionaries(st.sampled_from(["width", "height", "black", "white", "cfa", "bits"]),
                                           st.integers(-3, 70_000) | st.sampled_from(["GBRG", "nope"]), max_size=4))
def test_npy_frame_is_the_right_frame_or_a_frame_error(spec, seed, extreme, cut, sidecar):
    h, w, dt = spec[:3]
    shape = (h, w) if len(spec) == 3 else (h, w, spec[3])
    rng = np.random.default_rng(seed)
    if np.dtype(dt).kind == "f":
        arr = rng.uniform(-10, 70_000 if extreme else 60_000, shape).astype(dt)
        if extreme and arr.size:
            arr.flat[0] = np.nan
    elif np.dtype(dt).kind == "c":
        arr = rng.random(shape).astype(dt)
    elif np.dtype(dt).kind == "b":
        arr = rng.random(shape) > 0.5
    else:
        info = np.iinfo(dt)
        arr = rng.integers(max(info.min, -5 if extreme else 0), min(info.max, 70_000 if extreme else 65_535),
                           shape, endpoint=True).astype(dt)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.npy"
        np.save(path, arr)
        full = path.stat().st_size
        if cut is not None:
            path.write_bytes(path.read_bytes()[:cut])
        if sidecar is not None:
            (Path(d) / "f.npy.json").write_text(json.dumps(sidecar))
        with RawFileSource(path) as src:
            try:
                frame = src.read(0)
            except FrameError as exc:
                assert exc.index == 0 and exc.name == "f.npy"
                return
    # Accepted: the file was whole, the array a real 2-D mosaic of raw DN, and the frame holds exactly its values.
    assert cut is None or cut >= full
    data = arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr
    assert data.ndim == 2 and data.size > 0 and arr.dtype.kind in "uif"
    assert np.all(np.isfinite(data)) and data.min() >= 0 and data.max() <= 65535
    np.testing.assert_array_equal(frame.data, np.rint(data).astype(np.uint16))
    assert frame.meta.white_level > max(frame.meta.black_level)
