"""Compiled core of the mutex watershed (Wolf et al. 2020), used when the C++
package affogato is not importable. See :func:`affcons_lib.postprocess.mutex_watershed`.

Kruskal's order: edges by decreasing weight. An attractive edge merges its two
clusters unless a mutex (a "must not merge" constraint) separates them; a
repulsive edge adds a mutex between its clusters unless they are already one.

Clusters are a union-find forest. Mutexes live in an open-addressing hash set of
pairs of current roots, and each root keeps a linked list of the clusters it is
mutex with (as any pixel of theirs, resolved with find). When two clusters merge,
the shorter list is re-keyed onto the surviving root, dropping duplicates, and
spliced into the longer one (small into large: each entry moves O(log n) times),
so "are these two roots mutex?" is one hash look-up.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _find(parent, x):
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


_EMPTY = -1


@njit(cache=True, inline="always")
def _slot(key, mask):
    # Fibonacci hashing: the high bits of key * 2^64/phi are well mixed; take the
    # top 32 (tables stay below 2^32 slots) and keep the bits the mask allows
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64(h >> np.uint64(32)) & mask


@njit(cache=True, inline="always")
def _probe(table, key):
    """Linear probing: the slot holding ``key``, or the empty slot where it would go."""
    mask = table.shape[0] - 1
    i = _slot(key, mask)
    while table[i] != key and table[i] != _EMPTY:
        i = (i + 1) & mask
    return i


@njit(cache=True)
def _contains(table, key):
    return table[_probe(table, key)] == key


@njit(cache=True)
def _insert(table, key):
    """Insert ``key``; True when it was not there yet. The caller keeps the load
    below two thirds."""
    i = _probe(table, key)
    if table[i] == key:
        return False
    table[i] = key
    return True


@njit(cache=True)
def _rebuilt(table, parent, n_pixels, needed):
    """A new table holding only the live pairs (both ids still roots): pairs of
    merged-away roots are never looked up again. Sized for ``needed`` more keys at
    a load of at most one half. Returns (table, number of keys)."""
    live = 0
    for k in table:
        if k != _EMPTY:
            a, b = k // n_pixels, k % n_pixels
            if parent[a] == a and parent[b] == b:
                live += 1
    size = 1 << 16
    while size < 3 * (live + needed):
        size *= 2
    out = np.full(size, _EMPTY, np.int64)
    for k in table:
        if k != _EMPTY:
            a, b = k // n_pixels, k % n_pixels
            if parent[a] == a and parent[b] == b:
                _insert(out, k)
    return out, live


@njit(cache=True, inline="always")
def _pair(a, b, n):
    return a * n + b if a < b else b * n + a


# Per root, (head, tail, length) of its partner list sit side by side, and per
# list entry (partner, next): each is one cache line, and these accesses are
# random, so the time goes into cache misses.
HEAD, TAIL, LEN = 0, 1, 2
PARTNER, NEXT = 0, 1


@njit(cache=True, inline="always")
def _link(root, i, lists, entries):
    """Append list entry ``i`` to ``root``'s partner list."""
    entries[i, NEXT] = -1
    if lists[root, HEAD] == -1:
        lists[root, HEAD] = i
    else:
        entries[lists[root, TAIL], NEXT] = i
    lists[root, TAIL] = i
    lists[root, LEN] += 1


