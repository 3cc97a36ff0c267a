"""Frames from a folder that a capture program is still writing (``redi-stream DIR --follow``).

A Raspberry Pi writing ``rpicam-still --raw`` DNGs, a machine-vision SDK dumping frames, a tethered camera: the
frames arrive as files. :class:`FollowingSource` reads the ones there, then polls the folder (or glob) for new ones
and hands each on once it is complete, until none has come for ``idle_s`` seconds (or the run is stopped).

* Complete: a file is taken when its size and modification time are the same at two polls in a row (``poll_s``
  apart) and it was last modified ``settle_s`` ago or more, so a frame is not read half-written by a writer that
  pauses for less than that; hidden names (``.x.dng.partial``, as writers that rename into place use) are never
  taken. A frame read half-written anyway is a :class:`FrameError` (truncated), never a wrong picture.
* Order: the files present at the start in natural order, then new files in the order they complete (natural
  order among those that complete at the same poll). Frames already there are decoded ahead on ``workers``
  threads (``--decode-workers``), so a backlog of lossless-JPEG CinemaDNG is read in parallel.
* Timing: frame k at ``k / fps``; ``fps`` is ``--fps``, else the CinemaDNG frame rate of the first file (an
  empty folder is waited on for its first file, up to ``idle_s``, before the run starts), else 24.
* Not live: nothing is dropped; a slow network makes the run lag behind the writer, which it then catches up with.

Decoding, metadata, consistency checks and errors are :class:`~redi_stream.capture.files.RawFileSource`'s (one
instance grows as files arrive; it lives in stream/ because its decode-ahead pool is a thread, which capture/ does
not start), so a bad frame is a :class:`FrameError` naming it, and ``--on-error skip`` goes on to the next.
"""

from __future__ import annotations

import collections
import glob
import os
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..capture.files import DEFAULT_FPS, FRAME_SUFFIXES, RawFileSource, is_glob, natural_key, read_cinemadng_fps
from ..capture.headerless import HeaderlessParams
from ..errors import CaptureError, ConfigError
from ..frames import RawFrame


