"""Compiled cores of the fragment steps: the ascent pointers of the
crop-invariant fragments (:mod:`affcons_lib.fragments`), and the seeded growth
along strong edges of :func:`affcons_lib.postprocess.fragments_from_affinities`
(``method="grown"``).

The distance-transform watershed seeds and floods only the voxels whose every
incident edge is strong (the "inside"). The rest -- a one-voxel border of a
touching pair of instances, a neurite too thin to hold an inside voxel -- is
joined here by Kruskal's order over the edges above the threshold: an edge
unites its two clusters unless both already carry different seeds. A cluster that
ends with no seed (a thin neurite, cut off from every seed by weak edges) becomes
a fragment of its own when it holds at least ``min_new_size`` voxels; smaller ones
are left 0 for the caller to flood. So a voxel joins the instance it is strongly
linked to, never a neighbour across a boundary edge.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import find_root


@njit(cache=True)
def grow_along_strong_edges(seeds, sorted_edges, n_pixels, flat_offsets, min_new_size,
                            next_label):  # pragma: no cover - compiled
    """Labels per pixel after uniting clusters along ``sorted_edges``.

    Parameters
    ----------
    seeds : int64 (n_pixels,), 0 = no seed yet.
    sorted_edges : int (E,), edge ids ``c * n_pixels + p`` (linking ``p`` and
        ``p + flat_offsets[c]``) by decreasing affinity, all above the threshold.
    min_new_size : an unseeded cluster of at least this many pixels becomes a new
        fragment, labelled from ``next_label`` on in raster order of its root.

    Returns int64 (n_pixels,): labels, 0 where nothing reached.
    """
    parent = np.arange(n_pixels)
    label = seeds.copy()
    size = np.ones(n_pixels, np.int64)
    for k in range(sorted_edges.shape[0]):
        e = sorted_edges[k]
        c = e // n_pixels
        p = e - c * n_pixels
        rp = find_root(parent, p)
        rq = find_root(parent, p + flat_offsets[c])
        if rp == rq:
            continue
        lp, lq = label[rp], label[rq]
        if lp != 0 and lq != 0 and lp != lq:
            continue  # two seeds: the boundary between fragments is here
        if size[rp] < size[rq]:
            rp, rq = rq, rp
            lp, lq = lq, lp
        parent[rq] = rp
        size[rp] += size[rq]
        if lp == 0:
            label[rp] = lq
    out = np.empty(n_pixels, np.int64)
    for p in range(n_pixels):
        r = find_root(parent, p)
        if label[r] == 0 and size[r] >= min_new_size:
            label[r] = next_label
            next_label += 1
        out[p] = label[r]
    return out


@njit(cache=True)
def ascent_pointers(strong, linked, height, to_linked, radius, use_z):  # pragma: no cover - compiled
    """Each voxel's pointer (a flat index into the same array) for
    :func:`affcons_lib.fragments.pointers`.

    A linked voxel (one with a strong edge) points to the highest voxel -- by
    ``height``, then the smaller index -- that it reaches in at most ``radius``
    steps along strong edges (itself when none is higher: a root). An unlinked
    voxel points to a linked neighbour (26-neighbourhood; in-plane only without
    ``use_z``), the highest one, or else to the neighbour nearest to a linked
    voxel (``to_linked``, then the smaller index). Heights and indices only
    increase along a chain of linked pointers and a chain of unlinked ones ends
    on a linked voxel: the pointers form a forest.
    """
    Z, Y, X = linked.shape
    n = Z * Y * X
    sz, sy = Y * X, X
    cap = 1
    for _ in range(3):
        cap *= 2 * radius + 1
    queue = np.empty(cap, np.int64)
    depth = np.empty(cap, np.int64)
    mark = np.full(n, -1, np.int64)
    ptr = np.empty(n, np.int64)
    sizes = (Z, Y, X)
    steps = (sz, sy, 1)
    for p in range(n):
        coords = (p // sz, (p // sy) % Y, p % X)
        if linked.flat[p]:
            best, best_h = p, height.flat[p]
            head, tail = 0, 1
            queue[0], depth[0], mark[p] = p, 0, p
            while head < tail:
                q, d = queue[head], depth[head]
                head += 1
                hq = height.flat[q]
                if hq > best_h or (hq == best_h and q < best):
                    best, best_h = q, hq
                if d == radius:
                    continue
                qc = (q // sz, (q // sy) % Y, q % X)
                for c in range(3):
                    # the edge to the lower neighbour is stored at q, to the upper one at q + step
                    if qc[c] > 0 and strong[c].flat[q]:
                        w = q - steps[c]
                        if mark[w] != p:
                            mark[w] = p
                            queue[tail], depth[tail] = w, d + 1
                            tail += 1
                    if qc[c] < sizes[c] - 1 and strong[c].flat[q + steps[c]]:
                        w = q + steps[c]
                        if mark[w] != p:
                            mark[w] = p
                            queue[tail], depth[tail] = w, d + 1
                            tail += 1
            ptr[p] = best
            continue
        best, best_linked, best_key = p, False, -to_linked.flat[p]
        z0 = -1 if use_z else 0
        z1 = 2 if use_z else 1
        for dz in range(z0, z1):
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    qz, qy, qx = coords[0] + dz, coords[1] + dy, coords[2] + dx
                    if qz < 0 or qz >= Z or qy < 0 or qy >= Y or qx < 0 or qx >= X:
                        continue
                    q = qz * sz + qy * sy + qx
                    if linked.flat[q]:
                        key = height.flat[q]
                        if not best_linked or key > best_key or (key == best_key and q < best):
                            best, best_linked, best_key = q, True, key
                    elif not best_linked:
                        key = -to_linked.flat[q]
                        if key > best_key or (key == best_key and q < best):
                            best, best_key = q, key
        ptr[p] = best
    return ptr
