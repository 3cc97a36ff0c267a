"""redi-stream: real-time enhancement of extremely dark RAW video with the REDI network.

Layout (arrows point the way imports go)::

    cli / config  ->  stream  ->  {capture, kernels, model}  ->  frames / errors / amplifier / glibc / argparser

``capture``, ``kernels`` and ``model`` never import each other; only ``stream`` runs threads.
"""

__version__ = "0.1.0"