@njit(cache=True)
def mws_kruskal(sorted_edges, n_pixels, n_attractive, flat_offsets):  # pragma: no cover - compiled
    """Run the mutex watershed over ``sorted_edges`` (edge ids ``c * n_pixels + p``
    in processing order, all valid). Returns the root of every pixel."""
    parent = np.arange(n_pixels, dtype=np.int32)
    lists = np.empty((n_pixels, 3), np.int32)
    lists[:, HEAD] = -1
    lists[:, TAIL] = -1
    lists[:, LEN] = 0
    n_rep = 0
    for e in sorted_edges:
        if e // n_pixels >= n_attractive:
            n_rep += 1
    entries = np.empty((2 * n_rep + 1, 2), np.int32)
    n_entries = 0
    table = np.full(1 << 16, _EMPTY, np.int64)
    n_keys = 0

    for e in sorted_edges:
        c = e // n_pixels
        p = e - c * n_pixels
        ru = _find(parent, p)
        rv = _find(parent, p + flat_offsets[c])
        if ru == rv:
            continue
        len_u, len_v = lists[ru, LEN], lists[rv, LEN]
        if 3 * (n_keys + len_u + len_v + 1) > 2 * table.shape[0]:  # load <= 2/3
            table, n_keys = _rebuilt(table, parent, n_pixels, len_u + len_v + 1)
        if c < n_attractive:
            # a root with no partner is mutex with nobody: skip the look-up
            if len_u and len_v and _contains(table, _pair(ru, rv, n_pixels)):
                continue
            # merge: the root with the longer partner list stays root; the other's
            # partners are re-keyed onto it, duplicates dropped (small into large)
            if len_u < len_v:
                ru, rv = rv, ru
            parent[rv] = ru
            # walk rv's list once: re-key each partner onto ru, unlink duplicates in
            # place, then splice what is left onto ru's list with a single write
            i, prev, kept, last = lists[rv, HEAD], -1, 0, -1
            while i != -1:
                after = entries[i, NEXT]
                r = _find(parent, entries[i, PARTNER])
                if _insert(table, _pair(ru, r, n_pixels)):
                    n_keys += 1
                    entries[i, PARTNER] = r
                    prev, last, kept = i, i, kept + 1
                elif prev == -1:
                    lists[rv, HEAD] = after
                else:
                    entries[prev, NEXT] = after
                i = after
            if kept:
                if lists[ru, HEAD] == -1:
                    lists[ru, HEAD] = lists[rv, HEAD]
                else:
                    entries[lists[ru, TAIL], NEXT] = lists[rv, HEAD]
                lists[ru, TAIL] = last
                lists[ru, LEN] += kept
            lists[rv, HEAD] = -1
            lists[rv, TAIL] = -1
            lists[rv, LEN] = 0
        elif _insert(table, _pair(ru, rv, n_pixels)):  # one probe: look up and add
            n_keys += 1
            entries[n_entries, PARTNER] = rv
            _link(ru, n_entries, lists, entries)
            entries[n_entries + 1, PARTNER] = ru
            _link(rv, n_entries + 1, lists, entries)
            n_entries += 2
    roots = np.empty(n_pixels, np.int64)
    for p in range(n_pixels):
        roots[p] = _find(parent, p)
    return roots


MAX_INT32 = 2**31 - 1


@njit(cache=True)
def relabel_first_seen(roots, keep):  # pragma: no cover - compiled
    """Consecutive labels from 1 in raster order of first appearance; 0 where
    ``keep`` is False."""
    n = roots.shape[0]
    lut = np.zeros(n, np.int64)
    out = np.zeros(n, np.int64)
    nxt_label = 1
    for p in range(n):
        if not keep[p]:
            continue
        r = roots[p]
        if lut[r] == 0:
            lut[r] = nxt_label
            nxt_label += 1
        out[p] = lut[r]
    return out


@njit(cache=True, parallel=True)
def _weight_keys(affs_flat, n_pixels, n_attractive, edge_ids):  # pragma: no cover - compiled
    """uint32 keys that sort ascending by decreasing weight. The weight of edge
    ``c * n_pixels + p`` is ``affs_flat[e]`` on an attractive channel and
    ``1 - affs_flat[e]`` on a repulsive one; the bit pattern of a non-negative
    float32 orders like the float."""
    n = edge_ids.shape[0]
    keys = np.empty(n, np.uint32)
    split = n_attractive * n_pixels
    for i in prange(n):
        e = edge_ids[i]
        w = affs_flat[e] if e < split else np.float32(1.0) - affs_flat[e]
        w = w + np.float32(0.0)  # -0.0 -> +0.0
        keys[i] = np.uint32(0xFFFFFFFF) - np.asarray(w).view(np.uint32)[()]
    return keys


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


def edges_by_decreasing_weight(affs_flat, n_pixels, n_attractive, edge_ids):
    """``edge_ids`` (increasing) sorted by decreasing weight, ties by increasing
    id: a stable LSD radix sort on three 11-bit digits of the weight keys."""
    import numba

    keys = _weight_keys(affs_flat, n_pixels, n_attractive, edge_ids)
    ids = edge_ids.copy()
    keys_out = np.empty_like(keys)
    ids_out = np.empty_like(ids)
    n_chunks = max(1, min(numba.get_num_threads(), len(ids) // 100_000))
    for shift in (0, 11, 22):
        _radix_pass(keys, ids, keys_out, ids_out, shift, n_chunks)
        keys, keys_out = keys_out, keys
        ids, ids_out = ids_out, ids
    return ids
