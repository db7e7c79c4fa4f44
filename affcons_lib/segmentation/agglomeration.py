"""Hierarchical agglomeration of a fragment graph, as waterz's, in the library's
own compiled code (:mod:`affcons_lib.segmentation._graph`): the same steps on the whole
volume in memory and on the pooled graph of a blockwise run.

The region graph (:func:`region_graph`, :func:`graph_statistics`) holds, for
every pair of touching fragments, the sum, count and 256-bin histogram of the
nearest-neighbour affinities on their boundary. :func:`merge_history` merges
the pair of lowest score (``1 - median``, ``1 - quantile`` or ``1 - mean`` of
the boundary) while any is left, pooling the statistics of merged boundaries,
and keeps every merge with its score: a threshold ``t`` keeps the merges before
the first scored ``>= t`` (:func:`segments_at`), so a sweep of thresholds costs
one agglomeration. :func:`agglomerate_fragments` does all of it on a volume.

The scores are waterz's (``HistogramQuantileAffinity<..., Q, ..., 256, false>``:
the pivot ``Q * total // 100 + 1`` of the histogram, the bin's centre; or
``MeanAffinity``); equal scores may be merged in another order than waterz's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from .labels import dense_ids

__all__ = ["BINS", "scoring_quantile", "boundary_edges", "histogram_bins", "boundary_histograms", "region_graph",
           "graph_statistics", "merge_history", "segments_at", "agglomerate_graph", "agglomerate_fragments"]

BINS = 256  # per-edge affinity histogram, as waterz's HistogramQuantileAffinity


def boundary_edges(fragments: np.ndarray, affs: np.ndarray, interior: Sequence[int]):
    """Every nearest-neighbour edge between two fragments (not 0) of the region
    ``fragments[interior:]``. Returns ``(u, v, inverse, values)``: the distinct
    pairs of fragment ids (u < v), and for each voxel edge the index of its pair
    and its affinity."""
    interior = tuple(int(i) for i in interior)
    inner = fragments[tuple(slice(i, None) for i in interior)]
    if affs.shape[1:] != inner.shape:
        raise ValueError(f"affs: spatial shape {affs.shape[1:]} does not match the fragments' region {inner.shape}")
    ids, local = dense_ids(fragments)
    zero = np.searchsorted(ids, 0) if ids.size and ids[0] == 0 else -1
    keys, vals = [], []
    for c in range(3):
        shift = [0, 0, 0]
        shift[c] = 1
        # p ranges over the region (minus the first plane when there is no margin)
        start = [max(i, s) for i, s in zip(interior, shift)]
        a = local[tuple(slice(s, None) for s in start)]
        b = local[tuple(slice(s - d, fragments.shape[k] - d) for k, (s, d) in enumerate(zip(start, shift)))]
        w = affs[c][tuple(slice(s - i, None) for s, i in zip(start, interior))]
        m = (a != b) & (a != zero) & (b != zero)
        lo, hi = np.minimum(a[m], b[m]), np.maximum(a[m], b[m])
        keys.append(lo * len(ids) + hi)
        vals.append(w[m].astype(np.float64))
    keys, vals = np.concatenate(keys), np.concatenate(vals)
    pairs, inverse = dense_ids(keys)
    return ids[pairs // len(ids)], ids[pairs % len(ids)], inverse, vals


def histogram_bins(values: np.ndarray) -> np.ndarray:
    """waterz's discretisation of affinities into :data:`BINS` bins."""
    return np.clip((np.clip(values, 0, 1) * BINS).astype(np.int64), 0, BINS - 1)


