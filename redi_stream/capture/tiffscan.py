"""Walking a DNG's IFDs with tifffile: every IFD (SubIFDs included), integer tag values, the raw CFA image's IFD.

Shared by the DNG fast path (:mod:`.dngfast`) and the OpcodeList2 reader (:mod:`.opcodes`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: PhotometricInterpretation of a colour-filter-array (Bayer) image.
CFA_PHOTOMETRIC = 32803


def all_ifds(pages: Any) -> Iterator[Any]:
    """Every IFD: the top-level chain in file order, each followed by its SubIFDs (depth first)."""
    for page in pages:
        yield page
        subs = page.pages
        if subs is not None:
            yield from all_ifds(subs)


def int_tag(page: Any, code: int, default: int) -> int:
    """An integer tag's value; ``default`` if absent; -1 if it holds several different values."""
    tag = page.tags.get(code)
    if tag is None:
        return default
    value = tag.value
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            return -1  # several different values: never one of the accepted ones
        value = value[0]
    return int(value)


def is_raw_cfa(page: Any) -> bool:
    """The IFD holds a full-resolution raw mosaic: NewSubfileType 0 and CFA data."""
    return int_tag(page, 254, 0) == 0 and int_tag(page, 262, -1) == CFA_PHOTOMETRIC
