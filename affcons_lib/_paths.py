"""Locating the repository, so notebooks find data/ and runs/ from any cwd."""

from __future__ import annotations

import os
from pathlib import Path


#: the checkout this package was imported from (its data/ and README.md), whatever the
#: current directory; project_root() below is the one found from the current directory
CHECKOUT = Path(__file__).resolve().parent.parent


def project_root() -> Path | None:
    """The checkout holding pyproject.toml and affcons_lib/, searched upwards from
    the current directory; None when running outside it."""
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "affcons_lib").is_dir():
            return p
    return None


def runs_dir() -> Path:
    """Where runs write (checkpoints, executed notebooks, one-off figures):
    ``$AFFCONS_RUNS_DIR`` if set (the tests point it at a temporary folder), else
    the repository's ``runs/`` (ignored by git) found from the current
    directory, else ``./runs``."""
    env = os.environ.get("AFFCONS_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    root = project_root()
    return (root if root is not None else Path.cwd()) / "runs"
