"""``python -m reqrep`` is the ``reqrep`` command (the process supervisor starts workers so)."""

from reqrep.cli import main

main()
