"""``python -m dci6bridge``: the same as the ``dci6bridge`` command."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
