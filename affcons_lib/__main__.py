"""``python -m affcons_lib COMMAND [ARGS ...]``: the command line (:mod:`affcons_lib.cli`)."""

from affcons_lib.cli import main

raise SystemExit(main())
