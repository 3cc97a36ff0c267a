"""How far a light in the frame reaches into the network's output, by input ceiling: ``python docs/measure_lights.py``.

A 256x384 synthetic dark frame (``SyntheticSource``, ratio 100, seed 0), enhanced with the shipped weights at a fixed
gain of 110, fp32 on the CPU; then the same frame with an 8x8 lamp at half of white, and with one hot pixel at half
of white. For each ceiling on the amplified input (``amplifier.INPUT_CEILING``, set here by monkeypatching the
packer's module), the share of the frame's pixels that moved by more than 8 codes and the mean change. ``none`` is
the network fed ``r * A`` unclipped, as SPEC §3 writes it. The README's "The colour pipeline" quotes the output.
"""

from __future__ import annotations

import numpy as np

import redi_stream
import redi_stream.kernels.pack as pack
from redi_stream.capture import SyntheticSource


def main() -> None:
    frame = SyntheticSource(n_frames=1, ratio=100, seed=0, size=(256, 384)).read(0)
    meta = frame.meta
    kw = dict(cfa=meta.cfa.name, black=meta.black_level[0], white=meta.white_level, wb_gains=meta.wb_gains)
    lights = {"8x8 lamp": (slice(60, 68), slice(60, 68)), "hot pixel": (128, 192)}
    half = int(meta.white_level * 0.5)
    default = pack.INPUT_CEILING
    print(f"{'ceiling':>8} {'light':>10} {'pixels > 8 codes':>17} {'mean change':>12}")
    try:
        for ceiling in (1.0, 1.25, 1.5, 2.0, 4.0, None):
            pack.INPUT_CEILING = float("inf") if ceiling is None else ceiling
            with redi_stream.Enhancer(device="cpu", precision="fp32", gain=110.0) as enhance:
                base = enhance(frame.data, **kw).astype(int)
                for name, where in lights.items():
                    lit = frame.data.copy()
                    lit[where] = half
                    out = enhance(lit, **kw).astype(int)
                    moved = (np.abs(out - base).max(axis=2) > 8).mean()
                    label = "none" if ceiling is None else f"{ceiling:g}"
                    print(f"{label:>8} {name:>10} {moved:>16.1%} {np.abs(out - base).mean():>12.2f}")
    finally:
        pack.INPUT_CEILING = default


if __name__ == "__main__":
    main()
