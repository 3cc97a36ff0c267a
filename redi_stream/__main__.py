"""``python -m redi_stream`` and the ``redi-stream`` console script: :func:`redi_stream.cli.main`, with a Ctrl-C
that comes while the modules are still loading (the first few tenths of a second, before any command can handle
it) ending as one line and exit status 130 instead of a traceback."""

from __future__ import annotations

import os
import signal
import sys
import threading


def _interrupt(signum: int, frame) -> None:
    """SIGINT outside a run: KeyboardInterrupt, as Python's own handler raises it, but never inside an import.

    Raised while a module is being imported, a KeyboardInterrupt can be lost or turned into another error: in
    importlib's module-lock callback (a weakref callback) it is printed as "Exception ignored in: <function
    _get_module_lock.<locals>.cb ...>" and the command runs on as if nothing had been pressed (a live camera: until
    the next Ctrl-C); inside a C extension's import or a class body it becomes an ImportError ("PyCapsule_Import
    could not import module datetime") or a RuntimeError ("Error calling __set_name__") with a traceback. Each was
    seen in about 1 of 120 starts interrupted at a random moment. So while importlib is on the stack the signal is
    sent again 50 ms later, until the import is over.
    """
    f = frame
    while f is not None:
        if f.f_code.co_filename.startswith("<frozen importlib"):
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            timer.daemon = True
            timer.start()
            return
        f = f.f_back
    raise KeyboardInterrupt


def main() -> int:
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is (
            signal.default_int_handler):
        signal.signal(signal.SIGINT, _interrupt)  # a run installs its own handlers and restores this one after
    try:
        from redi_stream.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # the commands turn a later one into their own message; this is what is left
        print("redi-stream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
