"""The only part of redi-stream with threads: the pipeline, its bounded channels, enhancers, sinks and stats.

Public API::

    Pipeline, PipelineConfig, RunSummary, OnError          # pipeline.py
    Channel, Policy, END                                   # channels.py
    RediEnhancer, ClassicEnhancer                          # enhance.py
    VideoSink, ImageSequenceSink, NullSink, open_sink      # sinks.py
    make_preview, WindowPreview, NullPreview               # preview.py (driven from the caller's thread)
    CameraSource, open_camera                              # camera.py (live source, reader thread redi-camera)
"""

# OpenCV before PyAV: PyAV's wheels bundle a private libxcb, and if it is loaded first OpenCV's Qt windows hang
# (PyAV issues #978, #1050). Importing cv2 here, ahead of every lazy ``import av`` in this package, keeps the
# preview window working.
import cv2  # noqa: F401  isort: skip

from redi_stream.stream.camera import CameraSource, open_camera
from redi_stream.stream.channels import END, Channel, Policy
from redi_stream.stream.enhance import ClassicEnhancer, RediEnhancer
from redi_stream.stream.pipeline import OnError, Pipeline, PipelineConfig, RunSummary
from redi_stream.stream.preview import NullPreview, WindowPreview, make_preview
from redi_stream.stream.sinks import ImageSequenceSink, NullSink, VideoSink, open_sink

__all__ = [
    "END",
    "CameraSource",
    "Channel",
    "ClassicEnhancer",
    "ImageSequenceSink",
    "NullPreview",
    "NullSink",
    "OnError",
    "Pipeline",
    "PipelineConfig",
    "Policy",
    "RediEnhancer",
    "RunSummary",
    "VideoSink",
    "WindowPreview",
    "make_preview",
    "open_camera",
    "open_sink",
]
