"""The DNG fast path (DngFastReader in RawFileSource): bit-identical to LibRaw, taken when it may be, never else."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from redi_stream.capture import RawFileSource, SyntheticSource, dngfast, write_dark_dng_sequence, write_dng
from redi_stream.capture.dngfast import DngFastReader
from redi_stream.capture.libraw import read_libraw
from redi_stream.capture.orient import orient
from redi_stream.errors import FrameError
from redi_stream.frames import CFA, RawMeta
from tests.capture.conftest import TIFFFILE_DNG_TAGS



@pytest.fixture()
def libraw_calls(monkeypatch) -> list[str]:
    """Names of the files the fast reader hands to LibRaw, in call order."""
    calls: list[str] = []
    real = dngfast.read_libraw_with_margins

    def counting(path: Path, index: int):
        calls.append(Path(path).name)
        return real(path, index)

    monkeypatch.setattr(dngfast, "read_libraw_with_margins", counting)
    return calls


def assert_same(data: np.ndarray, meta: RawMeta, want_data: np.ndarray, want_meta: RawMeta) -> None:
    """Every pixel and every RawMeta field equal (bit for bit, same types), and the array flags read_libraw gives."""
    assert data.dtype == want_data.dtype == np.uint16 and data.shape == want_data.shape
    assert data.flags.c_contiguous and data.flags.writeable
    np.testing.assert_array_equal(data, want_data)
    for f in dataclasses.fields(RawMeta):
        got, want = getattr(meta, f.name), getattr(want_meta, f.name)
        if isinstance(want, np.ndarray):
            assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), f.name
        else:
            assert type(got) is type(want) and got == want, f.name


def assert_like_libraw(data: np.ndarray, meta: RawMeta, path: Path, index: int = 0) -> None:
    """``(data, meta)`` is what read_libraw gives for ``path``, turned upright as every source does."""
    assert_same(data, meta, *orient(*read_libraw(path, index)))


def assert_source_like_libraw(src: RawFileSource, order=None) -> None:
    for i in order if order is not None else range(len(src)):
        frame = src.read(i)
        assert_like_libraw(frame.data, frame.meta, src.paths[i], i)


def write_tifffile_dng(path: Path, raw: np.ndarray, *, subifd: bool = False, byteorder: str = "<", **layout) -> Path:
    """A DNG written by tifffile (layouts pidng never makes): raw in IFD0 or in a SubIFD behind an RGB thumbnail,
    strips (``rowsperstrip``) or tiles (``tile``), either byte order."""
    dng = TIFFFILE_DNG_TAGS
    cfa = [(33421, 3, 2, (2, 2), True), (33422, 1, 4, bytes([1, 0, 2, 1]), True), (50717, 4, 1, 60000, True),
           (50713, 3, 2, (2, 2), True), (50714, 3, 4, (60, 61, 62, 63), True)]  # fmt: skip
    with tifffile.TiffWriter(path, byteorder=byteorder) as tw:
        if subifd:
            tw.write(np.zeros((8, 12, 3), np.uint8), photometric="rgb", subifds=1, subfiletype=1, extratags=dng)
            tw.write(raw, photometric=32803, subfiletype=0, extratags=cfa, **layout)
        else:
            tw.write(raw, photometric=32803, subfiletype=0, extratags=dng + cfa, **layout)
    return path


def full_range(index: int, shape: tuple[int, int]) -> np.ndarray:
    """Random samples over all 16 bits (above the white level too): LibRaw must pass every one through as stored."""
    return np.random.default_rng(1000 + index).integers(0, 65536, size=shape, dtype=np.uint16)


# -- same output as LibRaw, and the fast path taken -----------------------------------------------------------------


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("shape", [(24, 32), (25, 33), (23, 41)])
def test_synthetic_sequence_matches_libraw_with_one_libraw_decode(tmp_path, libraw_calls, cfa, shape) -> None:
    synth = SyntheticSource(n_frames=5, size=shape, cfa=cfa, seed=3, motion="pan")
    write_dark_dng_sequence(synth, tmp_path / "seq")
    src = RawFileSource(tmp_path / "seq")
    assert_source_like_libraw(src)
    assert libraw_calls == ["frame_000000.dng"]  # the reference; frames 1-4 came from tifffile alone


def test_full_range_samples_and_any_read_order(tmp_path, libraw_calls, tiny) -> None:
    paths = [write_dng(tmp_path / f"f{i}.dng", full_range(i, (27, 35)), tiny.meta(CFA.GBRG)) for i in range(6)]
    src = RawFileSource(paths[0].parent)
    assert_source_like_libraw(src, order=[3, 5, 0, 1, 4, 2, 3])
    assert libraw_calls == ["f3.dng"]  # frame 0, read to check sizes, was already fast


def test_fast_frames_own_their_arrays(make_dngs, libraw_calls) -> None:
    paths = make_dngs([f"f{i}.dng" for i in range(3)])
    src = RawFileSource(paths[0].parent)
    f0, f1, f2 = src.read(0), src.read(1), src.read(2)
    assert libraw_calls == ["f0.dng"]
    f1.data[:] = 0
    f1.meta.cam_to_srgb[:] = 7  # a consumer scribbling on its frame changes no other frame
    assert f2.meta is not f1.meta and not np.shares_memory(f1.data, f2.data)
    assert_like_libraw(src.read(1).data, src.read(1).meta, paths[1])
    assert_like_libraw(f2.data, f2.meta, paths[2])
    assert_like_libraw(f0.data, f0.meta, paths[0])


@pytest.mark.parametrize(
    "layout",
    [
        dict(rowsperstrip=5),
        dict(rowsperstrip=5, byteorder=">"),
        dict(tile=(16, 64)),  # full-width tiles, the last one padded below the image
        dict(tile=(16, 64), byteorder=">"),
        dict(subifd=True, rowsperstrip=7),  # raw in a SubIFD behind a thumbnail, as Adobe's converter writes
    ],
    ids=["strips", "strips-bigendian", "tiles", "tiles-bigendian", "subifd"],
)
def test_other_layouts_match_libraw(tmp_path, libraw_calls, layout) -> None:
    for i in range(3):
        write_tifffile_dng(tmp_path / f"t{i}.dng", full_range(i, (41, 64)), **layout)
    assert_source_like_libraw(RawFileSource(tmp_path))
    assert libraw_calls == ["t0.dng"]


@pytest.mark.parametrize("tile", [(16, 16), (48, 80)], ids=["narrow-tiles", "one-tile-wider-than-the-image"])
def test_tiles_narrower_or_wider_than_the_image_are_left_to_libraw(tmp_path, libraw_calls, tile) -> None:
    # LibRaw reads a single tile wider than the image as if its rows were image rows, unlike tifffile: the
    # reference check would catch that on a busy frame, but not on a flat one, so such layouts are never taken.
    for i in range(3):
        write_tifffile_dng(tmp_path / f"t{i}.dng", full_range(i, (41, 70)), tile=tile)
    src = RawFileSource(tmp_path)
    assert_source_like_libraw(src)
    assert libraw_calls == ["t0.dng", "t1.dng", "t2.dng"] and not src._dng.enabled
    with tifffile.TiffFile(src.paths[0]) as tf:
        assert "tiles in a 70-wide image" in dngfast._layout_problem(tf.pages.first, tf.filehandle.size)


@pytest.mark.parametrize("area", [[3, 5, 37, 58], [2, 4, 36, 58], [4, 6, 37, 57]])
def test_active_area_is_cropped_where_libraw_crops(tmp_path, libraw_calls, write_plain_dng, area) -> None:
    # LibRaw rounds an odd ActiveArea origin up to even: the crop must come from LibRaw, not from the tag.
    for i in range(3):
        write_plain_dng(tmp_path / f"a{i}.dng", full_range(i, (40, 60)), ActiveArea=area)
    assert_source_like_libraw(RawFileSource(tmp_path))
    assert libraw_calls == ["a0.dng"]


@pytest.mark.parametrize("area, origin, size", [
    (None, [3, 5], [50, 30]),  # odd origin: LibRaw moves it to the next even pixel, keeping the Bayer phase
    ([2, 4, 38, 58], [3, 5], [49, 29]),
    ([2, 4, 38, 58], [2, 4], [40, 24]),
    ([3, 5, 37, 58], [0, 0], [52, 33]),  # the crop's origin is the ActiveArea's, rounded as LibRaw rounds it
])  # fmt: skip
def test_default_crop_keeps_only_the_rectangle_dng_readers_show(tmp_path, libraw_calls, write_plain_dng, area,
                                                               origin, size) -> None:
    stored = [full_range(i, (40, 60)) for i in range(3)]
    tags = dict(DefaultCropOrigin=origin, DefaultCropSize=size)
    if area is not None:
        tags["ActiveArea"] = area
    for i, raw in enumerate(stored):
        write_plain_dng(tmp_path / f"d{i}.dng", raw, **tags)
    # Written from the DNG tags: the crop is relative to the ActiveArea; its origin in the stored image goes up to
    # the next even row and column, and the size shrinks by as much. CFAPattern (RGGB) starts at the ActiveArea.
    top0, left0 = (area[0], area[1]) if area else (0, 0)
    top, left = top0 + origin[1], left0 + origin[0]
    etop, eleft = top + (top & 1), left + (left & 1)
    height, width = size[1] - (etop - top), size[0] - (eleft - left)
    cfa = CFA("".join("RGGB"[2 * ((etop - top0 + i) & 1) + ((eleft - left0 + j) & 1)] for i in (0, 1) for j in (0, 1)))
    src = RawFileSource(tmp_path)
    for i in range(3):
        frame = src.read(i)
        np.testing.assert_array_equal(frame.data, stored[i][etop : etop + height, eleft : eleft + width])
        assert frame.meta.cfa is cfa
    assert_source_like_libraw(src)
    assert libraw_calls[:1] == ["d0.dng"] and "d1.dng" not in libraw_calls  # later frames took the fast path


def test_per_frame_time_stamps_do_not_break_the_match(tmp_path, libraw_calls, write_plain_dng) -> None:
    for i in range(4):
        write_plain_dng(tmp_path / f"c{i}.dng", full_range(i, (24, 32)), DateTime=f"2024:01:01 10:00:0{i}",
                        DateTimeOriginal=f"2024:01:01 10:00:0{i}", SubsecTimeOriginal=f"{i:03d}",
                        TimeCodes=[i, 0, 0, 0, 0, 0, 0, 0], RawDataUniqueID=[i] * 16)  # fmt: skip
    assert_source_like_libraw(RawFileSource(tmp_path))
    assert libraw_calls == ["c0.dng"]


def test_exif_time_stamps_are_left_out_of_the_fingerprint() -> None:
    a = {"ExposureTime": (1, 50), "DateTimeOriginal": "2024:01:01 10:00:00", "SubsecTimeOriginal": "001"}
    b = {"ExposureTime": (1, 50), "DateTimeOriginal": "2024:01:01 10:00:01", "SubsecTimeOriginal": "002"}
    c = {"ExposureTime": (1, 60), "DateTimeOriginal": "2024:01:01 10:00:00", "SubsecTimeOriginal": "001"}
    assert dngfast._frozen(a) == dngfast._frozen(b) != dngfast._frozen(c)
    assert dngfast._frozen(np.arange(3)) == dngfast._frozen(np.arange(3)) != dngfast._frozen(np.arange(3.0))


# -- LibRaw wherever the fast path may not be taken -----------------------------------------------------------------


def test_frames_with_other_metadata_go_through_libraw(tmp_path, libraw_calls, tiny) -> None:
    metas = {2: tiny.meta(wb_gains=(1.5, 1.0, 2.5)), 3: tiny.meta(black_level=(90.0, 91.0, 92.0, 93.0)),
             5: tiny.meta(camera="Other")}  # fmt: skip
    for i in range(8):
        write_dng(tmp_path / f"m{i}.dng", tiny.bayer(i), metas.get(i, tiny.meta()))
    src = RawFileSource(tmp_path)
    frames = [src.read(i) for i in range(8)]
    for i, frame in enumerate(frames):
        assert_like_libraw(frame.data, frame.meta, src.paths[i], i)
    assert frames[2].meta.wb_gains == pytest.approx((1.5, 1.0, 2.5)) != frames[4].meta.wb_gains
    assert frames[3].meta.black_level == (90.0, 91.0, 92.0, 93.0) and frames[5].meta.camera == "redi-stream Other"
    # each change of metadata is decoded by LibRaw and becomes the reference; frames 1, 7 match the one before
    assert libraw_calls == ["m0.dng", "m2.dng", "m3.dng", "m4.dng", "m5.dng", "m6.dng"]


@pytest.fixture()
def parse_calls(monkeypatch) -> list[str]:
    """Names of the files the fast reader parses with tifffile, in call order."""
    calls: list[str] = []
    real = dngfast._parse_or_reason

    def counting(path: Path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(dngfast, "_parse_or_reason", counting)
    return calls


def _wb_sequence(folder: Path, tiny, n: int, changing: int) -> RawFileSource:
    """``n`` DNGs whose first ``changing`` frames each have their own white balance; the rest share one."""
    folder.mkdir()
    for i in range(n):
        write_dng(folder / f"f{i:02d}.dng", tiny.bayer(i), tiny.meta(wb_gains=(1.5 + 0.01 * min(i, changing), 1.0, 2)))
    return RawFileSource(folder)


def test_metadata_changing_every_frame_pauses_the_fast_path(tmp_path, tiny, libraw_calls, parse_calls) -> None:
    src = _wb_sequence(tmp_path / "wb", tiny, 40, changing=40)
    assert_source_like_libraw(src)
    assert len(libraw_calls) == 40
    # f00 becomes the reference, f01-f06 miss (6 in a row), f07-f14 pause, f15 and f16 miss, f17-f32 pause,
    # f33 and f34 miss, f35-f39 pause: 11 tifffile parses instead of 40
    tried = [0, 1, 2, 3, 4, 5, 6, 15, 16, 33, 34]
    assert parse_calls == [f"f{i:02d}.dng" for i in tried]


def test_fast_path_comes_back_after_a_pause(tmp_path, tiny, libraw_calls, parse_calls) -> None:
    src = _wb_sequence(tmp_path / "settle", tiny, 40, changing=10)  # e.g. auto white balance settling
    assert_source_like_libraw(src)
    # f01-f06 miss, f07-f14 pause, f15 is the new reference and f16-f39 match it
    assert libraw_calls == [f"f{i:02d}.dng" for i in range(16)]
    assert len(parse_calls) == 40 - 8


def test_another_decode_relevant_tag_goes_through_libraw(tmp_path, libraw_calls, write_plain_dng) -> None:
    write_plain_dng(tmp_path / "s0.dng", full_range(0, (24, 32)))
    write_plain_dng(tmp_path / "s1.dng", full_range(1, (24, 32)), WhiteLevel=4000)
    write_plain_dng(tmp_path / "s2.dng", full_range(2, (24, 32)), WhiteLevel=4000)
    assert_source_like_libraw(RawFileSource(tmp_path))
    assert libraw_calls == ["s0.dng", "s1.dng"]


@pytest.mark.parametrize("keep", [0.5, 0.999, 100])
def test_truncated_frame_after_a_reference_is_still_a_frame_error(make_dngs, libraw_calls, keep) -> None:
    paths = make_dngs(["f0.dng", "f1.dng", "f2.dng"])
    blob = paths[2].read_bytes()
    paths[2].write_bytes(blob[: int(keep if keep > 1 else len(blob) * keep)])
    src = RawFileSource(paths[0].parent)
    src.read(0), src.read(1)
    with pytest.raises(FrameError, match=r"frame 2 \(.*f2\.dng\): truncated") as info:
        src.read(2)
    assert info.value.index == 2 and info.value.name == "f2.dng"
    assert libraw_calls == ["f0.dng", "f2.dng"]
    assert_like_libraw(src.read(1).data, src.read(1).meta, paths[1])  # still fast and right afterwards
    assert libraw_calls == ["f0.dng", "f2.dng"]


def test_two_bytes_short_fails_the_layout_check_and_libraw_reports_it(make_dngs, libraw_calls) -> None:
    paths = make_dngs(["f0.dng", "f1.dng"])
    blob = paths[1].read_bytes()
    paths[1].write_bytes(blob[:-2])
    with tifffile.TiffFile(paths[1]) as tf:
        assert "outside the file" in dngfast._layout_problem(tf.pages.first, tf.filehandle.size)
    src = RawFileSource(paths[0].parent)
    src.read(0)
    with pytest.raises(FrameError, match=r"frame 1 \(.*f1\.dng\): truncated"):
        src.read(1)
    assert libraw_calls == ["f0.dng", "f1.dng"]


def test_file_removed_after_the_reference_is_reported_as_before(make_dngs, libraw_calls) -> None:
    paths = make_dngs(["f0.dng", "f1.dng"])
    src = RawFileSource(paths[0].parent)
    src.read(0)
    paths[1].unlink()
    with pytest.raises(FrameError, match=r"frame 1 .*no such file \(removed after the frames were listed\)"):
        src.read(1)


def test_ineligible_dng_is_decoded_by_libraw_and_turns_the_fast_path_off(tmp_path, libraw_calls, write_plain_dng):
    table = list(range(4096))  # an identity LinearizationTable: LibRaw reads the file fine, we must not
    for i in range(3):
        write_plain_dng(tmp_path / f"l{i}.dng", full_range(i, (24, 32)) & 4095, LinearizationTable=table)
    src = RawFileSource(tmp_path)
    assert_source_like_libraw(src)
    assert libraw_calls == ["l0.dng", "l1.dng", "l2.dng"] and not src._dng.enabled


def test_metadata_warnings_name_their_file_so_they_turn_the_fast_path_off(tmp_path, libraw_calls, write_plain_dng):
    for i in range(3):
        write_plain_dng(tmp_path / f"w{i}.dng", full_range(i, (24, 32)), ColorMatrix1=None)
    src = RawFileSource(tmp_path)
    assert_source_like_libraw(src)
    assert src.read(2).meta.warnings == ("no colour matrix in w2.dng; using identity (colours will be camera-native)",)
    assert libraw_calls == ["w0.dng", "w1.dng", "w2.dng", "w2.dng"] and not src._dng.enabled


def test_pixels_unlike_libraws_turn_the_fast_path_off(make_dngs, monkeypatch) -> None:
    """The self-check: were LibRaw ever to decode the samples differently, the source must stay on LibRaw."""
    paths = make_dngs([f"f{i}.dng" for i in range(3)])
    calls: list[int] = []

    def altered(path: Path, index: int):
        calls.append(index)
        data, meta = read_libraw(path, index)
        return data ^ 1, meta, (0, 0)

    monkeypatch.setattr(dngfast, "read_libraw_with_margins", altered)
    reader = DngFastReader()
    for i, path in enumerate(paths):
        data, _ = reader.read(path, i)
        np.testing.assert_array_equal(data, read_libraw(path, i)[0] ^ 1)  # LibRaw's (altered) output, every frame
    assert calls == [0, 1, 2] and not reader.enabled


def test_real_magic_lantern_dng_decodes_as_before(shared_data: Path, libraw_calls) -> None:
    path = shared_data / "raw" / "colorchart_canon550d_magiclantern.dng"
    with tifffile.TiffFile(path) as tf:
        assert dngfast._layout_problem(tf.pages.first, tf.filehandle.size) == "not 16 bits per sample"
    src = RawFileSource([path, path])
    assert_source_like_libraw(src)
    assert libraw_calls == [path.name, path.name] and not src._dng.enabled


def test_non_dng_suffixes_never_use_the_fast_path(make_dngs, libraw_calls) -> None:
    paths = make_dngs(["f0.dng", "f1.dng"])
    copies = [p.rename(p.with_suffix(".tif")) for p in paths]
    src = RawFileSource(copies)
    for i in range(2):
        src.read(i)
    assert libraw_calls == []  # .tif goes straight to read_libraw, not through the DNG reader


# -- threads --------------------------------------------------------------------------------------------------------


def test_concurrent_reads_match_sequential(tmp_path, tiny, libraw_calls) -> None:
    for i in range(16):
        meta = tiny.meta(wb_gains=(1.7, 1.0, 2.2)) if i in (5, 6, 11) else tiny.meta()
        write_dng(tmp_path / f"f{i:02d}.dng", full_range(i, (33, 47)), meta)
    expected = [read_libraw(p, i) for i, p in enumerate(sorted(tmp_path.glob("*.dng")))]
    order = [i for _ in range(3) for i in range(16)][::-1]
    for workers in (2, 4):
        libraw_calls.clear()
        src = RawFileSource(tmp_path)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            frames = list(pool.map(src.read, order))
        assert [f.index for f in frames] == order
        for frame in frames:
            assert_same(frame.data, frame.meta, *expected[frame.index])
        assert len(libraw_calls) < len(order)  # the fast path was taken under threads too (~13 in sequence)
