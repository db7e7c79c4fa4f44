"""Compiled core of :func:`affcons_lib.postprocess.fragments_from_affinities`:
grow seeded regions along strong affinity edges.

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

from ._kernels import _find


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
        rp = _find(parent, p)
        rq = _find(parent, p + flat_offsets[c])
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
        r = _find(parent, p)
        if label[r] == 0 and size[r] >= min_new_size:
            label[r] = next_label
            next_label += 1
        out[p] = label[r]
    return out
