"""The protocol every indexed (file-like) source follows; :mod:`redi_stream.stream` relies only on this."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from redi_stream.frames import RawFrame


@runtime_checkable
class FrameSource(Protocol):
    """A finite sequence of raw frames decoded on demand.

    ``read`` is thread-safe and owns no state between calls, so a bounded pool of decode threads may call it
    concurrently for different indices; frames come back owned by the caller. ``close`` is idempotent.
    """

    name: str
    names: list[str]
    fps: float
    live: bool

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[RawFrame]: ...
    def read(self, index: int) -> RawFrame: ...
    def close(self) -> None: ...


class RandomAccessSource:
    """Lifecycle shared by the file and synthetic sources: iteration over ``read(i)``, ``with``, idempotent close.

    Subclasses provide ``__len__`` and ``read(i)``; neither holds an open handle between reads, so closing only
    marks the source closed.
    """

    _closed: bool = False

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int) -> RawFrame:
        raise NotImplementedError

    def __iter__(self) -> Iterator[RawFrame]:
        for i in range(len(self)):
            yield self.read(i)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Mark the source closed (no handles are held between reads). Safe to call more than once."""
        self._closed = True