class FollowingSource:
    """Raw frames from a folder or glob that keeps receiving files; see the module docstring.

    Args:
        spec: a folder (its raw-frame files, as :class:`RawFileSource` lists them) or a glob pattern.
        raw_params, fps, alike: as for :class:`RawFileSource` (``alike=False``: photos of any size, ``--stills``).
        idle_s: end after this many seconds without a new frame.
        start: the first frame to hand on (0-based, in the order above).
        poll_s: how often the folder is looked at while waiting. settle_s: how long a file must be left alone.
        workers: decode the frames already there ahead on this many threads (1: each when asked for).

    Raises:
        CaptureError: the folder does not exist (a glob's folder may not exist yet either: it is an error too).
        ConfigError: bad timing arguments.
    """

    live = False

    def __init__(self, spec: str | os.PathLike[str], *, raw_params: HeaderlessParams | None = None,
                 fps: float | None = None, idle_s: float = 10.0, start: int = 0, poll_s: float = 0.1,
                 settle_s: float = 0.25, alike: bool = True, workers: int = 1) -> None:
        if not (idle_s > 0 and poll_s > 0 and start >= 0):
            raise ConfigError(f"follow: need idle_s > 0, poll_s > 0, start >= 0 (got {idle_s}, {poll_s}, {start})")
        self.name = os.fspath(spec)
        text = os.path.expanduser(self.name)
        self._glob = text if is_glob(text) else None
        self._folder = Path(text)
        if self._glob is None and not self._folder.is_dir():
            raise CaptureError(f"--follow watches a folder or a glob; {self.name} is not a folder")
        if self._glob is not None and not Path(os.path.dirname(text) or ".").is_dir():
            raise CaptureError(f"--follow: the folder of {self.name} does not exist")
        self.idle_s, self.poll_s, self.settle_s, self._next = float(idle_s), float(poll_s), float(settle_s), int(start)
        self._raw_params, self._alike, self.workers = raw_params, alike, max(1, int(workers))
        self._pools: list[ThreadPoolExecutor] = []
        self._taken: set[Path] = set()
        self._last_seen: dict[Path, tuple[int, int]] = {}  # candidate -> (size, mtime_ns) at the last poll
        self._files: RawFileSource | None = None
        self._poll()  # notes what is there; what has not changed by the next poll is taken
        time.sleep(max(self.poll_s, self.settle_s))
        first = self._poll()
        if fps is None:  # the video's rate comes from the first file: wait for one (as long as a run would)
            since = time.monotonic()
            while not first and time.monotonic() - since < self.idle_s:
                time.sleep(self.poll_s)
                first = self._poll()
        tagged = next((read_cinemadng_fps(p) for p in first if p.suffix.lower() == ".dng"), None)
        self.fps = float(fps) if fps is not None else (tagged or DEFAULT_FPS)
        self.tagged_fps = tagged
        if first:
            self._add(first)

    def describe(self) -> str:
        return f"{self.name} (following: ends {self.idle_s:g} s after the last new frame)"

    # -- the folder -------------------------------------------------------------------------------------------

    def _candidates(self) -> list[Path]:
        if self._glob is not None:
            found = [Path(m) for m in glob.glob(self._glob, recursive=True)]
        else:
            try:
                found = [p for p in self._folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]
            except OSError as exc:
                raise CaptureError(f"cannot list {self.name}: {exc.strerror or exc}") from exc
        return [p for p in found if not p.name.startswith(".") and p not in self._taken]

    def _poll(self) -> list[Path]:
        """The files that became complete since the last poll, in natural order."""
        seen: dict[Path, tuple[int, int]] = {}
        complete = []
        now_ns = time.time_ns()
        for p in self._candidates():
            try:
                st = p.stat()
            except OSError:
                continue  # gone again (renamed into place under another name, or removed)
            if not stat.S_ISREG(st.st_mode):
                continue
            seen[p] = (st.st_size, st.st_mtime_ns)
            settled = now_ns - st.st_mtime_ns >= self.settle_s * 1e9
            if st.st_size and settled and self._last_seen.get(p) == seen[p]:
                complete.append(p)
        self._last_seen = {p: v for p, v in seen.items() if p not in complete}
        self._taken.update(complete)
        return sorted(complete, key=lambda p: natural_key(str(p)))

    def _add(self, paths: list[Path]) -> None:
        if self._files is None:
            self._files = RawFileSource(paths, raw_params=self._raw_params, fps=self.fps, alike=self._alike)
        else:
            self._files.append(paths)

    # -- frames ------------------------------------------------------------------------------------------------

    def iter_frames(self, stop: threading.Event | None = None) -> Iterator[RawFrame]:
        """Frames as they arrive, until none has come for ``idle_s`` or ``stop`` is set. A frame that cannot be
        read raises :class:`FrameError`; iterating again goes on with the next."""
        return _Following(self, stop)

    def __iter__(self) -> Iterator[RawFrame]:
        return self.iter_frames()

    def close(self) -> None:
        for pool in self._pools:  # reads still running finish (a file decode is bounded); nothing new starts
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools.clear()
        if self._files is not None:
            self._files.close()

    def __enter__(self) -> FollowingSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Following:
    """The iterator of :meth:`FollowingSource.iter_frames` (a class, not a generator: a read error leaves it
    usable, so the pipeline's ``--on-error skip`` goes on). With ``workers > 1`` the next frames already there are
    decoded ahead on a thread pool (LibRaw decodes lossless-JPEG CinemaDNG without the GIL), handed on in order."""

    def __init__(self, source: FollowingSource, stop: threading.Event | None) -> None:
        self._source, self._stop = source, stop
        self._ahead: collections.deque[tuple[int, Future]] = collections.deque()
        workers = source.workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="redi-follow") if workers > 1 else None
        if self._pool is not None:
            source._pools.append(self._pool)

    def __iter__(self) -> _Following:
        return self

    def __next__(self) -> RawFrame:
        src, stop = self._source, self._stop
        waiting_since = time.monotonic()
        while stop is None or not stop.is_set():
            files = src._files
            if files is not None and self._pool is not None:
                while src._next < len(files) and len(self._ahead) < 2 * src.workers:
                    self._ahead.append((src._next, self._pool.submit(files.read, src._next)))
                    src._next += 1
                if self._ahead:
                    return self._ahead.popleft()[1].result()  # a bad frame raises its FrameError here, in order
            elif files is not None and src._next < len(files):
                src._next += 1
                return files.read(src._next - 1)
            new = src._poll()
            if new:
                src._add(new)
                continue
            if time.monotonic() - waiting_since >= src.idle_s:
                break
            if stop is not None:
                stop.wait(src.poll_s)
            else:
                time.sleep(src.poll_s)
        raise StopIteration
