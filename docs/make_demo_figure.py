"""Make ``docs/demo_before_after.jpg``: frame 20 of the embedded demo clip (``redi-stream demo``), the dark raw
amplified x150, demosaiced and colour-corrected with no denoising (left: ``--model classic`` without its
denoiser) beside redi-stream's output with the shipped weights on the CPU (right).

Run from the repository root: ``python docs/make_demo_figure.py``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from redi_stream.capture import SyntheticSource
from redi_stream.model import TorchRunner, default_weights_path, load_weights
from redi_stream.stream import ClassicEnhancer, RediEnhancer

FRAME = 20
OUT = Path(__file__).with_name("demo_before_after.jpg")


def main() -> None:
    with SyntheticSource.demo() as source:
        frame = source.read(FRAME)
    with ClassicEnhancer(gain=source.ratio, denoise=False) as enh:
        naive = enh.process(frame).rgb
    model = load_weights(default_weights_path())
    with TorchRunner(model, "cpu") as runner, RediEnhancer(runner, model.meta) as enh:
        enhanced = enh.process(frame).rgb
    h, w = naive.shape[:2]
    size = (w * 3 // 4, h * 3 // 4)
    naive, enhanced = (cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in (naive, enhanced))
    side = np.concatenate([naive, np.full((naive.shape[0], 8, 3), 255, np.uint8), enhanced], axis=1)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(side, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise SystemExit(f"{OUT}: JPEG encoding failed")
    OUT.write_bytes(buf.tobytes())
    print(f"wrote {OUT} ({len(buf) // 1024} KB, {side.shape[1]}x{side.shape[0]})")


if __name__ == "__main__":
    main()
