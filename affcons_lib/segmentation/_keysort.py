"""Sort of uint32 keys with an integer payload, by numpy's vectorised sort.

Two users: the mutex watershed orders its edges by decreasing weight
(:mod:`affcons_lib.segmentation._mws`), and average precision orders tens of millions of
float32 scores (:func:`affcons_lib.evaluation.metrics.precision_recall`).

Each key and its payload are packed into one uint64 (key in the high half), sorted
by ``numpy.sort`` and unpacked: ties come out ordered by payload, which is the input
order wherever the payload is an increasing id. numpy's sort of 64-bit integers is
vectorised (x86-simd-sort with AVX-512 or AVX2, Highway on Arm). It replaced a
three-pass parallel LSD radix sort of the library's own; measured interleaved on 25 M
keys with int32 ids on this project's CPU: at one thread (how runs are scored) 0.22-0.39
of the radix sort's time, at two threads 1.2-1.35 of it (the radix sort split its passes
between the threads, numpy's sort runs on one). With numpy's SIMD dispatch switched off
(``NPY_DISABLE_CPU_FEATURES``) the sort is several times slower than with AVX2: a CPU
without AVX2 would sort slower than the radix sort did. A payload that does not fit 32
bits falls back to ``numpy.lexsort``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _pack(keys, payload):  # pragma: no cover - compiled
    out = np.empty(keys.shape[0], np.uint64)
    for i in prange(keys.shape[0]):
        out[i] = (np.uint64(keys[i]) << np.uint64(32)) | np.uint64(payload[i])
    return out


@njit(cache=True, parallel=True)
def _unpack(packed, keys, payload):  # pragma: no cover - compiled
    for i in prange(packed.shape[0]):
        keys[i] = np.uint32(packed[i] >> np.uint64(32))
        payload[i] = packed[i] & np.uint64(0xFFFFFFFF)


def sort_by_key(keys: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` (uint32) in ascending order and ``payload`` (same length,
    non-negative integers) in the same order; equal keys ordered by payload (for
    an increasing payload such as ids, the input order: a stable sort). The
    inputs are left alone.

    Returns
    -------
    keys : ndarray of uint32, (n,)
    payload : ndarray of the payload's dtype (bool as uint8), (n,)
    """
    keys = np.ascontiguousarray(keys, dtype=np.uint32)
    payload = np.ascontiguousarray(payload)
    if keys.shape != payload.shape or keys.ndim != 1:
        raise ValueError(f"sort_by_key: keys {keys.shape} and payload {payload.shape} must be 1D and of one length")
    if payload.dtype.kind not in "biu":
        raise ValueError(f"sort_by_key: payload must hold integers, got dtype {payload.dtype}")
    if payload.dtype == np.bool_:
        payload = payload.view(np.uint8)
    if payload.size and (int(payload.min()) < 0 or int(payload.max()) > 0xFFFFFFFF):
        # does not pack into the low 32 bits: key order, ties by payload, the slow way
        order = np.lexsort((payload, keys))
        return keys[order], payload[order]
    packed = _pack(keys, payload)
    packed.sort()
    out_keys, out_payload = np.empty_like(keys), np.empty_like(payload)
    _unpack(packed, out_keys, out_payload)
    return out_keys, out_payload
