"""Compiled core of the mutex watershed (Wolf et al. 2020), used when the C++
package affogato is not importable. See :func:`affcons_lib.segmentation.postprocess.mutex_watershed`.

Kruskal's order: edges by decreasing weight. An attractive edge merges its two
clusters unless a mutex (a "must not merge" constraint) separates them; a
repulsive edge adds a mutex between its clusters unless they are already one.

Repulsive edges are stored lazily. Processing one only marks it active, a bit in
the records of its two pixels; whether it separates two clusters is asked only
when, and if, an attractive edge tries to merge them; an edge is read only when
a scan passes its pixels. On the benchmark's uniform weights 8 of 10 processed
edges are repulsive, and an earlier version appended each to both clusters'
partner lists: two random writes into a growing pool per edge, and lists to
merge and deduplicate.

"Are ru and rv mutex?" scans the pixels of the smaller cluster (a circular list)
for an active repulsive edge whose other end lies in the other: every pixel
keeps its cluster's root exactly, since a merge relabels the smaller cluster
(small into large: each pixel is relabelled O(log n) times, and the scan that
precedes a merge lists the pixels to relabel). A small hash set of pairs already
found mutex answers the repeated question along the boundary of two large
clusters.

The time of this algorithm goes to waiting on memory: in weight order, every
edge touches random pixels. A pixel's root, list link, size and active bits
share one record (one cache line), and the pass prefetches the records that
edges a few places ahead will touch, so that their memory waits overlap.
Interleaved runs on the benchmark's inputs (``benchmarks/bench_postprocess.py``),
lazy against the partner lists: 2D uniform 0.81 s against 1.79 s, 3D uniform
3.2 s against 5.5 s, structured 1.4-1.7x faster; the same partitions.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._kernels import EMPTY, contains, grown, insert
from ._keysort import sort_by_key


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the CPU to bring ``array[index]`` into cache (LLVM's prefetch: a hint,
    no fault and no effect on any value, even out of bounds). The Kruskal pass
    waits on memory, not arithmetic: edges come in weight order, so every edge
    touches random pixels and their roots. Requests issued a few edges ahead
    overlap those waits."""
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


@njit(cache=True, inline="always")
def _pair(a, b, n):
    return a * n + b if a < b else b * n + a


