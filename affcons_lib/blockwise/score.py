"""Scoring a blockwise segmentation against a ground truth, block by block: VOI
and ARAND of every threshold of a segmentation directory from one pass over its
fragments (the in-memory :func:`affcons_lib.evaluation.evaluate.evaluate_3d` scores
the same numbers)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from ..data import open_volume
from ..evaluation import metrics
from ..segmentation.fragments import look_up
from . import store


def evaluate_blockwise(segmentation, labels, *, border_tolerance: int = 1, block=None) -> dict:
    """Score a blockwise segmentation against ground truth block by block: the
    contingency table is counted one block at a time (never the volumes).

    Parameters
    ----------
    segmentation : the output directory of
        :func:`affcons_lib.blockwise.segment.segment_blockwise` (then every threshold it
        kept a table for, with the scoring of its written segmentation, is scored
        from one pass over its fragments: the sweep of :func:`evaluate_3d`), or a
        zarr segmentation array (Z, Y, X).
    labels : ground truth (Z, Y, X): an array, or ``PATH[:KEY]`` of an HDF5 or
        zarr volume (read block by block).
    border_tolerance : as :func:`evaluate_3d` (each block is read with the
        margin the border needs, so the ignored voxels are the in-memory ones).
    block : blocks read at a time (default: the segmentation's chunks).

    Returns
    -------
    dict with ``voi_split``, ``voi_merge``, ``voi``, ``arand``, ``threshold`` (the
    best by VOI for a directory: an oracle choice, as in :func:`evaluate_3d`) and
    ``rows`` (one per threshold).
    """
    path = Path(segmentation)
    sweep = store.fragments_path(path).exists()
    seg = open_volume(store.fragments_path(path) if sweep else path)
    gt = open_volume(labels) if isinstance(labels, (str, Path)) else np.asarray(labels)
    if tuple(gt.shape) != tuple(seg.shape):
        raise ValueError(f"{labels if isinstance(labels, (str, Path)) else 'labels'}: shape {tuple(gt.shape)} does "
                         f"not match the segmentation's {tuple(seg.shape)} ({path})")
    if sweep:
        ex = np.load(store.exits_path(path))
        # the tables of the scoring the written segmentation was made with (a rerun with
        # another scoring keeps its own tables beside them)
        written = open_volume(store.segmentation_path(path)).attrs.get("scoring", "median") \
            if store.segmentation_path(path).exists() else "median"
        luts = store.lut_files(path, written)
        if not luts:
            raise ValueError(f"{path}: no fragment tables (lut_{written}_*.npz); run blockwise segment to the end "
                             "first")
    block = tuple(int(b) for b in (block or seg.chunks))
    m = int(border_tolerance) + 1
    shape = tuple(seg.shape)
    cells = []  # each block's contingency cells, pooled into one table below
    for begin in itertools.product(*[range(0, n, b) for n, b in zip(shape, block)]):
        end = [min(n, b0 + b) for b0, b, n in zip(begin, block, shape)]
        lo = [begin[0]] + [max(0, b0 - m) for b0 in begin[1:]]
        hi = [end[0]] + [min(n, e + m) for e, n in zip(end[1:], shape[1:])]
        g = metrics.ignore_borders(np.asarray(gt[tuple(slice(a, b) for a, b in zip(lo, hi))]), border_tolerance)
        g = g[tuple(slice(b0 - a, e - a) for b0, e, a in zip(begin, end, lo))]
        sb = np.asarray(seg[tuple(slice(a, b) for a, b in zip(begin, end))])
        if sweep:
            sb = look_up(sb, ex["ids"], ex["roots"])
        cells.append(metrics.contingency(sb, g).cells())
    table = metrics.table_from_cells(*(np.concatenate([c[k] for c in cells]) for k in range(3)))
    if not sweep:
        return {**metrics.voi_arand_of(table), "threshold": seg.attrs.get("threshold"), "rows": []}
    s, g, c = table.cells()
    rows = []
    for scoring, t, lut_file in luts:
        lut = np.load(lut_file)
        scores = metrics.voi_arand_of(metrics.table_from_cells(look_up(s, lut["fragments"], lut["segments"]), g, c))
        rows.append(dict(threshold=t, scoring=scoring, **scores))
    best = min(rows, key=lambda r: r["voi"])
    return {**best, "rows": rows, "fragments": metrics.voi_arand_of(table)}
