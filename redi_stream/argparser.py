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