def boundary_histograms(pair_of: np.ndarray, bins: np.ndarray, n_pairs: int, counts=None) -> np.ndarray:
    """int32 (n_pairs, :data:`BINS`): voxel edges (or ``counts`` of them) added
    into their pair's row at their bin; one sort, not one scatter per edge."""
    cells, inverse = dense_ids(np.asarray(pair_of, np.int64) * BINS + np.asarray(bins, np.int64))
    total = np.bincount(inverse.ravel(), weights=counts, minlength=len(cells)) if counts is not None \
        else np.bincount(inverse.ravel(), minlength=len(cells))
    hist = np.zeros((int(n_pairs), BINS), np.int32)
    hist[cells // BINS, cells % BINS] = total
    return hist


def region_graph(fragments: np.ndarray, affs: np.ndarray, interior: Sequence[int] = (0, 0, 0)):
    """Boundary statistics between touching fragments.

    For each voxel ``p`` of ``fragments[interior:]`` and each nearest-neighbour
    channel ``c`` (offsets -z, -y, -x), the edge between the fragments of ``p`` and
    ``p - e_c`` collects ``affs[c, p]``. Fragment 0 (background) has no edges.

    Parameters
    ----------
    fragments : ndarray of uint64 (Z, Y, X)
    affs : ndarray of float (>= 3, Z - interior[0], ...): the region's affinities.
    interior : the low-side margin of ``fragments``.

    Returns
    -------
    u, v : ndarray of uint64, u < v, unique pairs
    sums : ndarray of float64, summed affinities on the boundary
    counts : ndarray of int64, number of boundary edges
    """
    u, v, inverse, vals = boundary_edges(fragments, affs, interior)
    sums = np.bincount(inverse, weights=vals, minlength=len(u))
    counts = np.bincount(inverse, minlength=len(u)).astype(np.int64)
    return u, v, sums, counts



def scoring_quantile(scoring: str) -> int:
    """The percentile a scoring of the graph agglomeration takes (-1: the mean)."""
    if scoring == "mean":
        return -1
    if scoring == "median":
        return 50
    if scoring.startswith("quantile_") and scoring[9:].isdigit() and 0 < int(scoring[9:]) < 100:
        return int(scoring[9:])
    raise ValueError(f"scoring: the graph agglomeration (in memory and blockwise) scores by 'median', 'mean' or "
                     f"'quantile_Q', got {scoring!r} (Recipe(agglomeration='waterz') takes waterz's other scorings)")


def merge_history(n_nodes: int, u: np.ndarray, v: np.ndarray, sums: np.ndarray, counts: np.ndarray, *,
                  histograms: np.ndarray | None = None, scoring: str = "mean", threshold: float = np.inf):
    """Hierarchical agglomeration as waterz's: repeatedly merge the two adjacent
    regions of lowest score (``1 - mean`` or ``1 - quantile`` of the boundary
    affinities) while it is below ``threshold``; the edges of a merged region to a
    common neighbour pool their statistics. Compiled (:mod:`affcons_lib.segmentation._graph`).

    Parameters
    ----------
    n_nodes : number of nodes (ids 0 … n_nodes-1)
    u, v : int arrays, the edges (each pair once, u != v)
    sums, counts : boundary affinity sums and edge counts (counts > 0)
    histograms : int32 (E, 256), the boundary affinities binned as waterz bins
        them (``median`` and ``quantile_Q``); pooled in place.
    scoring : ``mean``, ``median`` or ``quantile_Q``.
    threshold : stop before the first merge scored at or above it (default:
        merge everything connected: every threshold can be read off).

    Returns
    -------
    (a, b, score) : int64, int64, float64 arrays, the merges in order (``b``
    into ``a``). A threshold ``t`` keeps the merges before the first one scored
    ``>= t`` (:func:`segments_at`).
    """
    from ._graph import agglomerate

    q = scoring_quantile(scoring)
    u, v = np.asarray(u, np.int64), np.asarray(v, np.int64)
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    if not (len(u) == len(v) == len(sums) == len(counts)):
        raise ValueError("u, v, sums, counts: expected arrays of one length")
    if len(u) and (min(u.min(), v.min()) < 0 or max(u.max(), v.max()) >= n_nodes or (u == v).any()):
        raise ValueError(f"u, v: expected distinct node ids in [0, {n_nodes})")
    if len(u) and counts.min() <= 0:
        raise ValueError("counts: expected positive edge counts")
    if q >= 0:
        if histograms is None or histograms.shape != (len(u), BINS):
            raise ValueError(f"histograms: scoring {scoring!r} needs int32 ({len(u)}, {BINS}) boundary histograms")
        hist = np.ascontiguousarray(histograms, np.int32)
    else:
        hist = np.zeros((len(u), 0), np.int32)
    return agglomerate(int(n_nodes), u, v, sums, counts, hist, q, float(threshold))


def segments_at(n_nodes: int, history, threshold: float) -> np.ndarray:
    """Representative node of every node at ``threshold``, from :func:`merge_history`."""
    from ._graph import replay

    a, b, score = history
    stop = np.flatnonzero(np.asarray(score) >= threshold)
    return replay(int(n_nodes), np.asarray(a, np.int64), np.asarray(b, np.int64),
                  int(stop[0]) if len(stop) else len(score))


def agglomerate_graph(n_nodes: int, u: np.ndarray, v: np.ndarray, sums: np.ndarray, counts: np.ndarray,
                      threshold: float, *, histograms: np.ndarray | None = None, scoring: str = "mean") -> np.ndarray:
    """:func:`merge_history` until ``threshold``, as a representative node per
    node (int64, (n_nodes,)). Default scoring: the mean (waterz's
    ``OneMinus<MeanAffinity>``)."""
    history = merge_history(n_nodes, u, v, sums, counts, histograms=histograms, scoring=scoring,
                            threshold=threshold)
    return segments_at(n_nodes, history, threshold)


def graph_statistics(fragments: np.ndarray, affs: np.ndarray):
    """The region graph of a volume with boundary histograms.

    Parameters
    ----------
    fragments : ndarray of uint64 (Z, Y, X), 0 = no fragment
    affs : ndarray of float (>= 3, Z, Y, X)

    Returns
    -------
    nodes : ndarray of uint64, the fragment ids with an edge (sorted)
    u, v : ndarray of int64, edges as indices into ``nodes``, u < v
    sums : ndarray of float64; hist : ndarray of int32 (E, :data:`BINS`)
    """
    ids_u, ids_v, inverse, vals = boundary_edges(np.asarray(fragments), np.asarray(affs), (0, 0, 0))
    nodes, index = dense_ids(np.concatenate([ids_u, ids_v]))
    hist = boundary_histograms(inverse, histogram_bins(vals), len(ids_u))
    return (nodes, index[: len(ids_u)], index[len(ids_u):], np.bincount(inverse, weights=vals, minlength=len(ids_u)),
            hist)


def agglomerate_fragments(affs: np.ndarray, fragments: np.ndarray, thresholds: Sequence[float], *,
                          scoring: str = "median") -> list[np.ndarray]:
    """One segmentation per threshold from one agglomeration of ``fragments``
    (uint64 (Z, Y, X)) by the boundary affinities of ``affs`` (>= 3, Z, Y, X).
    Returns uint64 arrays (Z, Y, X), segment ids among the fragment ids."""
    fragments = np.asarray(fragments, np.uint64)
    nodes, u, v, sums, hist = graph_statistics(fragments, affs)
    history = merge_history(len(nodes), u, v, sums, hist.sum(1), histograms=hist, scoring=scoring)
    if not len(nodes):  # no two fragments touch: each is a segment
        return [fragments.copy() for _ in thresholds]
    top = int(fragments.max())
    if top < 4 * fragments.size + 1024:  # small ids (1 ... n): a table indexed by fragment id
        index = fragments.astype(np.int64)

        def relabel(rep):
            table = np.arange(top + 1, dtype=np.uint64)  # a fragment with no edge stays itself
            table[nodes.astype(np.int64)] = nodes[rep]
            return table[index]
    else:  # volume-wide ids: each voxel's node, found once for every threshold
        pos = np.minimum(np.searchsorted(nodes, fragments), len(nodes) - 1)
        found = nodes[pos] == fragments

        def relabel(rep):
            return np.where(found, nodes[rep][pos], fragments).astype(np.uint64)
    return [relabel(segments_at(len(nodes), history, float(t))) for t in thresholds]
