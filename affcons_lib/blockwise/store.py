"""Where a blockwise run keeps what it writes: the one module that names its files.

A prediction is one zarr array (``OUT``, tracked in ``OUT.tracking``). A segmentation
is a directory::

    OUT/fragments          uint64 zarr: each voxel's chain end (pass 1)
    OUT/exits/NNNNNNNN.npz chain ends that leave their block (pass 1), one per block
    OUT/exits.npz          every exit resolved to its fragment (graph step)
    OUT/edges/NNNNNNNN.npz a block's boundary edges and histograms (pass 2)
    OUT/history_S.npz      the merge history under scoring S (graph step)
    OUT/lut_S_T.npz        fragment -> segment at threshold T under scoring S
    OUT/segmentation       uint64 zarr at the run's threshold (pass 4)
    OUT/tracking           daisy's finished blocks, worker logs and memory notes

Written atomically (:mod:`affcons_lib._atomic`); an output made with other settings
is refused, naming the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def fragments_path(out) -> Path:
    return Path(out) / "fragments"


def segmentation_path(out) -> Path:
    return Path(out) / "segmentation"


def block_file(out, kind: str, index: int) -> Path:
    """The ``kind`` (``"exits"`` or ``"edges"``) file of block ``index``."""
    return Path(out) / kind / f"{int(index):08d}.npz"


def block_files(out, kind: str) -> list[Path]:
    """Every block's ``kind`` file, in block order (atomic writes leave no partial one)."""
    return sorted((Path(out) / kind).glob("*[0-9].npz"))


def exits_path(out) -> Path:
    return Path(out) / "exits.npz"


def history_path(out, scoring: str) -> Path:
    return Path(out) / f"history_{scoring}.npz"


def lut_path(out, scoring: str, threshold: float) -> Path:
    """The fragment -> segment table at ``threshold`` under ``scoring``."""
    return Path(out) / f"lut_{scoring}_{float(threshold):.4f}.npz"


def lut_files(out, scoring: str) -> list[tuple[str, float, Path]]:
    """The tables written under ``scoring``: (scoring, threshold, path), by threshold."""
    found = []
    for p in Path(out).glob(f"lut_{scoring}_*.npz"):
        s, t = p.stem[4:].rsplit("_", 1)
        found.append((s, float(t), p))
    return sorted(found, key=lambda x: x[1])


def tracking_path(out) -> Path:
    """daisy's block tracking (finished blocks, worker logs, memory notes) of a segmentation directory."""
    return Path(out) / "tracking"


def prediction_tracking_path(out) -> Path:
    """The same for a prediction array: ``OUT.tracking`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".tracking")


def create_zarr(path: Path, shape, chunks, dtype, attrs: dict):
    """Create the output array, or reopen it (a resumed run) when it exists with
    the same shape, chunks and dtype and was made with the same settings (every
    key of ``attrs``: checkpoint, tiling, raw range, fragment options); anything
    else is an error naming the path and the difference, so that the blocks of two
    configurations never mix in one array."""
    import zarr

    if path.exists():
        arr = zarr.open_array(store=str(path), mode="r+")
        if arr.shape != tuple(shape) or arr.chunks != tuple(chunks) or arr.dtype != np.dtype(dtype):
            raise ValueError(f"{path}: exists with shape {arr.shape}, chunks {arr.chunks}, dtype {arr.dtype}; "
                             f"this run writes {tuple(shape)}, {tuple(chunks)}, {np.dtype(dtype)} "
                             "(overwrite=True / --overwrite starts afresh, or choose another --out)")
        plain = lambda v: json.loads(json.dumps(v))  # noqa: E731  (tuples as the lists zarr stores)
        differ = [f"{k}: {arr.attrs.get(k)!r} -> {plain(v)!r}" for k, v in attrs.items()
                  if plain(arr.attrs.get(k)) != plain(v)]
        if differ:
            raise ValueError(f"{path}: exists, made with other settings ({'; '.join(differ)}); resuming would mix "
                             "the two (overwrite=True / --overwrite starts afresh, or choose another --out)")
        return arr
    arr = zarr.create_array(store=str(path), shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, fill_value=0)
    arr.attrs.update(attrs)
    return arr


def digest(path) -> str:
    """SHA-256 of a file (a checkpoint: which weights made an output)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove(*paths) -> None:
    """Remove outputs and their block tracking, for a run that starts afresh."""
    import shutil

    for p in paths:
        p = Path(p)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
