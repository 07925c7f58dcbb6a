"""``python -m initscale``: the command line (see :mod:`initscale.cli`)."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
