"""``python -m rosette_bmz.export ...`` is ``rosette-bmz export ...`` (the CLI entry point)."""

import sys

from rosette_bmz.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]], prog="python -m rosette_bmz.export"))
