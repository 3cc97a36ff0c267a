"""FollowingSource (``--follow``): frames from a folder that a writer is still filling."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from redi_stream.capture import write_dng
from redi_stream.errors import CaptureError, FrameError
from redi_stream.stream.follow import FollowingSource
from tests.capture.conftest import tiny_bayer, tiny_meta

FAST = dict(poll_s=0.02, settle_s=0.05)


@pytest.fixture()
def tiny() -> SimpleNamespace:
    return SimpleNamespace(meta=tiny_meta, bayer=tiny_bayer)


def _writer(folder: Path, tiny, names: list[str], *, delay: float = 0.03, first_delay: float = 0.0,
            atomic: bool = True, torn: str | None = None, first: int = 0) -> threading.Thread:
    """Write tiny DNG frames named ``names`` (pictures ``tiny.bayer(first)``, ...) into ``folder`` one by one;
    ``torn`` is written as garbage."""

    def run() -> None:
        time.sleep(first_delay)
        for i, name in enumerate(names, start=first):
            target = folder / name
            if name == torn:
                target.write_bytes(b"II*\0" + b"\0" * 200)
            elif atomic:
                tmp = write_dng(folder / f".{name}.tmp.dng", tiny.bayer(i), tiny.meta())
                tmp.rename(target)
            else:  # written in two halves with a pause between: must not be read in between
                data = write_dng(folder.parent / f"staging_{name}", tiny.bayer(i), tiny.meta()).read_bytes()
                with open(target, "wb") as f:
                    f.write(data[: len(data) // 2])
                    f.flush()
                    time.sleep(0.02)
                    f.write(data[len(data) // 2:])
            time.sleep(delay)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _drain(src: FollowingSource, stop: threading.Event | None = None, skip_errors: bool = False) -> list:
    got, it = [], src.iter_frames(stop)
    while True:
        try:
            got.append(next(it))
        except StopIteration:
            return got
        except FrameError as exc:
            if not skip_errors:
                raise
            got.append(exc)


@pytest.mark.parametrize("atomic, workers", [(True, 1), (False, 1), (True, 3)])
def test_frames_written_while_following_all_arrive_whole_and_in_order(tmp_path: Path, tiny, atomic: bool,
                                                                      workers: int) -> None:
    folder = tmp_path / "live"
    folder.mkdir()
    names = [f"f_{i:04d}.dng" for i in range(12)]
    for i in range(3):  # a backlog is there before the run (decoded ahead with workers > 1)
        write_dng(folder / names[i], tiny.bayer(i), tiny.meta())
    writer = _writer(folder, tiny, names[3:], atomic=atomic, first=3)
    t0 = time.monotonic()
    with FollowingSource(folder, idle_s=2.0, workers=workers, **FAST) as src:  # 2 s: the writer may be paused
        frames = _drain(src)
    writer.join(5)
    assert [f.name for f in frames] == names and [f.index for f in frames] == list(range(12))
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(f.data, tiny.bayer(i))
    assert [f.t_ns for f in frames] == [round(i * 1e9 / 24) for i in range(12)]
    assert time.monotonic() - t0 < 10  # ended about idle_s after the last frame


def test_an_empty_folder_waits_for_its_first_frame_and_start_skips(tmp_path: Path, tiny) -> None:
    folder = tmp_path / "later"
    folder.mkdir()
    writer = _writer(folder, tiny, ["a1.dng", "a2.dng", "a3.dng"], first_delay=0.3)
    with FollowingSource(str(folder / "*.dng"), idle_s=2.0, start=1, fps=30, **FAST) as src:
        assert src.fps == 30
        frames = _drain(src)
    writer.join(5)
    assert [f.name for f in frames] == ["a2.dng", "a3.dng"] and frames[0].index == 1


@pytest.mark.parametrize("workers", [1, 3])
def test_a_bad_frame_is_an_error_naming_it_and_the_next_ones_still_come(tmp_path: Path, tiny, workers: int) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    writer = _writer(folder, tiny, ["b0.dng", "b1.dng", "b2.dng"], torn="b1.dng")
    with FollowingSource(folder, idle_s=2.0, workers=workers, **FAST) as src:
        got = _drain(src, skip_errors=True)
    writer.join(5)
    assert got[0].name == "b0.dng" and got[2].name == "b2.dng"
    assert isinstance(got[1], FrameError) and "b1.dng" in str(got[1])


def test_stop_ends_the_wait_and_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "quiet"
    folder.mkdir()
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    t0 = time.monotonic()
    with FollowingSource(folder, idle_s=30, fps=24, **FAST) as src:  # fps given: no wait for a first file's rate
        assert _drain(src, stop) == []
    assert time.monotonic() - t0 < 3
    with pytest.raises(CaptureError, match="--follow watches a folder or a glob; .*nowhere is not a folder"):
        FollowingSource(tmp_path / "nowhere")


def test_tethered_photos_of_any_size_with_alike_false(tmp_path: Path, tiny) -> None:
    folder = tmp_path / "tether"
    folder.mkdir()
    write_dng(folder / "IMG_1.dng", tiny.bayer(0, (24, 32)), tiny.meta())
    write_dng(folder / "IMG_2.dng", tiny.bayer(1, (32, 48)), tiny.meta())
    with FollowingSource(folder, idle_s=0.3, alike=False, **FAST) as src:
        assert [f.data.shape for f in _drain(src)] == [(24, 32), (32, 48)]
    with FollowingSource(folder, idle_s=0.3, **FAST) as src, pytest.raises(FrameError, match="separate photos"):
        _drain(src)


def test_an_empty_folder_takes_its_rate_from_the_first_file_that_arrives(tmp_path: Path, tiny) -> None:
    folder = tmp_path / "recorder"
    folder.mkdir()

    def record() -> None:  # a CinemaDNG recorder that starts after redi-stream
        time.sleep(0.3)
        for i in range(3):
            write_dng(folder / f"C_{i:04d}.dng", tiny.bayer(i), tiny.meta(), fps=25)

    threading.Thread(target=record, daemon=True).start()
    with FollowingSource(folder, idle_s=3.0, **FAST) as src:
        assert src.fps == 25 and src.tagged_fps == 25
        frames = _drain(src)
    assert [f.t_ns for f in frames] == [0, 40_000_000, 80_000_000]
