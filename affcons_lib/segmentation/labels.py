"""Label arrays: their distinct ids, each voxel's index among them, consecutive ids.

The one relabelling of the library: fragments (:mod:`.fragments`, :mod:`.postprocess`),
the region graph (:mod:`.agglomeration`), contingency tables
(:mod:`affcons_lib.evaluation.metrics`) and the figures' colours all go through
:func:`dense_ids`. (The mutex watershed numbers its segments in raster order of
first appearance, inside its compiled kernel, :mod:`._mws`.)
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _count_ids(flat, top):  # pragma: no cover - compiled
    """Distinct ids of ``flat`` (non-negative, at most ``top``), sorted, and each
    item's index among them: a lookup table, O(items + top), no sort."""
    present = np.zeros(top + 1, np.bool_)
    for k in range(flat.shape[0]):
        present[flat[k]] = True
    lut = np.empty(top + 1, np.int64)
    n = 0
    for v in range(top + 1):
        lut[v] = n
        n += present[v]
    ids = np.empty(n, np.int64)
    for v in range(top + 1):
        if present[v]:
            ids[lut[v]] = v
    index = np.empty(flat.shape[0], np.int64)
    for k in range(flat.shape[0]):
        index[k] = lut[flat[k]]
    return ids, index


def dense_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct ids of ``labels`` and each voxel's index among them.

    Parameters
    ----------
    labels : ndarray of int or bool, any shape

    Returns
    -------
    ids : ndarray, ``labels``' dtype, shape (n,), ascending
    index : ndarray of int64, ``labels``' shape, values in 0 ... n - 1;
        ``ids[index] == labels``

    By a lookup table when the largest id is not much larger than the array (the
    ids of fragments, 1 ... n), else by sorting (the volume-wide ids of a block).
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    if not np.issubdtype(flat.dtype, np.integer):
        raise TypeError(f"labels: expected an integer (or bool) array, got dtype {labels.dtype}")
    if flat.size == 0:
        return np.zeros(0, labels.dtype), np.zeros(labels.shape, np.int64)
    low, top = int(flat.min()), int(flat.max())
    if low >= 0 and top < max(4 * flat.size, 1 << 16):
        ids, index = _count_ids(flat, top)
        return ids.astype(labels.dtype), index.reshape(labels.shape)
    ids, index = np.unique(flat, return_inverse=True)
    return ids.astype(labels.dtype), index.reshape(labels.shape).astype(np.int64)


def relabel_consecutive(labels: np.ndarray, *, keep_zero: bool = True, dtype=np.uint64) -> np.ndarray:
    """``labels`` with ids 1, 2, ... in the order of the old ids (0 stays 0 with
    ``keep_zero``; otherwise every id, 0 included, gets one from 1)."""
    ids, index = dense_ids(labels)
    start = 0 if keep_zero and len(ids) and ids[0] == 0 else 1
    return (index + start).astype(dtype)
