"""Locating the repository, so notebooks find data/ and figures/ from any cwd."""

from __future__ import annotations

from pathlib import Path


def project_root() -> Path | None:
    """The checkout holding pyproject.toml and affcons_lib/, searched upwards from
    the current directory; None when running outside it."""
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "affcons_lib").is_dir():
            return p
    return None
