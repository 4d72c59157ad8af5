"""``python -m worker`` is the ``reqrep`` command (used by the process supervisor)."""

from worker.cli import main

main()
