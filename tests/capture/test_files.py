"""RawFileSource: listing, ordering, formats, errors, consistency, lifecycle (tiny files written on the fly)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from redi_stream.capture import HeaderlessParams, RawFileSource, natural_key
from redi_stream.capture.dngwrite import smpte_bytes
from redi_stream.capture.files import numbering_slots, timecode_from_smpte
from redi_stream.errors import CaptureError, ConfigError, FrameError
from redi_stream.frames import CFA

# -- ordering and listing -------------------------------------------------------------------------------------------


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["frame10.dng", "frame2.dng", "frame1.dng", "Frame3.dng", "frame02.dng", "a100b2", "a100b10", "a99"]
    assert sorted(names, key=natural_key) == [
        "a99", "a100b2", "a100b10", "frame1.dng", "frame02.dng", "frame2.dng", "Frame3.dng", "frame10.dng",
    ]  # fmt: skip


def test_numbering_slots_follow_the_last_number_of_names_alike() -> None:
    def slots(*names: str) -> list[int] | None:
        return numbering_slots([Path("clip") / n for n in names])

    assert slots("A001_C002_0100.dng", "A001_C002_0101.dng", "A001_C002_0104.dng") == [0, 1, 4]
    assert slots("f9.dng", "f10.dng", "f11.dng") == [0, 1, 2]  # the width of the number may grow
    assert slots("f1.dng", "g2.dng") is None  # another name
    assert slots("f1.dng", "f2.DNG") is None  # another suffix
    assert slots("f2.dng", "f1.dng") is None  # numbers must rise (a list given out of order is kept as it is)
    assert slots("take1.dng") == [0] and slots("take.dng") is None and slots("take.dng", "take2.dng") is None
    assert numbering_slots([Path("a/f1.dng"), Path("b/f2.dng")]) is None  # two folders


def test_a_cinemadng_clip_keeps_the_time_of_its_numbers_across_a_lost_frame(make_dngs, caplog) -> None:
    """A number missing from a CinemaDNG clip is a lost frame: the frames after it keep the time their numbers give
    (so the video holds the frame before the gap and stays in step with the sound), and one warning says so."""
    paths = make_dngs(["A_0100.dng", "A_0101.dng", "A_0103.dng", "A_0104.dng", "A_0107.dng"], fps=25)
    with caplog.at_level("WARNING", logger="redi_stream.capture.files"), RawFileSource(paths[0].parent) as src:
        assert [src.read(i).t_ns for i in range(5)] == [0, 40_000_000, 120_000_000, 160_000_000, 280_000_000]
        assert [src.read(i).index for i in range(5)] == [0, 1, 2, 3, 4]  # positions in the source are unchanged
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "3 frames missing from the numbering (the first is A_0102.dng)" in warnings[0]
    # Stills (no CinemaDNG frame rate) numbered with gaps, as a camera names photos, are taken one after another.
    caplog.clear()
    stills = make_dngs(["IMG_1200.dng", "IMG_1204.dng", "IMG_1205.dng"], folder="stills")
    with caplog.at_level("WARNING", logger="redi_stream.capture.files"), RawFileSource(stills[0].parent) as src:
        assert [src.read(i).t_ns for i in range(3)] == [0, round(1e9 / 24), round(2e9 / 24)]
    assert not caplog.records


def test_smpte_time_codes_round_trip_and_bad_ones_are_none() -> None:
    for code in ("00:00:00:00", "10:59:59;28", "23:59:59:29", "01:02:03:04"):
        assert timecode_from_smpte(bytes(smpte_bytes(code))) == code
    assert smpte_bytes("01:02:03:04")[:4] == [0x04, 0x03, 0x02, 0x01]  # BCD, frames first
    assert timecode_from_smpte(bytes([0x84, 0x83, 0x82, 0xC1])) == "01:02:03:04"  # flag bits are not digits
    assert timecode_from_smpte(bytes([0x0A, 0, 0, 0])) is None  # not BCD
    assert timecode_from_smpte(bytes([0, 0, 0, 0x24])) is None  # hour 24
    assert timecode_from_smpte(b"\x00\x00") is None
    with pytest.raises(ConfigError, match="invalid time code '1:02:03:04'"):
        smpte_bytes("1:02:03:04")


def test_each_cinemadng_frame_gives_its_time_code(make_dngs, tiny, tmp_path: Path) -> None:
    from redi_stream.capture import write_dng

    clip = tmp_path / "tc"
    clip.mkdir()
    for i, code in enumerate(["10:59:59;28", "10:59:59;29"]):
        write_dng(clip / f"A_{i:04d}.dng", tiny.bayer(i), tiny.meta(), fps=29.97, timecode=code)
    plain = make_dngs(["f0.dng"])
    with RawFileSource(clip) as src, RawFileSource(plain[0]) as untagged:
        assert (src.timecode(0), src.timecode(1), untagged.timecode(0)) == ("10:59:59;28", "10:59:59;29", None)
        assert src.read(1).t_ns == round(1e9 / 29.97)  # the fast DNG path ignores the time codes that differ


def test_folder_is_listed_in_natural_order_ignoring_non_frames(make_dngs, tmp_path: Path) -> None:
    paths = make_dngs(["f10.dng", "f2.dng", "f1.DNG"])
    clip = paths[0].parent
    for junk in ("notes.txt", "meta.json", ".DS_Store", "._f3.dng", "f4.dng.partial"):
        (clip / junk).write_bytes(b"not a frame")
    (clip / "sub.dng").mkdir()  # a folder named like a frame is not a frame
    with RawFileSource(clip) as src:
        assert src.names == ["f1.DNG", "f2.dng", "f10.dng"]
        assert src.paths == [clip / "f1.DNG", clip / "f2.dng", clip / "f10.dng"]
        assert len(src) == 3 and src.live is False and src.name == str(clip)
        np.testing.assert_array_equal(src.read(2).data, src.read(2).data)


def test_glob_list_and_single_file(make_dngs, tiny) -> None:
    paths = make_dngs(["f10.dng", "f2.dng", "f1.dng"])
    clip = paths[0].parent
    assert RawFileSource(str(clip / "f*.dng")).names == ["f1.dng", "f2.dng", "f10.dng"]
    listed = RawFileSource([paths[0], str(paths[2])])  # a list keeps the caller's order
    assert listed.names == ["f10.dng", "f1.dng"]
    np.testing.assert_array_equal(listed.read(1).data, tiny.bayer(2))
    single = RawFileSource(paths[1])
    assert len(single) == 1 and single.names == ["f2.dng"]
    np.testing.assert_array_equal(single.read(0).data, tiny.bayer(1))


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("missing_folder", "no such file or folder"),
        ("empty", "no raw frames in folder"),
        ("only_text", "no raw frames in folder"),
        ("clip/*.nef", "no files match"),
    ],
)
def test_bad_specs_raise_capture_error_naming_the_path(tmp_path: Path, spec: str, needle: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "readme.txt").write_text("hi")
    (tmp_path / "clip").mkdir()
    with pytest.raises(CaptureError, match=needle) as info:
        RawFileSource(tmp_path / spec if "*" not in spec else str(tmp_path / spec))
    assert isinstance(info.value, OSError)
    assert spec.split("/")[0] in str(info.value) and "\n" not in str(info.value)


def test_a_glob_in_the_wrong_case_says_so(make_dngs) -> None:
    clip = make_dngs(["f10.dng", "f2.dng"])[0].parent
    with pytest.raises(CaptureError, match=r"no files match .*\*\.DNG \(the match is case-sensitive: 2 files such as "
                                           r"f2\.dng would match in another case\)$"):
        RawFileSource(str(clip / "*.DNG"))
    with pytest.raises(CaptureError, match=r"no files match .*\*\.nef$"):
        RawFileSource(str(clip / "*.nef"))


def test_bad_lists_raise_capture_error(make_dngs, tmp_path: Path) -> None:
    paths = make_dngs(["a.dng"])
    with pytest.raises(CaptureError, match="empty list"):
        RawFileSource([])
    with pytest.raises(CaptureError, match="no such file: .*ghost.dng"):
        RawFileSource([paths[0], tmp_path / "ghost.dng"])
    with pytest.raises(CaptureError, match="is a folder"):
        RawFileSource([paths[0], tmp_path])


def test_explicitly_named_non_raw_file_fails_at_read(make_dngs) -> None:
    paths = make_dngs(["a.dng"])
    notes = paths[0].parent / "notes.txt"
    notes.write_text("hello")
    src = RawFileSource([paths[0], notes])
    src.read(0)
    with pytest.raises(FrameError, match=r"frame 1 \(.*notes\.txt\).*not a raw-frame extension") as info:
        src.read(1)
    assert info.value.index == 1 and info.value.name == "notes.txt"
    # the same through a glob that matches everything
    assert "notes.txt" in RawFileSource(str(paths[0].parent / "*")).names


def test_video_images_and_closed_cinema_raws_say_what_they_are_and_what_to_do(tmp_path: Path) -> None:
    clip = tmp_path / "night shoot"
    clip.mkdir()
    for name in ("M01-0001.MLV", "take.mp4", "still.jpg", "A001.braw"):
        (clip / name).write_bytes(b"\0" * 4096)
    cases = {
        "M01-0001.MLV": r"M01-0001\.MLV is Magic Lantern video \(MLV\); convert it to a DNG sequence first",
        "take.mp4": r"take\.mp4 is encoded video, not raw frames .* redi-stream make-dng '.*night shoot/take\.mp4' "
                    r"--out clip/ \(or play it as a camera: --camera '.*take\.mp4'\)$",
        "still.jpg": r"still\.jpg is a processed image, not raw sensor data; make a dark raw clip of it with: "
                     r"redi-stream make-dng '.*still\.jpg' --out clip/$",
        "A001.braw": r"A001\.braw is Blackmagic RAW, a closed format LibRaw does not read",
    }
    for name, says in cases.items():
        with pytest.raises(FrameError, match=r"frame 0 \(.*\): not a raw format LibRaw can read .*; " + says):
            RawFileSource(clip / name).read(0)
    # A folder of them has no raw frames, and says what the first one is.
    with pytest.raises(CaptureError, match=r"no raw frames in folder .*night shoot \(looked for .*\): A001\.braw is "
                                           r"Blackmagic RAW"):
        RawFileSource(clip)


# -- broken files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.5, 0.999, 100])
def test_truncated_dng_is_a_frame_error_naming_file_and_index(make_dngs, keep: float) -> None:
    paths = make_dngs(["f0.dng", "f1.dng"])
    blob = paths[1].read_bytes()
    paths[1].write_bytes(blob[: int(keep if keep > 1 else len(blob) * keep)])
    src = RawFileSource(paths[0].parent)
    with pytest.raises(FrameError, match=r"frame 1 \(.*f1\.dng\): truncated") as info:
        src.read(1)
    assert info.value.index == 1 and info.value.name == "f1.dng"
    assert src.read(0).data.shape == (24, 32)  # the source stays usable


def test_corrupt_header_is_a_frame_error(make_dngs) -> None:
    paths = make_dngs(["f0.dng"])
    blob = bytearray(paths[0].read_bytes())
    blob[8:400] = np.random.default_rng(0).integers(0, 256, 392, dtype=np.uint8).tobytes()
    paths[0].write_bytes(bytes(blob))
    with pytest.raises(FrameError, match=r"frame 0 \(.*f0\.dng\)"):
        RawFileSource(paths[0]).read(0)


def test_zero_byte_file_is_a_frame_error(tmp_path: Path) -> None:
    (tmp_path / "empty.dng").write_bytes(b"")
    with pytest.raises(FrameError, match="empty.dng"):
        RawFileSource(tmp_path).read(0)


def test_frames_of_other_size_or_cfa_are_rejected(make_dngs) -> None:
    make_dngs(["f0.dng", "f1.dng"], folder="mix")
    make_dngs(["f2.dng"], shape=(24, 34), folder="mix")
    make_dngs(["f3.dng"], cfa=CFA.GRBG, folder="mix")
    paths = make_dngs(["f4.dng"], folder="mix")
    src = RawFileSource(paths[0].parent)
    with pytest.raises(FrameError, match=r"frame 2 \(.*f2\.dng\) is 24x34 RGGB, expected 24x32 RGGB") as info:
        src.read(2)  # read before frame 0: the reference is taken lazily from frame 0
    assert info.value.index == 2
    with pytest.raises(FrameError, match=r"frame 3 .* is 24x32 GRBG, expected 24x32 RGGB"):
        src.read(3)
    assert src.read(4).shape == (24, 32)


# -- headerless .raw and .npy -----------------------------------------------------------------------------------------


def _write_raw(path: Path, h: int = 6, w: int = 8, dtype: str = "<u2", offset: int = 0) -> np.ndarray:
    data = (np.arange(h * w).reshape(h, w) * 7 % 1000 + 64).astype(dtype)
    path.write_bytes(b"\0" * offset + data.tobytes())
    return data.astype(np.uint16)


def test_headerless_raw_with_params(tmp_path: Path) -> None:
    data = _write_raw(tmp_path / "a.raw", dtype=">u2", offset=16)
    params = HeaderlessParams(8, 6, cfa="bggr", black=(64, 65, 66, 67), white=1023, dtype=">u2", offset=16)
    frame = RawFileSource(tmp_path / "a.raw", raw_params=params).read(0)
    np.testing.assert_array_equal(frame.data, data)
    assert frame.data.dtype == np.uint16 and frame.data.flags.c_contiguous
    assert frame.meta.cfa is CFA.BGGR and frame.meta.black_level == (64, 65, 66, 67) and frame.meta.white_level == 1023


def test_headerless_raw_sidecars_per_file_then_per_folder(tmp_path: Path) -> None:
    a, b = _write_raw(tmp_path / "a.raw"), _write_raw(tmp_path / "b.raw", dtype="u1")
    (tmp_path / "a.raw.json").write_text(json.dumps({"width": 8, "height": 6, "cfa": "GBRG", "black": 64, "bits": 10}))
    (tmp_path / "redi.json").write_text(json.dumps({"width": 8, "height": 6, "dtype": "uint8"}))
    src = RawFileSource(tmp_path)
    assert src.names == ["a.raw", "b.raw"]  # sidecars are not frames
    fa = src.read(0)
    assert fa.meta.cfa is CFA.GBRG and fa.meta.black_level == (64.0,) * 4 and fa.meta.white_level == 1023
    np.testing.assert_array_equal(fa.data, a)
    with pytest.raises(FrameError, match=r"frame 1 \(.*b\.raw\) is 6x8 RGGB, expected 6x8 GBRG"):
        src.read(1)  # b uses redi.json (RGGB by default), unlike frame 0
    fb = RawFileSource(tmp_path / "b.raw").read(0)
    np.testing.assert_array_equal(fb.data, b)
    assert fb.meta.cfa is CFA.RGGB and fb.meta.white_level == 255


def test_headerless_raw_wrong_size_states_expected_and_actual_bytes(tmp_path: Path) -> None:
    _write_raw(tmp_path / "a.raw", h=6, w=8)
    params = HeaderlessParams(width=8, height=7)
    with pytest.raises(FrameError, match=r"frame 0 \(.*a\.raw\): file is 96 bytes, expected 112 for 7x8 <u2"):
        RawFileSource(tmp_path / "a.raw", raw_params=params).read(0)


def test_headerless_raw_without_params_explains_the_sidecar(tmp_path: Path) -> None:
    _write_raw(tmp_path / "a.raw")
    with pytest.raises(FrameError, match=r"a\.raw.*give its layout \(--raw-width, --raw-height, .*\) or a sidecar "
                                          r"a\.raw\.json"):
        RawFileSource(tmp_path / "a.raw").read(0)


# 1920x1080 uint16: the commonest headerless dump, and an entry of LibRaw's file-size table (a 16-bit GBRG frame).
HD_BYTES = 1920 * 1080 * 2


def _write_hd_dump(path: Path) -> np.ndarray:
    data = np.random.default_rng(7).integers(64, 1024, (1080, 1920), dtype=np.uint16)
    path.write_bytes(data.astype("<u2").tobytes())
    return data


def test_headerless_raw_libraw_knows_only_by_its_size_is_refused(tmp_path: Path) -> None:
    from redi_stream.capture.libraw import size_table_layout

    assert size_table_layout(HD_BYTES) is not None and size_table_layout(96) is None
    _write_hd_dump(tmp_path / "a.raw")
    with pytest.raises(FrameError) as info:
        RawFileSource(tmp_path / "a.raw").read(0)
    msg = str(info.value)
    assert msg.startswith(f"frame 0 ({tmp_path / 'a.raw'}): no raw header; LibRaw would guess 1920x1080, white 65535 "
                          "from the file size alone")
    assert "--raw-width" in msg and "sidecar a.raw.json or redi.json" in msg and '{"decoder": "libraw"}' in msg
    assert "HeaderlessParams" not in msg and "\n" not in msg  # one line, not wrapped twice
    assert info.value.index == 0 and info.value.name == "a.raw"


def test_headerless_raw_of_a_table_size_reads_with_its_layout_or_libraw_by_choice(tmp_path: Path) -> None:
    data = _write_hd_dump(tmp_path / "a.raw")
    (tmp_path / "a.raw.json").write_text(json.dumps({"width": 1920, "height": 1080, "cfa": "GRBG", "white": 1023}))
    frame = RawFileSource(tmp_path / "a.raw").read(0)
    np.testing.assert_array_equal(frame.data, data)
    assert frame.meta.cfa is CFA.GRBG and frame.meta.white_level == 1023
    (tmp_path / "a.raw.json").write_text(json.dumps({"decoder": "libraw"}))  # the user vouches for LibRaw's table
    frame = RawFileSource(tmp_path / "a.raw").read(0)
    assert frame.data.shape == (1080, 1920) and frame.meta.white_level == 65535


def test_dng_without_a_header_is_refused_not_read_by_its_size(tmp_path: Path) -> None:
    _write_hd_dump(tmp_path / "a.dng")
    with pytest.raises(FrameError, match=r"frame 0 \(.*a\.dng\): no DNG header \(LibRaw would guess 1920x1080, "
                                         r"white 65535 from the file size alone\); a headerless dump needs the \.raw"):
        RawFileSource(tmp_path / "a.dng").read(0)


def test_raw_with_a_header_is_read_by_it_even_at_a_table_size(tmp_path: Path, write_plain_dng) -> None:
    bayer = np.random.default_rng(3).integers(0, 4000, (64, 96), dtype=np.uint16)
    dng = write_plain_dng(tmp_path / "a.dng", bayer)
    blob = dng.read_bytes()
    assert len(blob) < HD_BYTES
    (tmp_path / "cam.raw").write_bytes(blob + bytes(HD_BYTES - len(blob)))  # a header, and LibRaw's table size
    frame = RawFileSource(tmp_path / "cam.raw").read(0)
    np.testing.assert_array_equal(frame.data, RawFileSource(dng).read(0).data)


def test_only_a_reading_equal_to_the_size_tables_is_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from redi_stream.capture.libraw import SizeOnlyError, _refuse_size_only, size_table_layout

    w, h, white, pattern = size_table_layout(HD_BYTES)
    path = tmp_path / "cam.raw"
    path.write_bytes(b"HDR!" + bytes(HD_BYTES - 4))  # some header LibRaw might know, at a table size

    def reading(width: int, height: int, wl: float):
        return SimpleNamespace(sizes=SimpleNamespace(raw_width=width, raw_height=height), white_level=wl,
                               raw_pattern=np.frombuffer(pattern, dtype=np.uint8).reshape(2, 2))

    _refuse_size_only(reading(w, h, 4095.0), path, 0)  # read another way than the table: by its header
    _refuse_size_only(reading(w // 2, h, white), path, 0)
    with pytest.raises(SizeOnlyError, match="no raw header"):
        _refuse_size_only(reading(w, h, white), path, 0)


def test_libraw_decoder_takes_no_layout_and_no_npy(tmp_path: Path) -> None:
    assert HeaderlessParams(None, None, decoder="libraw").decoder == "libraw"
    with pytest.raises(ConfigError, match="takes the layout from LibRaw; remove width, height, white"):
        HeaderlessParams(8, 6, white=1023, decoder="libraw")
    with pytest.raises(ConfigError, match="unknown decoder 'dcraw'; valid: 'headerless', 'libraw'"):
        HeaderlessParams(8, 6, decoder="dcraw")
    np.save(tmp_path / "f.npy", np.zeros((6, 8), np.uint16))
    (tmp_path / "redi.json").write_text(json.dumps({"decoder": "libraw"}))
    with pytest.raises(FrameError, match=r"f\.npy\): sidecar redi\.json says decoder 'libraw', which applies to \.raw"):
        RawFileSource(tmp_path / "f.npy").read(0)


def test_broken_sidecar_is_a_frame_error(tmp_path: Path) -> None:
    _write_raw(tmp_path / "a.raw")
    (tmp_path / "a.raw.json").write_text('{"width": 8, "heigth": 6}')
    with pytest.raises(FrameError, match=r"unknown key\(s\) heigth; valid: width, height"):
        RawFileSource(tmp_path / "a.raw").read(0)


def test_headerless_params_validation_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="valid: RGGB, BGGR, GRBG, GBRG"):
        HeaderlessParams(8, 6, cfa="RGBW")
    with pytest.raises(ConfigError, match="valid: 'u1'"):
        HeaderlessParams(8, 6, dtype="float32")
    with pytest.raises(ConfigError, match="1 or 4 values"):
        HeaderlessParams(8, 6, black=(1, 2))
    with pytest.raises(ConfigError, match="must be finite and exceed"):
        HeaderlessParams(8, 6, black=100, white=100)
    with pytest.raises(ConfigError, match="width must be a positive integer"):
        HeaderlessParams(0, 6)
    with pytest.raises(ConfigError, match="bits"):
        HeaderlessParams(8, 6, bits=20)
    p = HeaderlessParams(8, 6, black=2, dtype="uint16")
    assert p.dtype == "<u2" and p.black_level == (2.0,) * 4 and p.white_level() == 65535 and p.frame_bytes() == 96
    (tmp_path / "p.json").write_text(json.dumps({"width": 1920, "height": 1080, "cfa": "RGGB", "white": 1023}))
    assert HeaderlessParams.from_json(tmp_path / "p.json") == HeaderlessParams(1920, 1080, white=1023)
    (tmp_path / "bad.json").write_text("{width: 3")
    with pytest.raises(ConfigError, match="not valid JSON"):
        HeaderlessParams.from_json(tmp_path / "bad.json")


def test_npy_frames_and_their_defaults(tmp_path: Path) -> None:
    ints = np.arange(48, dtype=np.int32).reshape(6, 8) * 100
    np.save(tmp_path / "f0.npy", ints)
    np.save(tmp_path / "f1.npy", ints.astype(np.float64) + 0.4)
    src = RawFileSource(tmp_path)
    f0, f1 = src.read(0), src.read(1)
    np.testing.assert_array_equal(f0.data, ints.astype(np.uint16))
    np.testing.assert_array_equal(f1.data, ints.astype(np.uint16))  # rounded
    assert f0.meta.cfa is CFA.RGGB and f0.meta.black_level == (0.0,) * 4 and f0.meta.white_level == 2**31 - 1
    assert f1.meta.white_level == 65535
    np.save(tmp_path / "u8.npy", np.full((6, 8), 9, np.uint8))
    assert RawFileSource(tmp_path / "u8.npy").read(0).meta.white_level == 255
    (tmp_path / "redi.json").write_text(json.dumps({"cfa": "GRBG", "black": 64, "bits": 12}))
    meta = RawFileSource(tmp_path / "f0.npy").read(0).meta
    assert meta.cfa is CFA.GRBG and meta.black_level == (64.0,) * 4 and meta.white_level == 4095
    params = HeaderlessParams(width=9, height=6)
    with pytest.raises(FrameError, match="array is 6x8, but raw_params says 6x9"):
        RawFileSource(tmp_path / "f0.npy", raw_params=params).read(0)


@pytest.mark.parametrize(
    "array, needle",
    [
        (np.full((6, 8), -1, np.int16), r"span \[-1, -1\]"),
        (np.full((6, 8), 7e4), "expected raw DN"),
        (np.full((6, 8), np.nan), "NaN"),
        (np.zeros((6, 8, 3), np.uint16), r"shape \(6, 8, 3\)"),
        (np.zeros((6, 8), bool), "unsupported dtype bool"),
    ],
)
def test_bad_npy_frames(tmp_path: Path, array: np.ndarray, needle: str) -> None:
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(FrameError, match=needle):
        RawFileSource(tmp_path / "x.npy").read(0)


@pytest.mark.parametrize("order", ["C", "F"])
def test_a_stacked_npy_is_a_sequence_of_frames(tmp_path: Path, order: str) -> None:
    stack = np.random.default_rng(7).integers(0, 4096, (4, 6, 8)).astype(np.uint16)
    np.save(tmp_path / "clip.npy", np.asarray(stack, order=order))
    np.save(tmp_path / "more.npy", stack[:1, :, :] + 1)  # (1, H, W): a stack of one
    np.save(tmp_path / "single.npy", stack[2])  # (H, W): one frame
    src = RawFileSource(tmp_path)
    assert len(src) == 6
    assert src.names == ["clip.npy[0]", "clip.npy[1]", "clip.npy[2]", "clip.npy[3]", "more.npy[0]", "single.npy"]
    for i, want in enumerate([*stack, stack[0] + 1, stack[2]]):
        frame = src.read(i)
        np.testing.assert_array_equal(frame.data, want)
        assert frame.data.flags.c_contiguous and frame.name == src.names[i] and frame.index == i


def test_stacked_npy_faults_name_the_frame_in_the_stack(tmp_path: Path) -> None:
    stack = np.full((3, 6, 8), 100.0)
    stack[2, 0, 0] = np.nan
    np.save(tmp_path / "clip.npy", stack)
    src = RawFileSource(tmp_path / "clip.npy")
    src.read(1)
    with pytest.raises(FrameError, match=r"frame 2 \(.*clip\.npy\[2\]\): float array holds NaN"):
        src.read(2)
    np.save(tmp_path / "empty.npy", np.zeros((0, 6, 8), np.uint16))
    with pytest.raises(CaptureError, match=r"no frames in .*empty\.npy"):
        RawFileSource(tmp_path / "empty.npy")
    np.save(tmp_path / "rgb.npy", np.zeros((6, 8, 3), np.uint16))  # (H, W, 3) is RGB, not a stack of 6
    with pytest.raises(FrameError, match=r"shape \(6, 8, 3\)"):
        RawFileSource(tmp_path / "rgb.npy").read(0)


def test_normalised_float_npy_frames_are_scaled_to_16_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    norm = (rng.random((6, 8)) * 0.02).astype(np.float32)  # a dark frame, normalised: white 1
    np.save(tmp_path / "a.npy", norm)
    f = RawFileSource(tmp_path / "a.npy").read(0)
    np.testing.assert_array_equal(f.data, np.round(norm.astype(np.float64) * 65535).astype(np.uint16))
    assert f.meta.white_level == 65535 and f.meta.black_level == (0.0,) * 4
    assert f.meta.warnings == (".npy frames: float values taken as normalised (white 1) and scaled to 16 bits",)
    # A white level of at most 1 in the parameters says the same; its black level is scaled alike.
    np.save(tmp_path / "b.npy", norm + 0.0625)
    params = HeaderlessParams(None, None, black=0.0625, white=1.0)
    f = RawFileSource(tmp_path / "b.npy", raw_params=params).read(0)
    assert f.meta.black_level == (0.0625 * 65535,) * 4 and f.meta.white_level == 65535
    # Float DN (values above 1, or a white level above 1) stay DN, as before.
    np.save(tmp_path / "c.npy", norm * 4000 + 64)
    f = RawFileSource(tmp_path / "c.npy").read(0)
    assert f.meta.white_level == 65535 and f.meta.warnings == () and f.data.max() < 200
    f = RawFileSource(tmp_path / "a.npy", raw_params=HeaderlessParams(None, None, white=1023.0)).read(0)
    assert f.data.max() <= 1 and f.meta.white_level == 1023


def test_truncated_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((60, 80), np.uint16))
    blob = (tmp_path / "x.npy").read_bytes()
    (tmp_path / "x.npy").write_bytes(blob[:500])
    with pytest.raises(FrameError, match=r"frame 0 \(.*x\.npy\)"):
        RawFileSource(tmp_path / "x.npy").read(0)


# -- fps, timestamps, protocol ----------------------------------------------------------------------------------------


def test_fps_from_cinemadng_tag_else_argument_else_24(make_dngs, tmp_path: Path) -> None:
    tagged = make_dngs(["a.dng", "b.dng"], fps=29.97, folder="tagged")
    plain = make_dngs(["a.dng"], folder="plain")
    assert RawFileSource(tagged[0].parent).fps == pytest.approx(29.97)
    assert RawFileSource(tagged[0].parent, fps=50).fps == 50.0  # an explicit rate wins
    assert RawFileSource(plain[0].parent).fps == 24.0
    src = RawFileSource(tagged[0].parent)
    assert [f.t_ns for f in src] == [0, round(1e9 / 29.97)]
    with pytest.raises(ConfigError, match="fps"):
        RawFileSource(plain[0], fps=0)


def test_lifecycle_and_indexing(make_dngs) -> None:
    paths = make_dngs(["a.dng", "b.dng"])
    src = RawFileSource(paths[0].parent)
    assert [f.index for f in src] == [0, 1] and [f.name for f in src] == ["a.dng", "b.dng"]
    with pytest.raises(IndexError):
        src.read(2)
    with pytest.raises(IndexError):
        src.read(-1)
    src.close()
    src.close()
    with pytest.raises(CaptureError, match="closed"):
        src.read(0)
    with pytest.raises(RuntimeError):
        with RawFileSource(paths[0].parent) as inner:
            raise RuntimeError("boom")
    assert inner._closed


def test_concurrent_reads_match_sequential(make_dngs, tiny) -> None:
    paths = make_dngs([f"f{i}.dng" for i in range(8)])
    src = RawFileSource(paths[0].parent)
    with ThreadPoolExecutor(max_workers=4) as pool:  # the stream package's decode pool, in miniature
        frames = list(pool.map(src.read, reversed(range(8))))
    for frame in frames:
        np.testing.assert_array_equal(frame.data, tiny.bayer(frame.index))
        assert frame.data.flags.c_contiguous and frame.data.flags.writeable


# -- metadata fallbacks ---------------------------------------------------------------------------------------------


def test_missing_colour_matrix_and_white_balance_fall_back_with_warnings(tmp_path: Path, write_plain_dng) -> None:
    data = np.full((24, 32), 500, np.uint16)
    full = RawFileSource(write_plain_dng(tmp_path / "full.dng", data)).read(0).meta
    assert full.warnings == () and full.wb_gains == pytest.approx((2.0, 1.0, 1.0)) and full.camera == "Test Cam"

    no_matrix = RawFileSource(write_plain_dng(tmp_path / "nocm.dng", data, ColorMatrix1=None)).read(0).meta
    np.testing.assert_array_equal(no_matrix.cam_to_srgb, np.eye(3))
    assert no_matrix.warnings == ("no colour matrix in nocm.dng; using identity (colours will be camera-native)",)
    assert no_matrix.wb_gains == pytest.approx((2.0, 1.0, 1.0))

    no_wb = RawFileSource(write_plain_dng(tmp_path / "nowb.dng", data, AsShotNeutral=None)).read(0).meta
    assert no_wb.warnings == ("no as-shot white balance in nowb.dng; using the camera's daylight balance",)
    assert no_wb.wb_gains[1] == 1.0 and no_wb.wb_gains != (1.0, 1.0, 1.0)  # derived from the colour matrix

    bare = RawFileSource(write_plain_dng(tmp_path / "bare.dng", data, AsShotNeutral=None, ColorMatrix1=None))
    meta = bare.read(0).meta
    assert meta.wb_gains == (1.0, 1.0, 1.0)
    assert meta.warnings == (
        "no white balance in bare.dng; using unity gains (colours will be camera-native)",
        "no colour matrix in bare.dng; using identity (colours will be camera-native)",
    )


def test_white_not_above_black_is_a_frame_error(tmp_path: Path, write_plain_dng) -> None:
    path = write_plain_dng(tmp_path / "x.dng", np.full((24, 32), 500, np.uint16), BlackLevel=4095, WhiteLevel=4095)
    with pytest.raises(FrameError, match=r"frame 0 \(.*x\.dng\): bad metadata: white level"):
        RawFileSource(path).read(0)


@pytest.mark.parametrize("cfa", [CFA.RGGB, CFA.GBRG])
def test_lossless_jpeg_dngs_read_exactly_beside_uncompressed_ones(tmp_path: Path, tiny, write_lj92_dng,
                                                                   cfa: CFA) -> None:
    """CinemaDNG cameras store frames as lossless JPEG (LJ92): LibRaw decodes them, never the uncompressed fast path
    (whose reference frame the uncompressed files in the same folder set up)."""
    import tifffile

    from redi_stream.capture import write_dng

    clip = tmp_path / "clip"
    clip.mkdir()
    frames = [tiny.bayer(i, (48, 64)) for i in range(5)]
    for i, f in enumerate(frames):
        write = write_lj92_dng if i in (1, 2, 4) else write_dng
        write(clip / f"f{i}.dng", f, tiny.meta(cfa))
    with tifffile.TiffFile(clip / "f1.dng") as t:
        assert int(t.pages[0].compression) == 7  # really lossless JPEG
    with RawFileSource(clip) as src:
        for i, frame in enumerate(src):
            np.testing.assert_array_equal(frame.data, frames[i], err_msg=frame.name)
            assert frame.meta.cfa is cfa and frame.meta.wb_gains == pytest.approx(tiny.meta(cfa).wb_gains, rel=1e-5)


def test_headerless_dump_of_several_frames(tmp_path: Path) -> None:
    """``v4l2-ctl --stream-to`` writes frame after frame into one file: a whole number of frames is that many."""
    frames = [(np.arange(48).reshape(6, 8) * 7 + 100 * k).astype(np.uint16) for k in range(4)]
    (tmp_path / "dump").mkdir()
    (tmp_path / "dump" / "dump.raw").write_bytes(b"HDR!" + b"".join(f.astype("<u2").tobytes() for f in frames))
    params = HeaderlessParams(8, 6, cfa="BGGR", black=16, offset=4)
    with RawFileSource(tmp_path / "dump", raw_params=params) as src:
        assert len(src) == 4 and src.names == [f"dump.raw[{k}]" for k in range(4)]
        for k in (3, 0, 2):
            np.testing.assert_array_equal(src.read(k).data, frames[k])
        assert src.read(1).meta.cfa is CFA.BGGR
    # A size that is no whole number of frames is one bad frame, named with what was expected.
    (tmp_path / "dump" / "dump.raw").write_bytes(b"HDR!" + b"".join(f.astype("<u2").tobytes() for f in frames) + b"x")
    with RawFileSource(tmp_path / "dump", raw_params=params) as src:
        assert len(src) == 1
        with pytest.raises(FrameError, match=r"frame 0 \(.*dump.raw\): file is 389 bytes, expected 100 for 6x8 <u2 "
                                             r"after a 4-byte header \(or a whole number of such frames\)"):
            src.read(0)
    # The dump shrinks after it was listed: the missing frame is named.
    (tmp_path / "dump" / "dump.raw").write_bytes(b"HDR!" + b"".join(f.astype("<u2").tobytes() for f in frames))
    with RawFileSource(tmp_path / "dump", raw_params=params) as src:
        (tmp_path / "dump" / "dump.raw").write_bytes(b"HDR!" + frames[0].astype("<u2").tobytes() * 2)
        with pytest.raises(FrameError, match=r"frame 3 \(.*dump.raw\[3\]\): file holds 0 samples for frame 3"):
            src.read(3)
