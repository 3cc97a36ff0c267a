"""Single-threaded timings of the frame-loop kernels on synthetic frames: ``python -m redi_stream.kernels.bench``.

The inputs look like real ones: a dark 14-bit Bayer frame near its black level (with a few saturated pixels, every
997th sample: hot pixels to ``fix_hot_pixels``), a brighter one, and a network output in [0, 1] cropped out of its
padded (Hp, Wp, 3) array, as the pipeline passes it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from redi_stream.frames import CFA
from redi_stream.kernels import (
    apply_isp,
    apply_isp_yuv420p,
    estimate_gain,
    fix_hot_pixels,
    float_to_uint,
    noise_scale,
    pack_raw,
    padded_shape,
    rgb_to_yuv420p,
    temporal_denoise,
    temporal_noise_scale,
    unpack_crop,
    warm_up,
)


def _time_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(min, median) wall time in ms; on a shared machine the min is the better estimate of the kernel's cost."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(np.min(times)) / 1e6, float(np.median(times)) / 1e6


def benchmark(h: int = 1080, w: int = 1920, cfa: CFA = CFA.RGGB, repeat: int = 30,
              seed: int = 0) -> dict[str, tuple[float, float]]:
    """(min, median) wall time in ms of each kernel on an (h, w) frame; compiles (warm_up) first."""
    warm_up()
    rng = np.random.default_rng(seed)
    black = np.array([512.0, 512.0, 512.0, 512.0], dtype=np.float32)
    raw = np.clip(rng.normal(540.0, 20.0, size=(h, w)), 0, 16383).astype(np.uint16)
    raw.ravel()[:: 997] = 16383
    # --hot-pixels also on a bright frame (a lit scene), where most samples pass its first test.
    bright = np.clip(rng.normal(4000.0, 60.0, size=(h, w)), 0, 16383).astype(np.uint16)
    fixed = np.empty_like(raw)
    hp, wp = padded_shape(h, w, cfa)
    packed = np.empty((hp, wp), dtype=np.float32)
    net_out = rng.random((hp, wp, 3), dtype=np.float32) ** 2.2
    lin = unpack_crop(net_out, cfa, h, w)
    wb = np.array([2.0, 1.0, 1.6], dtype=np.float32)
    m = np.array([[1.7, -0.6, -0.1], [-0.2, 1.5, -0.3], [0.05, -0.55, 1.5]], dtype=np.float32)
    rgb8 = np.empty((h, w, 3), dtype=np.uint8)
    rgb16 = np.empty((h, w, 3), dtype=np.uint16)
    he, we = h - h % 2, w - w % 2
    planes = tuple(np.empty(s, np.uint8) for s in ((he, we), (he // 2, we // 2), (he // 2, we // 2)))
    # --temporal-denoise: last output = this frame plus noise, so pixels fall on every part of the blend's ramp.
    state = np.ascontiguousarray(lin + rng.normal(0.0, 0.01, lin.shape).astype(np.float32))
    sigma = noise_scale(lin)
    return {
        "pack_raw": _time_ms(lambda: pack_raw(raw, black, 16383.0, cfa, 100.0, packed), repeat),
        "estimate_gain": _time_ms(lambda: estimate_gain(raw, black, 16383.0), repeat),
        "fix_hot_pixels_dark": _time_ms(lambda: fix_hot_pixels(raw, black, 16383.0, cfa, fixed), repeat),
        "fix_hot_pixels_bright": _time_ms(lambda: fix_hot_pixels(bright, black, 16383.0, cfa, fixed), repeat),
        "apply_isp_u8": _time_ms(lambda: apply_isp(lin, wb, m, rgb8), repeat),
        "apply_isp_u16": _time_ms(lambda: apply_isp(lin, wb, m, rgb16), repeat),
        "float_to_uint_u8": _time_ms(lambda: float_to_uint(lin, rgb8), repeat),
        "rgb_to_yuv420p": _time_ms(lambda: rgb_to_yuv420p(rgb8[:he, :we], *planes), repeat),
        "apply_isp_yuv420p": _time_ms(lambda: apply_isp_yuv420p(lin[:he, :we], wb, m, rgb8[:he, :we], *planes),
                                      repeat),
        "noise_scale": _time_ms(lambda: noise_scale(lin), repeat),
        "temporal_noise_scale": _time_ms(lambda: temporal_noise_scale(lin, state), repeat),
        "temporal_denoise": _time_ms(lambda: temporal_denoise(lin, state, 4.0, sigma), repeat),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1080x1920", help="frame size HxW (default 1080x1920)")
    parser.add_argument("--cfa", default="RGGB", choices=[c.value for c in CFA])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    h, w = (int(v) for v in args.size.lower().split("x"))
    print(f"{h}x{w} {args.cfa}, {args.repeat} runs, single thread: min / median ms")
    for name, (lo, med) in benchmark(h, w, CFA(args.cfa), args.repeat).items():
        print(f"{name:22s} {lo:8.2f} {med:8.2f}")


if __name__ == "__main__":
    main()
