"""The protocol every indexed (file-like) source follows; :mod:`redi_stream.stream` relies only on this."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

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