@njit(cache=True, inline="always")
def _decode(e, n_pixels, flat_offsets):
    """Edge id ``c * n_pixels + p`` -> (p, its neighbour p + offset, c). Ids fit
    in 32 bits (the caller checks), and a 32-bit division is the cheaper one."""
    c = np.int64(np.uint32(e) // np.uint32(n_pixels))
    p = np.int64(e) - c * n_pixels
    return p, p + flat_offsets[c], c


# One record per pixel: its cluster's root (kept exact: a merge relabels the
# smaller cluster), the next pixel of its cluster (a circular list), the cluster's
# size (meaningful at the root) and bit words of its active repulsive edges.
# Side by side they share a cache line: one memory wait per pixel, not four.
ROOT, NEXT, SIZE, ACT = 0, 1, 2, 3
# bits used per word: 31, so that a word stays a non-negative int32 and the
# lowest-set-bit loop never meets a sign bit
WORD_BITS = 31


@njit(cache=True, inline="always")
def _lowest_bit(bits):
    """Index of the lowest set bit of a positive word."""
    low = bits & -bits
    d = 0
    while (1 << d) != low:
        d += 1
    return d


@njit(cache=True)
def mws_kruskal(sorted_edges, n_pixels, n_attractive, flat_offsets, short_block=8):  # pragma: no cover - compiled
    """Run the mutex watershed over ``sorted_edges`` (edge ids ``c * n_pixels + p``
    in processing order, all valid). Returns the root of every pixel.

    Clusters with more than ``short_block`` pixels consult (and fill) the set of
    pairs known to be mutex before a scan: two large clusters meet along a whole
    boundary, and every attractive edge there asks the same question again. It
    does not change the result; the tests set it to 0 to use the set always."""
    n_channels = flat_offsets.shape[0]
    n_repulsive = n_channels - n_attractive
    n_words = (2 * n_repulsive + WORD_BITS - 1) // WORD_BITS
    width = ACT + max(n_words, 1)
    node = np.zeros((n_pixels, width), np.int32)
    node[:, ROOT] = np.arange(n_pixels)
    node[:, NEXT] = np.arange(n_pixels)
    node[:, SIZE] = 1
    flat = node.reshape(-1)  # a view, for the prefetches
    # direction d of a pixel x: the repulsive edge from x along channel
    # n_attractive + d (d < n_repulsive), or the one arriving at x along channel
    # n_attractive + d - n_repulsive; its other end is x + direction_offset[d]
    direction_offset = np.empty(2 * n_repulsive, np.int64)
    for d in range(n_repulsive):
        direction_offset[d] = flat_offsets[n_attractive + d]
        direction_offset[n_repulsive + d] = -flat_offsets[n_attractive + d]
    members = np.empty(n_pixels, np.int32)  # the scanned cluster, for relabelling
    known = np.full(1 << 12, EMPTY, np.int64)
    n_known = 0

    # Edges are decoded once, 16 places ahead, into a ring the prefetch stages and
    # the edge itself read back (a division per edge, not three).
    n_edges = sorted_edges.shape[0]
    ring_p = np.empty(32, np.int64)
    ring_q = np.empty(32, np.int64)
    ring_c = np.empty(32, np.int64)
    for i in range(min(16, n_edges)):
        ring_p[i], ring_q[i], ring_c[i] = _decode(sorted_edges[i], n_pixels, flat_offsets)
    for i in range(n_edges):
        # two prefetch stages: the records of the pixels of edge i + 16, then
        # (read from them) the records of their roots for edge i + 8
        if i + 16 < n_edges:
            k = (i + 16) & 31
            ring_p[k], ring_q[k], ring_c[k] = _decode(sorted_edges[i + 16], n_pixels, flat_offsets)
            _prefetch(flat, width * ring_p[k])
            _prefetch(flat, width * ring_q[k])
        if i + 8 < n_edges:
            k = (i + 8) & 31
            if ring_c[k] < n_attractive:
                _prefetch(flat, width * node[ring_p[k], ROOT])
                _prefetch(flat, width * node[ring_q[k], ROOT])

        k = i & 31
        p, q, c = ring_p[k], ring_q[k], ring_c[k]
        if c >= n_attractive:
            # repulsive: only mark the edge active at both ends. Whether it joins
            # two clusters is asked when (if ever) they try to merge.
            d = c - n_attractive
            node[p, ACT + d // WORD_BITS] |= np.int32(1 << (d % WORD_BITS))
            d += n_repulsive
            node[q, ACT + d // WORD_BITS] |= np.int32(1 << (d % WORD_BITS))
            continue
        ru, rv = node[p, ROOT], node[q, ROOT]
        if ru == rv:
            continue
        if node[ru, SIZE] < node[rv, SIZE]:
            ru, rv = rv, ru
        # attractive: merge unless an active repulsive edge leaves the smaller
        # cluster rv for ru; scan rv's pixels for one
        size_v = node[rv, SIZE]
        long_scan = size_v > short_block
        if long_scan and contains(known, _pair(ru, rv, n_pixels)):
            continue
        x = rv
        mutex = False
        for m in range(size_v):
            members[m] = x
            for w in range(n_words):
                bits = node[x, ACT + w]
                while bits:
                    d = _lowest_bit(bits)
                    bits ^= 1 << d
                    if node[x + direction_offset[w * WORD_BITS + d], ROOT] == ru:
                        mutex = True
                        break
                if mutex:
                    break
            if mutex:
                break
            x = node[x, NEXT]
        if mutex:
            if long_scan:
                if 3 * (n_known + 1) > 2 * known.shape[0]:
                    known = grown(known)
                n_known += insert(known, _pair(ru, rv, n_pixels))
            continue
        # merge, small into large: each pixel is relabelled O(log n) times
        for m in range(size_v):
            node[members[m], ROOT] = ru
        nxt = node[ru, NEXT]  # splice the two circular lists
        node[ru, NEXT] = node[rv, NEXT]
        node[rv, NEXT] = nxt
        node[ru, SIZE] += size_v
    return node[:, ROOT].astype(np.int64)


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
    id (the ids, increasing, break the ties of :func:`._keysort.sort_by_key`)."""
    keys = _weight_keys(affs_flat, n_pixels, n_attractive, edge_ids)
    return sort_by_key(keys, edge_ids)[1]
