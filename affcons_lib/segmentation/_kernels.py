"""Numba kernels the fragment, region-graph, mutex-watershed and contingency code
share: a union-find root with path compression, and the one open-addressing hash
table of int64 keys (Fibonacci hashing, linear probing), grown as a set or with a
value per key (a count).

Private to the package: the public algorithms live in :mod:`affcons_lib.segmentation.postprocess`.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def find_root(parent, x):
    """Root of ``x`` in a union-find forest of parent links, with path
    compression (the fragment and region-graph code use this one)."""
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


# An open-addressing hash set of int64 keys; -1 marks an empty slot.
EMPTY = -1


@njit(cache=True, inline="always")
def _slot(key, mask):
    # Fibonacci hashing: the high bits of key * 2^64/phi are well mixed; take the
    # top 32 (tables stay below 2^32 slots) and keep the bits the mask allows
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64(h >> np.uint64(32)) & mask


@njit(cache=True, inline="always")
def probe(table, key):
    """Linear probing: the slot holding ``key``, or the empty slot where it would go."""
    mask = table.shape[0] - 1
    i = _slot(key, mask)
    while table[i] != key and table[i] != EMPTY:
        i = (i + 1) & mask
    return i


@njit(cache=True)
def contains(table, key):
    return table[probe(table, key)] == key


@njit(cache=True)
def insert(table, key):
    """Insert ``key``; True when it was not there yet. The caller keeps the load
    below two thirds."""
    i = probe(table, key)
    if table[i] == key:
        return False
    table[i] = key
    return True


@njit(cache=True)
def grown(table):
    """The same keys in a table twice as large."""
    out = np.full(2 * table.shape[0], EMPTY, np.int64)
    for k in table:
        if k != EMPTY:
            insert(out, k)
    return out


@njit(cache=True)
def grown_with(table, values):
    """The same keys, each with its value, in tables twice as large."""
    out = np.full(2 * table.shape[0], EMPTY, np.int64)
    out_values = np.zeros(2 * table.shape[0], values.dtype)
    for j in range(table.shape[0]):
        if table[j] != EMPTY:
            i = probe(out, table[j])
            out[i] = table[j]
            out_values[i] = values[j]
    return out, out_values
