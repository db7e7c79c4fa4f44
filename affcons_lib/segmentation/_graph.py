"""Compiled core of the fragment-graph agglomeration used by blockwise
segmentation (see :func:`affcons_lib.segmentation.agglomeration.agglomerate_graph`).

An edge is scored as waterz scores it: ``1 - sum / count`` (mean affinity), or
``1 - `` a quantile of its 256-bin affinity histogram (waterz's
``HistogramQuantileAffinity``: the pivot ``Q * total // 100 + 1``, the bin's
centre). Merging pools sums, counts and histograms.

Regions are a union-find forest; each region keeps a linked list of its edges
(an edge sits in the lists of both its ends: entry ``2 e + side``), and a hash
map from the pair of current roots to the edge between them. A priority queue
holds (score, edge); an entry whose edge changed since is skipped when popped.

Merging the region with the shorter edge list into the other (small into large,
O(E log E) moves in all): each of its edges either becomes internal (dropped),
or joins the survivor's edge to the same neighbour (sums and counts pooled, new
score queued), or is re-keyed onto the survivor. Memory: about 100 bytes per edge.
"""

from __future__ import annotations

import heapq

import numpy as np
from numba import njit

from ._kernels import EMPTY, find_root, probe


@njit(cache=True)
def _table(eu, ev, alive, n_nodes, n_keys):
    """A hash map (pair of ends -> edge) of the live edges, load at most 1/3
    for ``n_keys`` keys."""
    size = 1 << 4
    while size < 3 * n_keys:
        size *= 2
    keys = np.full(size, EMPTY, np.int64)
    vals = np.empty(size, np.int64)
    for e in range(eu.shape[0]):
        if alive[e]:
            a, b = eu[e], ev[e]
            k = a * n_nodes + b if a < b else b * n_nodes + a
            i = probe(keys, k)
            keys[i] = k
            vals[i] = e
    return keys, vals


@njit(cache=True, inline="always")
def _score(e, es, ec, hist, quantile):
    if quantile < 0:
        return 1.0 - es[e] / ec[e]
    bins = hist.shape[1]
    total = 0
    for b in range(bins):
        total += hist[e, b]
    pivot = quantile * total // 100 + 1
    cum, b = 0, 0
    for b in range(bins):
        cum += hist[e, b]
        if cum >= pivot:
            break
    return 1.0 - (b + 0.5) / bins


@njit(cache=True)
def replay(n_nodes, merged_a, merged_b, n_merges):  # pragma: no cover - compiled
    """Representative node of every node after the first ``n_merges`` merges."""
    parent = np.arange(n_nodes)
    for k in range(n_merges):
        parent[find_root(parent, merged_b[k])] = find_root(parent, merged_a[k])
    out = np.empty(n_nodes, np.int64)
    for x in range(n_nodes):
        out[x] = find_root(parent, x)
    return out


@njit(cache=True)
def agglomerate(n_nodes, u, v, sums, counts, hist, quantile, threshold):  # pragma: no cover - compiled
    """Merge by increasing score while it is below ``threshold``; returns the
    merge history ``(a, b, score)`` arrays, in order (``b`` merged into ``a``).
    ``quantile < 0`` scores by the mean, else by that percentile of ``hist``
    (E, bins)."""
    n_edges = u.shape[0]
    merged_a = np.empty(max(0, n_nodes - 1), np.int64)
    merged_b = np.empty(max(0, n_nodes - 1), np.int64)
    merged_score = np.empty(max(0, n_nodes - 1), np.float64)
    n_merged = 0
    eu, ev = u.copy(), v.copy()
    es, ec = sums.astype(np.float64), counts.astype(np.float64)
    alive = np.ones(n_edges, np.bool_)
    head = np.full(n_nodes, -1, np.int64)
    tail = np.full(n_nodes, -1, np.int64)
    length = np.zeros(n_nodes, np.int64)
    nxt = np.full(2 * n_edges, -1, np.int64)
    for e in range(n_edges):
        for side in range(2):
            node = eu[e] if side == 0 else ev[e]
            entry = 2 * e + side
            if head[node] == -1:
                head[node] = entry
            else:
                nxt[tail[node]] = entry
            tail[node] = entry
            length[node] += 1
    keys, vals = _table(eu, ev, alive, n_nodes, n_edges)
    n_keys = n_edges
    heap = [(_score(e, es, ec, hist, quantile), e) for e in range(n_edges)]
    heapq.heapify(heap)

    while len(heap) > 0:
        score, e = heapq.heappop(heap)
        if not alive[e] or score != _score(e, es, ec, hist, quantile):
            continue  # merged away, or superseded by a newer entry
        if score >= threshold:
            break
        a, b = eu[e], ev[e]
        if length[a] < length[b]:
            a, b = b, a
        alive[e] = False
        merged_a[n_merged], merged_b[n_merged], merged_score[n_merged] = a, b, score
        n_merged += 1
        if 3 * (n_keys + length[b]) > 2 * keys.shape[0]:  # stale keys of merged-away roots go
            n_keys = 0
            for f in range(n_edges):
                n_keys += alive[f]
            keys, vals = _table(eu, ev, alive, n_nodes, n_keys + length[b])
        # walk b's list: drop dead entries, pool or re-key the live ones
        entry, prev, first, kept = head[b], -1, -1, 0
        while entry != -1:
            after = nxt[entry]
            f, side = entry // 2, entry % 2
            keep = False
            if alive[f]:
                other = ev[f] if side == 0 else eu[f]
                if other == a:
                    alive[f] = False  # now inside the merged region
                else:
                    k = a * n_nodes + other if a < other else other * n_nodes + a
                    i = probe(keys, k)
                    if keys[i] == k and alive[vals[i]]:
                        g = vals[i]  # a's edge to the same neighbour: pool
                        es[g] += es[f]
                        ec[g] += ec[f]
                        if quantile >= 0:
                            hist[g] += hist[f]
                        alive[f] = False
                        heapq.heappush(heap, (_score(g, es, ec, hist, quantile), g))
                    else:
                        if side == 0:
                            eu[f] = a
                        else:
                            ev[f] = a
                        keys[i] = k
                        vals[i] = f
                        n_keys += 1
                        keep = True
            if keep:
                if prev == -1:
                    first = entry
                else:
                    nxt[prev] = entry
                prev = entry
                kept += 1
            entry = after
        if kept:
            nxt[prev] = -1
            if head[a] == -1:
                head[a] = first
            else:
                nxt[tail[a]] = first
            tail[a] = prev
            length[a] += kept
        head[b], tail[b], length[b] = -1, -1, 0
    return merged_a[:n_merged], merged_b[:n_merged], merged_score[:n_merged]
