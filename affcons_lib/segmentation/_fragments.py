"""Compiled core of the fragments: the ascent pointers of the crop-invariant
fragments (:mod:`affcons_lib.segmentation.fragments`)."""

from __future__ import annotations

import numpy as np
from numba import njit



@njit(cache=True)
def ascent_pointers(strong, linked, height, to_linked, radius, use_z):  # pragma: no cover - compiled
    """Each voxel's pointer (a flat index into the same array) for
    :func:`affcons_lib.segmentation.fragments.pointers`.

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
