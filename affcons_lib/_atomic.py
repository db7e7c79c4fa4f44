"""Files that appear whole or not at all.

A writer writes ``NAME.part`` beside the target and renames it over the target
only when it has finished: a run killed mid-write leaves the previous file (or
none), never half of one. ``os.replace`` is atomic on POSIX and Windows when both
names lie in one folder.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

__all__ = ["atomic_path", "write_text", "write_json"]


@contextlib.contextmanager
def atomic_path(path, suffix: str = ".part"):
    """Yield a temporary path beside ``path``; on success it replaces ``path``,
    on an exception it is removed. ``suffix`` keeps an extension some writers
    insist on (``numpy.savez`` appends ``.npz`` unless the name ends with it)."""
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json(path, obj, **dump_options) -> Path:
    return write_text(path, json.dumps(obj, indent=2, **dump_options))
