"""``python -m bench.suite``: see the package's docstring."""

from __future__ import annotations

import sys

from bench.suite._cli import main

sys.exit(main())
