"""Generated sections of a document: the text between two markers, replaced whole."""

from __future__ import annotations

from pathlib import Path

__all__ = ["replace_between"]


def replace_between(text: str, start: str, end: str, block: str, where: Path) -> str:
    """``text`` with everything from marker ``start`` to marker ``end`` (both included)
    replaced by ``block`` (which carries the markers again); ``where`` names the
    document in the error when a marker is missing."""
    if start not in text or end not in text:
        raise ValueError(f"{where}: no generated section (the markers {start!r} ... {end!r})")
    head, rest = text.split(start, 1)
    return head + block + rest.split(end, 1)[1]
