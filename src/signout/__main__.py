"""``python -m signout``: the ``signout`` command line (see ``signout.cli``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
