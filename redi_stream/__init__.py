"""redi-stream: real-time enhancement of extremely dark RAW video with the REDI network.

Layout (arrows point the way imports go)::

    cli / config  ->  stream  ->  {capture, kernels, model}  ->  frames / errors / amplifier / glibc / argparser

``capture``, ``kernels`` and ``model`` never import each other; only ``stream`` runs threads.
"""

__version__ = "0.1.0"

#: Attributes imported on first use, so ``import redi_stream`` stays light (no torch, OpenCV or PyAV).
_LAZY = {"Enhancer": "redi_stream.api", "open_raw": "redi_stream.api"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'redi_stream' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
