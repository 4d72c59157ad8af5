"""``python -m bench.chaos``: see the package's docstring."""

from __future__ import annotations

import sys

from bench.chaos._cli import main

sys.exit(main())
