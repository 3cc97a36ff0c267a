"""Sound beside the frames: a folder's .wav carried into the video, in step with the frames written."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from redi_stream.capture import make_dng
from redi_stream.errors import SinkError
from redi_stream.frames import EnhancedFrame
from redi_stream.stream.audio import find_audio
from redi_stream.stream.sinks import VideoSink, complete_fragments_end

RATE = 44100


def write_tone(path: Path, seconds: float = 4.0, channels: int = 1) -> Path:
    """440 Hz for the first second, 880 Hz after: where a piece of the sound came from shows in its pitch."""
    t = np.arange(round(RATE * seconds)) / RATE
    sig = np.where(t < 1.0, np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 880 * t))
    pcm = np.repeat((sig * 20000).astype("<i2")[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return path


def _frames(first: int, n: int, fps: float = 24.0):
    for i in range(first, first + n):
        yield EnhancedFrame(rgb=np.full((64, 96, 3), 90, np.uint8), index=i, t_ns=round(i * 1e9 / fps), name=str(i))


def _sound(path: Path) -> tuple[str, int, np.ndarray, int]:
    """(codec, sample rate, mono samples, video frames) of a file."""
    with av.open(str(path)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        ch = a.codec_context.channels
        samples = np.concatenate([f.to_ndarray().reshape(ch, -1).mean(0) if f.format.is_planar
                                  else f.to_ndarray().reshape(-1, ch).mean(1) for f in c.decode(a)])
        return a.codec_context.name, a.codec_context.sample_rate, samples, frames


def _pitch(samples: np.ndarray, rate: int, at_s: float = 0.1) -> float:
    seg = samples[round(at_s * rate):round(at_s * rate) + 4096]
    return float(np.argmax(np.abs(np.fft.rfft(seg * np.hanning(len(seg))))) * rate / len(seg))


@pytest.mark.parametrize("name, codec", [("v.mp4", "aac"), ("v.mkv", "aac"), ("v.ts", "aac"), ("v.webm", "opus")])
@pytest.mark.parametrize("first", [0, 24])
def test_sound_follows_the_frames_written(tmp_path: Path, name: str, codec: str, first: int) -> None:
    tone = write_tone(tmp_path / "t.wav", channels=2)
    with VideoSink(tmp_path / name, fps=24, audio=tone) as sink:
        for f in _frames(first, 36):
            sink.write(f)
    got_codec, rate, samples, frames = _sound(tmp_path / name)
    assert (got_codec, frames) == (codec, 36)
    assert len(samples) / rate == pytest.approx(1.5, abs=0.05)  # 36 frames at 24 fps (plus encoder padding)
    # A video that starts at frame 24 (1 s) starts the sound 1 s in, where the pitch has changed.
    assert _pitch(samples, rate) == pytest.approx(440 if first == 0 else 880, rel=0.03)


def test_sound_shorter_than_the_video_ends_early(tmp_path: Path) -> None:
    tone = write_tone(tmp_path / "t.wav", seconds=0.5)
    with VideoSink(tmp_path / "v.mp4", fps=24, audio=tone) as sink:
        for f in _frames(0, 48):
            sink.write(f)
    _, rate, samples, frames = _sound(tmp_path / "v.mp4")
    assert frames == 48 and len(samples) / rate == pytest.approx(0.5, abs=0.05)


def test_fragments_count_frames_not_sound_packets(tmp_path: Path) -> None:
    tone = write_tone(tmp_path / "t.wav")
    path = tmp_path / "v.mp4"
    with VideoSink(path, fps=24, audio=tone) as sink:
        for f in _frames(0, 60):
            sink.write(f)
    assert complete_fragments_end(path) == (path.stat().st_size, 60)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])  # torn in its last fragment
    end, kept = complete_fragments_end(path)
    assert 0 < kept < 60 and kept % 24 == 0  # whole 1-s fragments of video frames


def test_unreadable_sound_is_named_before_any_frame(tmp_path: Path) -> None:
    (tmp_path / "not.wav").write_bytes(b"RIFF....WAVEjunk")
    with pytest.raises(SinkError, match="cannot read the sound file .*not.wav"):
        VideoSink(tmp_path / "v.mp4", fps=24, audio=tmp_path / "not.wav")
    with pytest.raises(SinkError, match="cannot read the sound file .*missing.wav"):
        VideoSink(tmp_path / "v.mp4", fps=24, audio=tmp_path / "missing.wav")
    assert not (tmp_path / "v.mp4").exists()


def test_find_audio_takes_the_one_sound_file(tmp_path: Path) -> None:
    assert find_audio(tmp_path) == (None, [])
    a = write_tone(tmp_path / "A001.WAV", seconds=0.1)
    (tmp_path / ".hidden.wav").write_bytes(b"")
    assert find_audio(tmp_path) == (a, [a])
    b = write_tone(tmp_path / "b.wav", seconds=0.1)
    assert find_audio(tmp_path) == (None, [a, b])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "redi_stream", *args, "--model", "classic", "--no-progress"],
                          capture_output=True, text=True, timeout=120)


def test_cli_carries_a_folders_wav_and_says_so(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=30, size=(64, 96), fps=24.0, ratio=100)
    write_tone(clip / "A001_C001.wav")
    run = _cli(str(clip), "--out", str(tmp_path / "o.mp4"), "--start", "24")
    assert run.returncode == 0, run.stderr
    assert f"sound: {clip / 'A001_C001.wav'} (--audio none leaves it out)" in run.stderr
    _, rate, samples, frames = _sound(tmp_path / "o.mp4")
    assert frames == 6 and len(samples) / rate == pytest.approx(0.25, abs=0.05)
    assert _pitch(samples, rate, at_s=0.0) == pytest.approx(880, rel=0.05)  # frame 24 is 1 s into the sound

    run = _cli(str(clip), "--out", str(tmp_path / "silent.mp4"), "--audio", "none", "--frames", "2")
    assert run.returncode == 0 and "sound:" not in run.stderr
    with av.open(str(tmp_path / "silent.mp4")) as c:
        assert not c.streams.audio

    write_tone(clip / "second.wav", seconds=0.1)
    run = _cli(str(clip), "--out", str(tmp_path / "two.mp4"), "--frames", "2")
    assert run.returncode == 0
    assert "holds 2 sound files (A001_C001.wav, second.wav): the video is silent; choose one with --audio FILE" \
        in run.stderr

    run = _cli(str(clip), "--out", str(tmp_path / "chosen.mp4"), "--audio", str(clip / "second.wav"), "--frames", "2",
               "--fps", "25")
    assert run.returncode == 0 and "the sound keeps its own, so it drifts" in run.stderr


def test_cli_audio_with_frames_or_a_bad_file_is_refused(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=2, size=(64, 96), fps=24.0, ratio=100)
    run = _cli(str(clip), "--out", f"{tmp_path}/frames/", "--audio", str(clip / "x.wav"))
    assert run.returncode == 2 and "--audio applies to file sources written as video" in run.stderr
    run = _cli(str(clip), "--out", str(tmp_path / "o.mp4"), "--audio", str(clip / "frame_000000.dng"))
    assert run.returncode == 1 and run.stderr.strip().endswith("frame_000000.dng holds no audio stream")
    assert not (tmp_path / "o.mp4").exists()


def test_sound_failing_mid_run_leaves_the_rest_silent(tmp_path: Path, caplog) -> None:
    tone = write_tone(tmp_path / "t.wav")
    sink = VideoSink(tmp_path / "v.mkv", fps=24, audio=tone)
    frames = _frames(0, 48)
    sink.write(next(frames))  # opens the output and the sound's decoder
    decoded = sink._audio._decoded

    def failing():
        for i, frame in enumerate(decoded):
            if i == 5:  # WAV packets of 0.1 s: about 0.5 s of sound
                raise av.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield frame

    sink._audio._decoded = failing()
    for f in frames:
        sink.write(f)
    sink.close()
    _, rate, samples, n = _sound(tmp_path / "v.mkv")
    assert n == 48 and 0.3 < len(samples) / rate < 0.7
    assert "sound unreadable after" in caplog.text and "the rest of the video is silent" in caplog.text


def _video_with_sound(path: Path, frames: int = 30, fps: int = 25, sound: bool = True) -> Path:
    """A small MP4: H.264 frames and (``sound``) the 440/880 Hz tone as AAC."""
    from fractions import Fraction

    tone = write_tone(path.with_suffix(".src.wav"), seconds=frames / fps + 0.5)
    with av.open(str(tone)) as src, av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
        a = out.add_stream("aac", rate=RATE, layout="mono") if sound else None
        for i in range(frames):
            img = np.full((64, 96, 3), 40 + 5 * i, np.uint8)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for p in v.encode(vf):
                out.mux(p)
        for frame in src.decode(audio=0) if sound else ():
            frame.pts = None
            for p in a.encode(frame):
                out.mux(p)
        for s in (v, a) if sound else (v,):
            for p in s.encode(None):
                out.mux(p)
    return path


def test_make_dng_writes_a_videos_sound_beside_the_frames(tmp_path: Path) -> None:
    video = _video_with_sound(tmp_path / "in.mp4")
    clip = tmp_path / "clip"
    run = subprocess.run([sys.executable, "-m", "redi_stream", "make-dng", str(video), "--out", str(clip),
                          "--frames", "20"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    wav = clip / "clip.wav"
    assert f"wrote the sound of those frames to {wav}" in run.stdout
    with wave.open(str(wav)) as w:
        assert (w.getnchannels(), w.getframerate()) == (1, RATE)
        assert w.getnframes() / RATE == pytest.approx(20 / 25, abs=0.01)  # the 20 frames' span of the video
    run = _cli(str(clip), "--out", str(tmp_path / "o.mp4"))
    assert run.returncode == 0 and "sound: " in run.stderr
    _, rate, samples, frames = _sound(tmp_path / "o.mp4")
    assert frames == 20 and len(samples) / rate == pytest.approx(0.8, abs=0.06)
    # A video without sound leaves no .wav.
    video = _video_with_sound(tmp_path / "silent.mp4", frames=3, sound=False)
    run = subprocess.run([sys.executable, "-m", "redi_stream", "make-dng", str(video), "--out",
                          str(tmp_path / "silent")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "sound" not in run.stdout + run.stderr
    assert not list((tmp_path / "silent").glob("*.wav"))
