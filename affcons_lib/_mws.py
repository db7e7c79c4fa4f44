"""Compiled core of the mutex watershed (Wolf et al. 2020), used when the C++
package affogato is not importable. See :func:`affcons_lib.postprocess.mutex_watershed`.

Kruskal's order: edges by decreasing weight. An attractive edge merges its two
clusters unless a mutex (a "must not merge" constraint) separates them; a
repulsive edge adds a mutex between its clusters unless they are already one.

Clusters are a union-find forest. Each root keeps, in one contiguous block of a
shared pool, the clusters it is mutex with (each as any pixel of theirs, resolved
with find when read). "Are ru and rv mutex?" scans the shorter block for ru; a
merge appends the shorter block, deduplicated during that scan, to the longer one
(small into large: each entry moves O(log n) times). Contiguous blocks make the
scans sequential memory reads, which is where the time of this algorithm goes
(cache misses), and a small hash set of pairs already found mutex answers the
repeated question along the boundary of two large clusters.
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
def _grown(table):
    """The same keys in a table twice as large."""
    out = np.full(2 * table.shape[0], _EMPTY, np.int64)
    for k in table:
        if k != _EMPTY:
            _insert(out, k)
    return out


@njit(cache=True, inline="always")
def _pair(a, b, n):
    return a * n + b if a < b else b * n + a


# Per root, (start, length, capacity) of its block of partners in the pool sit side
# by side: one cache line per root.
START, LEN, CAP = 0, 1, 2


@njit(cache=True)
def _compacted(pool, blocks, needed):
    """A new pool holding only the blocks of roots with partners (merged-away
    roots' blocks are garbage), with room for ``needed`` more. Returns (pool, top)."""
    live = 0
    for r in range(blocks.shape[0]):
        if blocks[r, LEN] > 0:
            live += blocks[r, CAP]
    out = np.empty(2 * (live + needed), np.int32)
    top = 0
    for r in range(blocks.shape[0]):
        if blocks[r, LEN] > 0:
            s, n = blocks[r, START], blocks[r, LEN]
            out[top:top + n] = pool[s:s + n]
            blocks[r, START] = top
            top += blocks[r, CAP]
        else:
            blocks[r, START] = -1
            blocks[r, CAP] = 0
    return out, top


@njit(cache=True, inline="always")
def _reserve(root, total, pool, top, blocks):
    """Room for ``total`` partners in ``root``'s block: when it is too small, move
    it to the end of the pool with twice the capacity (compacting the pool first
    when full). Returns (pool, top)."""
    cap = blocks[root, CAP]
    if total <= cap:
        return pool, top
    new_cap = max(4, cap)
    while new_cap < total:
        new_cap *= 2
    if top + new_cap > pool.shape[0]:
        pool, top = _compacted(pool, blocks, new_cap)
    s, n = blocks[root, START], blocks[root, LEN]
    pool[top:top + n] = pool[s:s + n]
    blocks[root, START] = top
    blocks[root, CAP] = new_cap
    return pool, top + new_cap


@njit(cache=True, inline="always")
def _append(root, partner, pool, top, blocks):
    pool, top = _reserve(root, blocks[root, LEN] + 1, pool, top, blocks)
    pool[blocks[root, START] + blocks[root, LEN]] = partner
    blocks[root, LEN] += 1
    return pool, top


@njit(cache=True)
def mws_kruskal(sorted_edges, n_pixels, n_attractive, flat_offsets, short_block=8,
                pool_size=1 << 20):  # pragma: no cover - compiled
    """Run the mutex watershed over ``sorted_edges`` (edge ids ``c * n_pixels + p``
    in processing order, all valid). Returns the root of every pixel.

    Partner blocks longer than ``short_block`` consult (and fill) the set of pairs
    known to be mutex before a scan: two large clusters meet along a whole
    boundary, and every attractive edge there asks the same question again.
    ``pool_size`` is the initial pool (it grows as needed). Neither changes the
    result; the tests set both tiny to exercise every path."""
    parent = np.arange(n_pixels, dtype=np.int32)
    blocks = np.zeros((n_pixels, 3), np.int32)
    blocks[:, START] = -1
    pool = np.empty(pool_size, np.int32)
    top = 0
    known = np.full(1 << 12, _EMPTY, np.int64)
    n_known = 0
    seen = np.zeros(n_pixels, np.int32)  # seen[r] == scan id: r already kept in this scan
    scan = 0

    for e in sorted_edges:
        c = e // n_pixels
        p = e - c * n_pixels
        ru = _find(parent, p)
        rv = _find(parent, p + flat_offsets[c])
        if ru == rv:
            continue
        if c >= n_attractive:  # repulsive: each remembers the other
            pool, top = _append(ru, rv, pool, top, blocks)
            pool, top = _append(rv, ru, pool, top, blocks)
            continue
        # attractive: rv is the cluster with fewer partners (a root with none is
        # mutex with nobody: merge at once)
        len_u, len_v = blocks[ru, LEN], blocks[rv, LEN]
        if len_u < len_v:
            ru, rv, len_u, len_v = rv, ru, len_v, len_u
        if len_v:
            long_block = len_v > short_block
            if long_block and _contains(known, _pair(ru, rv, n_pixels)):
                continue
            # scan rv's partners for ru, resolving each to its current root and
            # compacting away duplicates as we go
            scan += 1
            s = blocks[rv, START]
            w = s
            k = s
            mutex = False
            while k < s + len_v:
                r = _find(parent, pool[k])
                if r == ru:
                    mutex = True
                    break
                if seen[r] != scan:
                    seen[r] = scan
                    pool[w] = r
                    w += 1
                k += 1
            if mutex:
                rest = s + len_v - k  # close the gap left by dropped duplicates
                for j in range(rest):  # forward copy: the ranges may overlap
                    pool[w + j] = pool[k + j]
                blocks[rv, LEN] = w - s + rest
                if long_block:
                    if 3 * (n_known + 1) > 2 * known.shape[0]:
                        known = _grown(known)
                    n_known += _insert(known, _pair(ru, rv, n_pixels))
                continue
            # merge: rv's (deduplicated) partners join ru's block
            len_v = w - s
            blocks[rv, LEN] = len_v
            pool, top = _reserve(ru, len_u + len_v, pool, top, blocks)
            s, d = blocks[rv, START], blocks[ru, START] + len_u
            pool[d:d + len_v] = pool[s:s + len_v]
            blocks[ru, LEN] = len_u + len_v
            blocks[rv, START] = -1
            blocks[rv, LEN] = 0
            blocks[rv, CAP] = 0
        parent[rv] = ru
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
