"""``redi-stream doctor``: what this machine offers redi-stream (torch/CUDA, codecs, LibRaw, numba, OpenCV)."""

from __future__ import annotations

import glob
import importlib
import os
import platform
import sys


def _version(module: str) -> tuple[object | None, str]:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # report any import failure, that is the point of doctor
        return None, f"NOT AVAILABLE ({type(exc).__name__}: {exc})"
    return mod, str(getattr(mod, "__version__", "?"))


def report() -> list[tuple[str, str]]:
    """Return (item, finding) rows; never raises."""
    rows: list[tuple[str, str]] = [
        ("python", f"{sys.version.split()[0]} on {platform.platform()}"),
        ("cpu", f"{platform.machine()}, {_cpu_count()} logical cores"),
    ]
    torch, v = _version("torch")
    rows.append(("torch", v))
    if torch is not None:
        rows.append(("torch threads", str(torch.get_num_threads())))
        from .model.fast import fused_convs

        rows.append(("onednn", "fused convolutions available (the CPU network's element-wise passes ride on them)"
                     if fused_convs() else "no fused convolutions in this torch build: the CPU network runs its "
                     "element-wise passes separately (~25 % slower in bf16, ~10 % in fp32)"))
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            rows.append(("cuda", f"{torch.version.cuda}; devices: {', '.join(names)}"))
            rows.append(("cudnn", str(torch.backends.cudnn.version())))
        else:
            from .model.runner import cpu_has_amx_bf16

            cpu_net = ("bf16 for 8-bit outputs (this CPU has AMX), fp32 for 16-bit" if cpu_has_amx_bf16()
                       else "fp32 (no AMX: bf16 would be slower)")
            rows.append(("cuda", f"not available (the network runs on the CPU in {cpu_net})"))
    numba, v = _version("numba")
    if numba is not None:
        try:
            from numba import config as ncfg

            layer = ncfg.THREADING_LAYER
            v += f"; threading layer setting {layer!r}; {ncfg.NUMBA_NUM_THREADS} threads"
        except Exception as exc:
            v += f"; threading layer unknown ({exc})"
    rows.append(("numba", v))
    rawpy, v = _version("rawpy")
    if rawpy is not None:
        v += f"; LibRaw {'.'.join(map(str, rawpy.libraw_version))}"
    rows.append(("rawpy", v))
    av, v = _version("av")
    if av is not None:
        from .stream.sinks import WEBM_CODECS

        wanted = ["libx264", "h264_nvenc", "hevc_nvenc", "libx265", "mpeg4", *WEBM_CODECS,
                  "prores", "prores_ks", "dnxhd"]
        have = [c for c in wanted if c in av.codecs_available]
        sound = [c for c in ("aac", "libopus") if c in av.codecs_available]
        v += (f"; FFmpeg {av.library_versions.get('libavcodec', '?')}; encoders: {', '.join(have) or 'none'}; "
              f"sound: {', '.join(sound) or 'none'}")
    rows.append(("av (PyAV)", v))
    cv2, v = _version("cv2")
    if cv2 is not None:
        v += f"; GUI: {_cv2_gui(cv2)}"
    rows.append(("opencv", v))
    rows.append(("display", _display()))
    if sys.platform.startswith("linux"):
        devices = sorted(glob.glob("/dev/video*"), key=lambda d: (len(d), d))
        rows.append(("cameras", ", ".join(devices) if devices else "none found (/dev/video*); try --camera fake"))
    try:
        from .model import default_weights_path, load_weights

        path = default_weights_path()
        if path is None:
            rows.append(("default weights", "not shipped in this build (use --weights or --model classic)"))
        else:
            meta = load_weights(path).meta
            rows.append(("default weights", f"{path.name}: {meta.architecture}, output {meta.output}, v{meta.version}"))
    except Exception as exc:
        rows.append(("default weights", f"cannot load: {exc}"))
    return rows


def _display() -> str:
    """Where a preview window would open, or why it cannot."""
    from .stream.preview import display_available

    if not display_available():
        return "none (DISPLAY and WAYLAND_DISPLAY unset): previews run headless; --out still records"
    return os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or "the desktop's"


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _cv2_gui(cv2) -> str:
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip() or "none"
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    from .argparser import ArgumentParser

    parser = ArgumentParser(prog="redi-stream doctor",
                            description="What this machine offers redi-stream: Python, torch and CUDA, video "
                                        "encoders, LibRaw, numba, OpenCV, a display for the preview window, cameras.")
    parser.parse_args(argv or [])
    rows = report()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
