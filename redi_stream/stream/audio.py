"""A sound file carried into the video beside the enhanced frames (a CinemaDNG folder's ``.wav``).

:class:`AudioTrack` reads the file with PyAV, resamples it to what the video's audio encoder takes (AAC, or Opus in
WebM) and hands the video sink packets up to a time the sink names, so sound and pictures are interleaved as the
run goes (a run stopped early keeps the sound of every frame written). Time 0 of the file is the source's frame 0:
a run that starts later (``--start``) starts the sound as far in.

Used by :class:`~.sinks.VideoSink` only, on its thread.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

from ..errors import SinkError

log = logging.getLogger(__name__)

#: Sound files looked for beside a folder's frames.
AUDIO_SUFFIXES = (".wav", ".bwf")


def find_audio(folder: str | os.PathLike) -> tuple[Path | None, list[Path]]:
    """The one sound file of a frame folder, as cameras and raw converters leave it beside the frames.

    Returns:
        ``(path, candidates)``: the file when there is exactly one (else None), and every candidate found.
    """
    folder = Path(folder)
    try:
        found = sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".") and p.is_file())
    except OSError:
        return None, []
    return (found[0] if len(found) == 1 else None), found


class AudioTrack:
    """The sound of ``path``, encoded into an output container on demand.

    Args:
        path: any file FFmpeg reads with an audio stream (WAV/BWF from a camera, but also e.g. an MP3).

    Raises:
        SinkError: the file cannot be opened or holds no audio (the message names it).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        import av

        self._av = av
        self.path = Path(path)
        try:
            self._input = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot read the sound file {self.path}: {exc}") from exc
        if not self._input.streams.audio:
            self._input.close()
            raise SinkError(f"{self.path} holds no audio stream")
        self._in_stream = self._input.streams.audio[0]
        self._decoded = None  # iterator over the input's decoded frames
        self._stream = None
        self._resampler = None
        self._fifo = None
        self._rate = 0
        self._skip = 0  # samples still to drop at the start (the run starts later in the clip)
        self._written = 0  # samples handed to the encoder
        self._ended = False  # the input is used up (or failed)
        self.seconds_written = 0.0

    def add_stream(self, container, codec: str, start_s: float) -> None:
        """Add the audio stream to ``container`` (before its header is written). ``start_s``: the time in the
        file of the video's first frame."""
        av = self._av
        encoder = av.codec.Codec(codec, "w")
        in_cc = self._in_stream.codec_context
        rates = encoder.audio_rates or ()
        rate = in_cc.sample_rate if not rates or in_cc.sample_rate in rates else 48000
        layout = "stereo" if in_cc.channels >= 2 else "mono"
        self._stream = container.add_stream(codec, rate=rate, layout=layout)
        cc = self._stream.codec_context
        cc.time_base = Fraction(1, rate)
        fmt = cc.format.name if cc.format is not None else encoder.audio_formats[0].name
        self._resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        self._fifo = av.AudioFifo()
        self._rate = rate
        self._skip = max(0, round(start_s * rate))
        self._decoded = self._input.decode(self._in_stream)

    def write_until(self, t_s: float, container) -> None:
        """Encode and mux the sound up to ``t_s`` seconds of the video (whole encoder frames only)."""
        target = round(t_s * self._rate)
        size = self._stream.codec_context.frame_size or 1024
        while self._written + size <= target:
            if not self._fill(size):
                return
            self._encode(self._fifo.read(size), container)

    def finish(self, t_s: float, container) -> None:
        """Encode the sound up to ``t_s`` (the last frame may be short), then flush the encoder."""
        self.write_until(t_s, container)
        rest = round(t_s * self._rate) - self._written
        if rest > 0:
            self._fill(rest)
            rest = min(rest, self._fifo.samples) if not self._skip else 0
            if rest > 0:  # a short last frame, or what the file still had
                self._encode(self._fifo.read(rest), container)
        for packet in self._stream.encode(None):
            container.mux(packet)
        self.seconds_written = self._written / self._rate

    def _fill(self, samples: int) -> bool:
        """Decode until the FIFO holds ``samples`` after the start offset; False when the file has no more."""
        while self._fifo.samples - self._skip < samples and not self._ended:
            try:
                frame = next(self._decoded)
            except StopIteration:
                frame = None
            except (self._av.FFmpegError, OSError) as exc:
                log.warning("%s: sound unreadable after %.1f s (%s); the rest of the video is silent", self.path,
                            self._written / self._rate, exc)
                frame = None
            for out in self._resampler.resample(frame):  # None flushes the resampler
                out.pts = None
                self._fifo.write(out)
            if frame is None:
                self._ended = True
            if self._skip and self._fifo.samples:
                drop = min(self._skip, self._fifo.samples)
                self._fifo.read(drop)
                self._skip -= drop
        return self._fifo.samples - self._skip >= samples and not self._skip

    def _encode(self, frame, container) -> None:
        frame.pts = self._written
        frame.time_base = Fraction(1, self._rate)
        self._written += frame.samples
        for packet in self._stream.encode(frame):
            container.mux(packet)

    def close(self) -> None:
        """Close the input file. Idempotent."""
        if self._input is not None:
            self._input.close()
            self._input = None
