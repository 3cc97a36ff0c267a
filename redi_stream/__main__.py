"""``python -m redi_stream`` and the ``redi-stream`` console script: :func:`redi_stream.cli.main`, with a Ctrl-C
that comes while the modules are still loading (the first few tenths of a second, before any command can handle
it) ending as one line and exit status 130 instead of a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from redi_stream.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # the commands turn a later one into their own message; this is what is left
        print("redi-stream: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
