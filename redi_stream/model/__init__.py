"""The REDI network, its weights, and the runners that execute it (torch; no threads).

Public API::

    RediNet, fold_weight_norm, count_parameters          # net.py (SPEC §2)
    WeightsMeta, load_weights, save_weights, default_weights_path   # weights.py
    TorchRunner, StreamedRunner                           # runner.py (CPU fast path; CUDA streams + graphs)
    run_tiled, TiledRunner, DeviceMemoryError             # tiling.py (tiles; out-of-memory fallback)

``model`` never imports ``capture``, ``kernels`` or ``stream`` and never starts a thread.
"""

from redi_stream.model.net import RediNet, count_parameters, fold_weight_norm
from redi_stream.model.runner import StreamedRunner, TorchRunner
from redi_stream.model.tiling import DeviceMemoryError, TiledRunner, run_tiled
from redi_stream.model.weights import WeightsMeta, default_weights_path, load_weights, save_weights

__all__ = [
    "RediNet",
    "count_parameters",
    "fold_weight_norm",
    "WeightsMeta",
    "default_weights_path",
    "load_weights",
    "save_weights",
    "TorchRunner",
    "StreamedRunner",
    "run_tiled",
    "TiledRunner",
    "DeviceMemoryError",
]
