"""Stable LSD radix sort of uint32 keys with a payload, compiled and parallel.

Two users: the mutex watershed orders its edges by decreasing weight
(:mod:`affcons_lib.segmentation._mws`), and average precision orders tens of millions of
float32 scores (:func:`affcons_lib.evaluation.metrics.precision_recall`). Three passes over
11-bit digits, each pass counted and scattered in chunks, one per thread.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _radix_pass(keys, ids, keys_out, ids_out, shift, n_chunks):  # pragma: no cover - compiled
    """One stable counting-sort pass on the 11-bit digit at ``shift``. Each chunk
    of the input is counted and scattered by one thread; chunk-ordered offsets
    within each bucket keep the pass stable."""
    n = keys.shape[0]
    chunk = (n + n_chunks - 1) // n_chunks
    counts = np.zeros((n_chunks, 2048), np.int64)
    for t in prange(n_chunks):
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            counts[t, (keys[i] >> shift) & 0x7FF] += 1
    offsets = np.empty((n_chunks, 2048), np.int64)
    total = 0
    for b in range(2048):
        for t in range(n_chunks):
            offsets[t, b] = total
            total += counts[t, b]
    for t in prange(n_chunks):
        pos = offsets[t].copy()
        for i in range(t * chunk, min(n, (t + 1) * chunk)):
            k = keys[i]
            b = (k >> shift) & 0x7FF
            j = pos[b]
            keys_out[j] = k
            ids_out[j] = ids[i]
            pos[b] = j + 1


def sort_by_key(keys: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` (uint32) in ascending order and ``payload`` (same length, any
    integer dtype) in the same order; equal keys keep their input order (stable).
    The inputs are left alone."""
    keys = np.array(keys, dtype=np.uint32, order="C", copy=True)
    ids = np.array(payload, order="C", copy=True)
    if keys.shape != ids.shape or keys.ndim != 1:
        raise ValueError(f"sort_by_key: keys {keys.shape} and payload {ids.shape} must be 1D and of one length")
    keys_out = np.empty_like(keys)
    ids_out = np.empty_like(ids)
    n_chunks = max(1, min(numba.get_num_threads(), len(ids) // 100_000))
    for shift in (0, 11, 22):
        _radix_pass(keys, ids, keys_out, ids_out, shift, n_chunks)
        keys, keys_out = keys_out, keys
        ids, ids_out = ids_out, ids
    return keys, ids
