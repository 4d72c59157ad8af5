"""``python -m bench.scaling``: see the package's docstring."""

from __future__ import annotations

import sys

from bench.scaling._cli import main

sys.exit(main())
