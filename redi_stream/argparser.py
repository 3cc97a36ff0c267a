"""The argument parser every ``redi-stream`` command uses: argparse, with a bad command line answered in one line.

argparse's own answer is the whole usage block (20 lines for the main command) and then the error. The house rule is
one clear line naming what is wrong, so :meth:`ArgumentParser.error` prints ``PROG: error: MESSAGE (see 'PROG
--help')`` and exits with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
from fractions import Fraction

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """:class:`argparse.ArgumentParser` whose errors are one line (the usage block stays behind ``--help``)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def frame_rate(text: str) -> float:
    """An argparse ``type`` for frame rates: a number (``24``, ``29.97``) or a ratio as video tools write it
    (``30000/1001``). Returns a float; the video sink turns NTSC rates back into exact ``N*1000/1001``."""
    try:
        return float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"invalid frame rate {text!r}; give e.g. 24, 29.97 or 30000/1001") from None


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """An argparse ``type`` for lengths of time: seconds (``600``, ``2.5``) or with a unit (``90s``, ``10m``,
    ``1h``). Returns seconds."""
    t = text.strip().lower()
    unit = next((u for u in sorted(_DURATION_UNITS, key=len, reverse=True) if t.endswith(u)), "")
    try:
        value = float(t[: len(t) - len(unit)]) * _DURATION_UNITS.get(unit, 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid length {text!r}; give seconds (600) or e.g. 90s, 10m, 1h") from None
    return value
