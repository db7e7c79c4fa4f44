"""Compiled core of the mutex watershed (Wolf et al. 2020), used when the C++
package affogato is not importable. See :func:`affcons_lib.postprocess.mutex_watershed`.

Kruskal's order: edges by decreasing weight. An attractive edge merges its two
clusters unless a mutex (a "must not merge" constraint) separates them; a
repulsive edge adds a mutex between its clusters unless they are already one.

Clusters are a union-find forest. Each root keeps, in one contiguous block of a
shared pool, the clusters it is mutex with (each as any pixel of theirs, resolved
with find when read). "Are ru and rv mutex?" scans the shorter block for ru; a
merge appends the shorter block, deduplicated during that scan, to the longer one
(small into large: each entry moves O(log n) times). A small hash set of pairs
already found mutex answers the repeated question along the boundary of two
large clusters.

The time of this algorithm goes to waiting on memory: in weight order, every
edge touches random pixels, roots and blocks. Three choices answer that:
contiguous blocks make a scan a sequential read; a pixel's parent, block and
scan mark share one 16-byte record (one cache line per root, not three); and the
pass prefetches what edges a few places ahead will touch, so that their memory
waits overlap (on uniform random weights the pass runs about twice as fast as
without the last two; ``benchmarks/bench_postprocess.py``).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._radix import sort_by_key


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring ``array[index]`` into cache (LLVM's prefetch: a hint,
    no fault and no effect on any value, even out of bounds). The Kruskal pass
    waits on memory, not arithmetic: edges come in weight order, so every edge
    touches random pixels, roots and blocks. Requests issued a few edges ahead
    overlap those waits; on the benchmark's uniform weights the pass runs about
    twice as fast."""
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        arr = context.make_array(array_type)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, array_type, arr, [args[1]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        # read access, high locality, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


# One record per pixel: its union-find parent and, while it is a root, where its
# block of partners lies in the pool (start, length) and the last scan that met it
# (dedup). Side by side they share a cache line, so finding a root also brings in
# its block and its scan mark: one memory wait instead of three.
PARENT, START, LEN, SEEN = 0, 1, 2, 3


@njit(cache=True, inline="always")
def _find(parent, x):
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


@njit(cache=True, inline="always")
def _find_node(node, x):
    """:func:`_find` on the PARENT field of the pixel records."""
    root = x
    while node[root, PARENT] != root:
        root = node[root, PARENT]
    while node[x, PARENT] != root:  # path compression
        nxt = node[x, PARENT]
        node[x, PARENT] = root
        x = nxt
    return root


# Mutex pairs already found, in an open-addressing hash set of int64 pair keys.
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


@njit(cache=True, inline="always")
def _capacity(length):
    """Room of a block holding ``length`` partners: blocks are allocated in powers
    of two, at least 4. Deduplication can shrink a block below its room; this then
    under-counts, which only moves the block a little early."""
    cap = 4
    while cap < length:
        cap *= 2
    return cap


@njit(cache=True)
def _compacted(pool, node, needed):
    """A new pool holding only the blocks of roots with partners (merged-away
    roots' blocks are garbage), with room for ``needed`` more. Returns (pool, top)."""
    live = 0
    for r in range(node.shape[0]):
        if node[r, LEN] > 0:
            live += _capacity(node[r, LEN])
    out = np.empty(2 * (live + needed), np.int32)
    top = 0
    for r in range(node.shape[0]):
        if node[r, LEN] > 0:
            s, n = node[r, START], node[r, LEN]
            out[top:top + n] = pool[s:s + n]
            node[r, START] = top
            top += _capacity(n)
        else:
            node[r, START] = -1
    return out, top


@njit(cache=True, inline="always")
def _reserve(root, total, pool, top, node):
    """Room for ``total`` partners in ``root``'s block: when it is too small (or
    there is none), move it to the end of the pool with room to spare (compacting
    the pool first when full). Returns (pool, top)."""
    n = node[root, LEN]
    if node[root, START] >= 0 and total <= _capacity(n):
        return pool, top
    new_cap = _capacity(total)
    if top + new_cap > pool.shape[0]:
        pool, top = _compacted(pool, node, new_cap)
    s = node[root, START]
    pool[top:top + n] = pool[s:s + n]
    node[root, START] = top
    return pool, top + new_cap


@njit(cache=True, inline="always")
def _append(root, partner, pool, top, node):
    pool, top = _reserve(root, node[root, LEN] + 1, pool, top, node)
    pool[node[root, START] + node[root, LEN]] = partner
    node[root, LEN] += 1
    return pool, top


@njit(cache=True, inline="always")
def _decode(e, n_pixels, flat_offsets):
    """Edge id ``c * n_pixels + p`` -> (p, its neighbour p + offset, c). Ids fit
    in 32 bits (the caller checks), and a 32-bit division is the cheaper one."""
    c = np.int64(np.uint32(e) // np.uint32(n_pixels))
    p = np.int64(e) - c * n_pixels
    return p, p + flat_offsets[c], c


@njit(cache=True, inline="always")
def _prefetch_pool(ra, rb, repulsive, pool, node):
    """Prefetch the pool slots an edge between roots (or near-roots) ``ra`` and
    ``rb`` will touch: both blocks' ends for a repulsive edge (the appends); for
    an attractive one, the start of the shorter block (the scan) and the end of
    the longer (where a merge copies it)."""
    sa, la = node[ra, START], node[ra, LEN]
    sb, lb = node[rb, START], node[rb, LEN]
    if repulsive:
        if sa >= 0:
            _prefetch(pool, sa + la)
        if sb >= 0:
            _prefetch(pool, sb + lb)
    elif la > 0 and lb > 0:
        if la > lb:
            sa, la, sb, lb = sb, lb, sa, la
        _prefetch(pool, sa)
        _prefetch(pool, sb + lb)


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
    node = np.empty((n_pixels, 4), np.int32)
    node[:, PARENT] = np.arange(n_pixels)
    node[:, START] = -1
    node[:, LEN] = 0
    node[:, SEEN] = 0  # SEEN == scan id: this root already kept in that scan
    flat = node.reshape(-1)  # a view, for the prefetches (node is never reallocated)
    pool = np.empty(max(pool_size, 1), np.int32)
    top = 0
    known = np.full(1 << 12, _EMPTY, np.int64)
    n_known = 0
    scan = 0

    # Edges are decoded once, 24 places ahead, into a ring the prefetch stages
    # and the edge itself read back (a division per edge, not four).
    n_edges = sorted_edges.shape[0]
    ring_p = np.empty(32, np.int64)
    ring_q = np.empty(32, np.int64)
    ring_c = np.empty(32, np.int64)
    for i in range(min(24, n_edges)):
        ring_p[i], ring_q[i], ring_c[i] = _decode(sorted_edges[i], n_pixels, flat_offsets)
    for i in range(n_edges):
        # three prefetch stages, each using what the one before brought in: the
        # pixels of edge i + 24, the records of their parents for edge i + 12
        # (a parent is the root or close to it), the pool slots edge i + 4 will
        # read or write
        if i + 24 < n_edges:
            k = (i + 24) & 31
            ring_p[k], ring_q[k], ring_c[k] = _decode(sorted_edges[i + 24], n_pixels, flat_offsets)
            _prefetch(flat, 4 * ring_p[k])
            _prefetch(flat, 4 * ring_q[k])
        if i + 12 < n_edges:
            k = (i + 12) & 31
            _prefetch(flat, 4 * node[ring_p[k], PARENT])
            _prefetch(flat, 4 * node[ring_q[k], PARENT])
        if i + 4 < n_edges:
            k = (i + 4) & 31
            a3 = node[node[ring_p[k], PARENT], PARENT]
            b3 = node[node[ring_q[k], PARENT], PARENT]
            _prefetch_pool(a3, b3, ring_c[k] >= n_attractive, pool, node)

        k = i & 31
        c = ring_c[k]
        ru = _find_node(node, ring_p[k])
        rv = _find_node(node, ring_q[k])
        if ru == rv:
            continue
        if c >= n_attractive:  # repulsive: each remembers the other
            pool, top = _append(ru, rv, pool, top, node)
            pool, top = _append(rv, ru, pool, top, node)
            continue
        # attractive: rv is the cluster with fewer partners (a root with none is
        # mutex with nobody: merge at once)
        len_u, len_v = node[ru, LEN], node[rv, LEN]
        if len_u < len_v:
            ru, rv, len_u, len_v = rv, ru, len_v, len_u
        if len_v:
            long_block = len_v > short_block
            if long_block and _contains(known, _pair(ru, rv, n_pixels)):
                continue
            # scan rv's partners for ru, resolving each to its current root and
            # compacting away duplicates as we go
            scan += 1
            s = node[rv, START]
            end = s + len_v
            for j in range(s, min(s + 8, end)):
                _prefetch(flat, 4 * pool[j])
            w = s
            k = s
            mutex = False
            while k < end:
                if k + 8 < end:  # the partners' records, 8 entries ahead
                    _prefetch(flat, 4 * pool[k + 8])
                r = _find_node(node, pool[k])
                if r == ru:
                    mutex = True
                    break
                if node[r, SEEN] != scan:
                    node[r, SEEN] = scan
                    pool[w] = r
                    w += 1
                k += 1
            if mutex:
                rest = end - k  # close the gap left by dropped duplicates
                for j in range(rest):  # forward copy: the ranges may overlap
                    pool[w + j] = pool[k + j]
                node[rv, LEN] = w - s + rest
                if long_block:
                    if 3 * (n_known + 1) > 2 * known.shape[0]:
                        known = _grown(known)
                    n_known += _insert(known, _pair(ru, rv, n_pixels))
                continue
            # merge: rv's (deduplicated) partners join ru's block
            len_v = w - s
            node[rv, LEN] = len_v
            pool, top = _reserve(ru, len_u + len_v, pool, top, node)
            s, d = node[rv, START], node[ru, START] + len_u
            pool[d:d + len_v] = pool[s:s + len_v]
            node[ru, LEN] = len_u + len_v
            node[rv, START] = -1
            node[rv, LEN] = 0
        node[rv, PARENT] = ru
    roots = np.empty(n_pixels, np.int64)
    for p in range(n_pixels):
        roots[p] = _find_node(node, p)
    return roots


MAX_INT32 = 2**31 - 1


@njit(cache=True)
def end_of_attractive(sorted_edges, n_attractive_ids):  # pragma: no cover - compiled
    """One past the position of the last attractive edge (id below
    ``n_attractive_ids``) in ``sorted_edges``, 0 when there is none: repulsive
    edges after it can never block a merge. Scans back from the end, where it
    usually is."""
    for i in range(sorted_edges.shape[0] - 1, -1, -1):
        if sorted_edges[i] < n_attractive_ids:
            return i + 1
    return 0


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


def edges_by_decreasing_weight(affs_flat, n_pixels, n_attractive, edge_ids):
    """``edge_ids`` (increasing) sorted by decreasing weight, ties by increasing
    id: a stable LSD radix sort on three 11-bit digits of the weight keys."""
    keys = _weight_keys(affs_flat, n_pixels, n_attractive, edge_ids)
    return sort_by_key(keys, edge_ids)[1]
