"""``python -m affcons_lib COMMAND [ARGS ...]``: the command line (:mod:`affcons_lib.cli`)."""

from .cli import main

raise SystemExit(main())
