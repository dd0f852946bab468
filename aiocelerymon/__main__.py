"""``python -m aiocelerymon``: the ``aiocelerymon`` command line (see :mod:`aiocelerymon.cli`)."""

from __future__ import annotations

import sys

from aiocelerymon.cli import main

if __name__ == "__main__":
    sys.exit(main())
