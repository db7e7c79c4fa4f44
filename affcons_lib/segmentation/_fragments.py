"""Compiled core of the fragments: the ascent pointers of the crop-invariant
fragments (:mod:`affcons_lib.segmentation.fragments`)."""

from __future__ import annotations

import numpy as np
from numba import njit



@njit(cache=True)
def _highest_within(strong, height, radius):  # pragma: no cover - compiled
    """For every voxel, the highest voxel -- by ``height``, then the smaller flat
    index -- that it reaches in at most ``radius`` steps along strong edges.

    The ball of radius k around v is v's ball of radius k - 1 joined with those of
    its strong neighbours, so the highest voxel in it is the highest of their
    highest ones: ``radius`` sweeps of a neighbour maximum, each over every voxel
    once, give what a search of each voxel's ball gives. (That search, up to
    7^3 voxels per voxel at radius 3, was the costliest step of segmenting notebook
    01's test part: 1.5 s of the 10 s that scoring one run took at one thread.)
    """
    Z, Y, X = height.shape
    sz, sy = Y * X, X
    best = np.arange(Z * Y * X)
    best_h = height.ravel().copy()
    new_best = np.empty_like(best)
    new_h = np.empty_like(best_h)
    sz_, sy_, sx_ = strong[0].ravel(), strong[1].ravel(), strong[2].ravel()
    for _ in range(radius):
        for z in range(Z):
            for y in range(Y):
                for x in range(X):
                    p = z * sz + y * sy + x
                    b, h = best[p], best_h[p]
                    # the edge to the lower neighbour along an axis is stored at p, to the
                    # upper one at p + step
                    for q, is_edge in ((p - sz, z > 0 and sz_[p]), (p + sz, z < Z - 1 and sz_[p + sz]),
                                       (p - sy, y > 0 and sy_[p]), (p + sy, y < Y - 1 and sy_[p + sy]),
                                       (p - 1, x > 0 and sx_[p]), (p + 1, x < X - 1 and sx_[p + 1])):
                        if is_edge:
                            hq, bq = best_h[q], best[q]
                            if hq > h or (hq == h and bq < b):
                                b, h = bq, hq
                    new_best[p], new_h[p] = b, h
        best, new_best = new_best, best
        best_h, new_h = new_h, best_h
    return best


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
    ptr = _highest_within(strong, height, radius)  # an unlinked voxel reaches itself alone
    for p in range(n):
        if linked.flat[p]:
            continue
        coords = (p // sz, (p // sy) % Y, p % X)
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
