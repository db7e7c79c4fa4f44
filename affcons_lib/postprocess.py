"""From affinities to instances.

3D (METHOD §6): fragments that do not cross a boundary
(:func:`fragments_from_affinities`, or the crop-invariant ones of
:mod:`affcons_lib.fragments`), then waterz agglomeration scored by the median
affinity between fragments, over a sweep of thresholds; which of these steps a
score uses is one :class:`affcons_lib.recipe.Recipe`.

2D: the mutex watershed (attractive = nearest-neighbour affinity, repulsive = 1 -
long-range affinity), an optional foreground mask, then small-object merging.

Affinities follow :mod:`affcons_lib.affinity`: channel-first, offsets with
non-positive entries, the nearest-neighbour channels (z, y, x) first -- exactly the
layout waterz expects (``affs[0][z][y][x]`` links (z, y, x) and (z-1, y, x)).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from .affinity import edge_slices, check_offsets

__all__ = [
    "check_affs",
    "SCORING",
    "scoring_function",
    "fragments_from_affinities",
    "agglomerate",
    "SweepResult",
    "sweep_thresholds",
    "mutex_watershed",
    "HAVE_AFFOGATO",
    "merge_small_objects",
]

#: waterz scoring functions by name (all compiled into waterz's wheels).
#:
#: - ``median``: the median affinity of the boundary between two regions, as the
#:   field's pipelines score it (``HistogramQuantileAffinity<..., 50, ..., 256,
#:   false>``: an edge's histogram starts empty).
#: - ``median_release``: the string of the paper's release,
#:   ``OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>``,
#:   which leaves the last template flag (``InitWithMax``) at its default ``true``:
#:   every edge's histogram starts from its single highest affinity, so one
#:   strong voxel pair pulls the median of a short boundary up (merges).
#: - ``mean``: the mean affinity of the boundary (waterz's ``MeanAffinity``; what
#:   :mod:`affcons_lib.blockwise` computes).
#: - ``quantile_Q``: the Q-th percentile, like ``median``.
SCORING = {
    "median": "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256, false>>",
    "median_release": "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>",
    "mean": "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>",
    **{f"quantile_{q}": f"OneMinus<HistogramQuantileAffinity<RegionGraphType, {q}, ScoreValue, 256, false>>"
       for q in range(10, 100, 5)},
}

try:  # the real mutex watershed, conda-forge only (the PyPI 'affogato' is unrelated)
    from affogato.segmentation import compute_mws_segmentation as _affogato_mws  # type: ignore

    HAVE_AFFOGATO = True
except Exception:  # pragma: no cover - depends on the environment
    _affogato_mws = None
    HAVE_AFFOGATO = False


def scoring_function(scoring: str) -> str:
    """The waterz C++ scoring type for a name in :data:`SCORING`, or ``scoring``
    itself when it already is a C++ type string."""
    if scoring in SCORING:
        return SCORING[scoring]
    if "<" in scoring:
        return scoring
    raise ValueError(f"scoring: expected one of {sorted(SCORING)} or a waterz C++ type string, got {scoring!r}")


def check_affs(affs, n_channels_min: int, spatial_ndim: int | None = None, name: str = "affs") -> np.ndarray:
    affs = np.asarray(affs)
    if not np.issubdtype(affs.dtype, np.floating):
        raise TypeError(f"{name}: expected floating-point affinities, got dtype {affs.dtype}")
    if spatial_ndim is not None and affs.ndim != spatial_ndim + 1:
        raise ValueError(f"{name}: expected shape (C, {'Z, ' if spatial_ndim == 3 else ''}Y, X), got {affs.shape}")
    if affs.shape[0] < n_channels_min:
        raise ValueError(f"{name}: expected at least {n_channels_min} channels, got {affs.shape[0]}")
    if not np.isfinite(affs).all():
        bad = int((~np.isfinite(affs)).sum())
        raise ValueError(f"{name}: {bad} NaN or infinite value(s); affinities must be finite, in [0, 1]")
    lo, hi = (float(affs.min()), float(affs.max())) if affs.size else (0.0, 1.0)
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"{name}: values in [{lo:g}, {hi:g}]; affinities must lie in [0, 1]")
    if lo < 0 or hi > 1:  # float rounding only: clip
        affs = np.clip(affs, 0, 1).astype(affs.dtype, copy=False)
    return affs


# ----------------------------------------------------------------------- 3D
@contextlib.contextmanager
def _quiet_stdout(quiet: bool = True):
    """Send the process's C-level stdout to /dev/null (waterz prints from C++)."""
    if not quiet:
        yield
        return
    sys.stdout.flush()
    try:
        fd = sys.__stdout__.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (some notebook setups)
        fd = 1
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(io.StringIO()):
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _strong_everywhere(affs: np.ndarray, axes: Sequence[int], threshold: float) -> np.ndarray:
    """Bool (Z, Y, X): voxels whose every incident nearest-neighbour edge along
    ``axes`` (to the lower *and* the upper neighbour) has an affinity above
    ``threshold``. Channel ``c`` at ``v`` is the edge (v - e_c, v)."""
    inside = np.ones(affs.shape[1:], dtype=bool)
    for c in axes:
        at_v = [slice(None)] * 3
        at_lower = [slice(None)] * 3
        at_v[c], at_lower[c] = slice(1, None), slice(0, -1)
        strong = affs[c][tuple(at_v)] > threshold
        inside[tuple(at_v)] &= strong  # edge to the lower neighbour
        inside[tuple(at_lower)] &= strong  # the same edge seen from below
    return inside


def _seeded_basins(inside: np.ndarray, min_seed_distance: int) -> tuple[np.ndarray, int]:
    """Distance-transform watershed of the ``inside`` voxels (2D or 3D): seeds at
    the local maxima of the distance to the nearest outside voxel, each flooding
    its basin of ``inside``. Returns (int64 labels, 0 outside; number of seeds)."""
    from skimage.segmentation import watershed

    dist = ndimage.distance_transform_edt(inside).astype(np.float32)
    maxima = (ndimage.maximum_filter(dist, size=min_seed_distance) == dist) & inside
    seeds, n = ndimage.label(maxima)
    if n == 0:
        return np.zeros(inside.shape, np.int64), 0
    return watershed(-dist, seeds, mask=inside).astype(np.int64), n


def _flood_nearest(labels: np.ndarray) -> np.ndarray:
    """Give every 0 voxel the label of its nearest labelled voxel (Euclidean)."""
    if labels.all() or not labels.any():
        return labels
    idx = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    return labels[tuple(idx)]


def fragments_from_affinities(affs: np.ndarray, *, mode: str = "volume", threshold: float = 0.5,
                              min_seed_distance: int = 3, min_new_size: int = 10) -> np.ndarray:
    """Over-segment a volume into fragments that do not cross a boundary.

    1. *Inside* voxels: every incident nearest-neighbour edge -- to the lower and
       the upper neighbour -- has an affinity above ``threshold``. (The edges to
       the lower neighbours alone miss one of the two sides of a one-voxel
       boundary, and fragments leak across it.)
    2. A distance-transform watershed of the inside voxels: seeds at the maxima
       of the distance to the nearest boundary voxel, one basin per seed.
    3. The remaining voxels join a basin along edges above ``threshold``, strongest
       first, never uniting two seeds (Kruskal's order): a voxel touching another
       instance joins its own. A connected set of such voxels that reaches no
       seed (a neurite too thin to hold an inside voxel) becomes a fragment of its
       own when it has at least ``min_new_size`` voxels.
    4. What is left (boundary voxels, all of whose edges are weak) goes to the
       nearest fragment, so every voxel belongs to a fragment.

    Parameters
    ----------
    affs : ndarray of float, shape (C >= 3, Z, Y, X), values in [0, 1]
        Channels 0, 1, 2: the z, y, x nearest-neighbour affinities.
    mode : 'volume' or 'slice'
        ``volume``: 3D fragments from all three channels, for isotropic data (the
        FIB-SEM volume, 10 nm voxels). ``slice``: per z-slice fragments from the
        in-plane channels, for anisotropic data (the paper's AC3 / CREMI, 30-40 nm
        sections), where z-merging is left to the agglomeration.
    threshold : float
        Affinity above which an edge links two voxels of one instance.
    min_seed_distance : int
        Edge length of the maximum filter that finds seeds.
    min_new_size : int
        Smallest seedless set of strongly linked voxels that becomes a fragment.

    Returns
    -------
    ndarray of uint64, shape (Z, Y, X): fragment ids 1, 2, ... (no 0).
    """
    from ._fragments import grow_along_strong_edges
    from ._mws import edges_by_decreasing_weight

    affs = check_affs(affs, 3, spatial_ndim=3)
    if mode not in ("volume", "slice"):
        raise ValueError(f"mode: expected 'volume' (isotropic data) or 'slice' (anisotropic), got {mode!r}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold: expected a value in [0, 1), got {threshold}")
    if min_seed_distance < 1 or min_new_size < 1:
        raise ValueError(f"min_seed_distance and min_new_size: expected >= 1, got {min_seed_distance}, "
                         f"{min_new_size}")
    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    shape = nn.shape[1:]
    axes = (0, 1, 2) if mode == "volume" else (1, 2)
    inside = _strong_everywhere(nn, axes, threshold)
    if mode == "volume":
        seeds, n_seeds = _seeded_basins(inside, min_seed_distance)
    else:
        seeds, n_seeds = np.zeros(shape, np.int64), 0
        for z in range(shape[0]):
            basins, n = _seeded_basins(inside[z], min_seed_distance)
            seeds[z] = np.where(basins > 0, basins + n_seeds, 0)
            n_seeds += n

    # Only strong edges with an endpoint outside can still change a label.
    n_pixels = int(np.prod(shape))
    outside = ~inside
    candidates = np.zeros(nn.shape, dtype=bool)
    for c in axes:
        at_v, at_lower = [slice(None)] * 3, [slice(None)] * 3
        at_v[c], at_lower[c] = slice(1, None), slice(0, -1)
        candidates[c][tuple(at_v)] = (nn[c][tuple(at_v)] > threshold) & (
            outside[tuple(at_v)] | outside[tuple(at_lower)])
    edge_ids = np.flatnonzero(candidates.ravel())
    if nn.size <= np.iinfo(np.int32).max:
        edge_ids = edge_ids.astype(np.int32)
    sorted_edges = edges_by_decreasing_weight(nn.ravel(), n_pixels, 3, edge_ids)
    flat_offsets = -np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    labels = grow_along_strong_edges(seeds.ravel(), sorted_edges, n_pixels, flat_offsets, int(min_new_size),
                                     n_seeds + 1).reshape(shape)
    if mode == "volume":
        labels = _flood_nearest(labels)
    else:
        labels = np.stack([_flood_nearest(s) for s in labels])
    if not labels.all():  # a slice (or volume) without any fragment: one fragment per such slice
        for z in np.flatnonzero(~labels.reshape(shape[0], -1).any(1)):
            labels[z] = labels.max() + 1
    _, consecutive = np.unique(labels, return_inverse=True)
    return (consecutive.reshape(shape) + 1).astype(np.uint64)


def agglomerate(affs: np.ndarray, thresholds: Sequence[float], *, scoring: str = "median",
                fragments="distance", gt: np.ndarray | None = None, quiet: bool = True,
                **fragment_options) -> list[np.ndarray]:
    """waterz agglomeration: one segmentation per threshold.

    Parameters
    ----------
    affs : ndarray of float, shape (C >= 3, Z, Y, X)
        Only the first three (z, y, x nearest-neighbour) channels are used.
    thresholds : sequence of float in [0, 1]
        Merge until the score (1 - median affinity for ``median``) reaches each
        threshold; higher thresholds merge more.
    scoring : str
        A name from :data:`SCORING` (default ``median``, the paper's) or a waterz
        C++ scoring type.
    fragments : 'distance', 'waterz' or ndarray of uint64 (Z, Y, X)
        ``distance``: :func:`fragments_from_affinities` (the paper's); ``waterz``:
        waterz's own zwatershed fragments (many more, see METHOD §12); or given
        fragments.
    gt : ndarray, optional
        Passed to waterz, which then also reports its own metrics (ignored here).
    quiet : bool
        Silence waterz's progress messages (printed by its C++ code).
    **fragment_options
        Passed to :func:`fragments_from_affinities`.

    Returns
    -------
    list of ndarray of uint64, shape (Z, Y, X), in the order of ``thresholds``.
    """
    import waterz

    affs = check_affs(affs, 3, spatial_ndim=3)
    thresholds = [float(t) for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds: expected at least one threshold")
    order = np.argsort(thresholds)  # waterz needs them increasing
    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    if isinstance(fragments, str):
        if fragments == "distance":
            frags = fragments_from_affinities(nn, **fragment_options)
        elif fragments == "waterz":
            frags = None
        else:
            raise ValueError(f"fragments: expected 'distance', 'waterz' or an array, got {fragments!r}")
    else:
        # a copy: waterz writes its segmentation into the fragments buffer
        frags = np.array(fragments, dtype=np.uint64, order="C", copy=True)
        if frags.shape != nn.shape[1:]:
            raise ValueError(f"fragments: shape {frags.shape} does not match the affinities' {nn.shape[1:]}")
    if gt is not None:
        gt = np.ascontiguousarray(gt, dtype=np.uint32)
    segs = []
    with _quiet_stdout(quiet):
        for result in waterz.agglomerate(nn, [thresholds[i] for i in order], gt=gt, fragments=frags,
                                         scoring_function=scoring_function(scoring)):
            seg = result[0] if isinstance(result, tuple) else result
            segs.append(seg.copy())  # waterz reuses its buffer between thresholds
    out = [None] * len(segs)
    for k, i in enumerate(order):
        out[i] = segs[k]
    return out


@dataclass
class SweepResult:
    """Scores of one segmentation per threshold, and the best one by VOI."""

    thresholds: list[float]
    voi_split: list[float]
    voi_merge: list[float]
    arand: list[float]
    best_index: int
    best_segmentation: np.ndarray = field(repr=False)
    segmentations: list | None = field(default=None, repr=False)  # every threshold's, with keep_all=True

    @property
    def best_threshold(self) -> float:
        return self.thresholds[self.best_index]

    @property
    def voi(self) -> list[float]:
        return [s + m for s, m in zip(self.voi_split, self.voi_merge)]

    def as_rows(self) -> list[dict]:
        return [dict(threshold=t, voi_split=s, voi_merge=m, voi=s + m, arand=a)
                for t, s, m, a in zip(self.thresholds, self.voi_split, self.voi_merge, self.arand)]


def sweep_thresholds(affs: np.ndarray, gt: np.ndarray, thresholds: Sequence[float] = tuple(np.arange(0.1, 0.91, 0.1)),
                     keep_all: bool = False, **agglomerate_options) -> SweepResult:
    """Agglomerate at every threshold and score each segmentation against ``gt``
    (VOI and ARAND, gt 0 ignored); the best is the lowest VOI split + merge.
    ``keep_all=True`` also keeps every threshold's segmentation (a slider over
    thresholds needs them; one uint64 volume each).

    As in the paper, the threshold is chosen on the same ground truth it is scored
    on: an optimistic, oracle choice. Say so when you report it.
    """
    from . import metrics

    gt = np.asarray(gt)
    if gt.shape != np.asarray(affs).shape[1:]:
        raise ValueError(f"gt: shape {gt.shape} does not match the affinities' {np.asarray(affs).shape[1:]}")
    thresholds = [float(t) for t in thresholds]
    segs = agglomerate(affs, thresholds, **agglomerate_options)
    splits, merges, arands = [], [], []
    for seg in segs:
        scores = metrics.voi_arand(seg, gt)
        splits.append(scores["voi_split"])
        merges.append(scores["voi_merge"])
        arands.append(scores["arand"])
    best = int(np.argmin(np.add(splits, merges)))
    return SweepResult(thresholds, splits, merges, arands, best, segs[best], segs if keep_all else None)


# ----------------------------------------------------------------------- 2D
def _valid_edges(shape, offsets, n_attractive, strides, randomize_strides, mask, seed):
    """Bool (C, *shape): edges inside the image, between unmasked pixels, and on
    the stride grid (or a random subset of the same density) for repulsive ones."""
    valid = np.zeros((len(offsets),) + tuple(shape), dtype=bool)
    for c, o in enumerate(offsets):
        at_v, at_nb = edge_slices(o, shape)
        if mask is None:
            valid[c][at_v] = True
        else:
            valid[c][at_v] = mask[at_v] & mask[at_nb]
    if strides is not None:
        rep = valid[n_attractive:]
        if randomize_strides:
            rng = np.random.default_rng(seed)
            keep = rng.random(rep.shape) < 1.0 / float(np.prod(strides))
            rep &= keep
        else:
            grid = np.zeros(tuple(shape), dtype=bool)
            grid[tuple(slice(None, None, s) for s in strides)] = True
            rep &= grid[None]
    return valid


def _edges_by_decreasing_weight(affs, n_attractive, valid) -> np.ndarray:
    """Ids of the valid edges, by decreasing weight, ties by increasing id (a
    stable radix sort of the weights' bit patterns: see ``_mws``). int32 ids
    while they fit: the sort and the union-find then move half the memory."""
    from ._mws import MAX_INT32, edges_by_decreasing_weight

    edge_ids = np.flatnonzero(valid.ravel())
    if valid.size <= MAX_INT32:
        edge_ids = edge_ids.astype(np.int32)
    flat = np.ascontiguousarray(affs, dtype=np.float32).ravel()
    return edges_by_decreasing_weight(flat, int(np.prod(affs.shape[1:])), n_attractive, edge_ids)


def mutex_watershed(affs: np.ndarray, offsets: Sequence[Sequence[int]], n_attractive: int, *,
                    strides: Sequence[int] | None = None, randomize_strides: bool = False,
                    mask: np.ndarray | None = None, seed: int = 0, use_affogato: bool = False) -> np.ndarray:
    """Mutex watershed segmentation (Wolf et al., TPAMI 2020).

    Weights: an attractive edge (the first ``n_attractive`` channels) weighs its
    affinity ``a``; a repulsive edge (the other channels) weighs ``1 - a``. Edges
    are processed by decreasing weight (Kruskal's order): an attractive edge merges
    its clusters unless they are mutually exclusive, a repulsive edge makes them so.
    Ties are broken by edge index ``c * n_pixels + p`` (channel-major, then raster
    order), ascending.

    Parameters
    ----------
    affs : ndarray of float, shape (C, Y, X) or (C, Z, Y, X), values in [0, 1]
    offsets : sequence of C int tuples
    n_attractive : int
        Number of leading attractive channels (2 in the paper's 2D setting).
    strides : sequence of int, optional
        Keep repulsive edges only on this grid (speed; long-range edges are
        redundant); ``randomize_strides`` keeps a random subset of the same density.
    mask : ndarray of bool, shape (Y, X) or (Z, Y, X), optional
        Foreground; masked pixels get label 0 and their edges are dropped.
    seed : int
        Seed of ``randomize_strides``.
    use_affogato : bool, default False
        Use the C++ affogato implementation (conda-forge) instead of ours. Ours is
        the default wherever affogato is installed too, so that a conda and a pip
        user get the same segmentation: the two agree up to the order of tied
        weights (clipped affinities have many), and ours is deterministic.

    Returns
    -------
    ndarray of int64, same spatial shape; consecutive labels from 1 in raster
    order of first appearance, 0 on masked pixels.
    """
    from ._mws import MAX_INT32, end_of_attractive, mws_kruskal, relabel_first_seen

    affs = np.asarray(affs)
    if affs.ndim not in (3, 4):
        raise ValueError(f"affs: expected shape (C, Y, X) or (C, Z, Y, X), got {affs.shape}")
    affs = check_affs(affs, 1)
    shape = affs.shape[1:]
    offsets = check_offsets(offsets, len(shape))
    if len(offsets) != affs.shape[0]:
        raise ValueError(f"affs: {affs.shape[0]} channels do not match the {len(offsets)} offsets")
    if not 0 < n_attractive <= len(offsets):
        raise ValueError(f"n_attractive: expected 1..{len(offsets)}, got {n_attractive}")
    if strides is not None:
        strides = tuple(int(s) for s in strides)
        if len(strides) != len(shape) or min(strides) < 1:
            raise ValueError(f"strides: expected {len(shape)} positive integers, got {strides}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise ValueError(f"mask: shape {mask.shape} does not match the affinities' spatial shape {shape}")
        mask = mask.astype(bool)

    if use_affogato:
        if not HAVE_AFFOGATO:
            raise ImportError("use_affogato=True but affogato is not importable (conda install -c conda-forge affogato)")
        weights = affs.astype(np.float32, copy=True)
        weights[n_attractive:] = 1.0 - weights[n_attractive:]
        kwargs = dict(strides=list(strides) if strides else None, randomize_strides=randomize_strides)
        if mask is not None:
            kwargs["mask"] = mask
        seg = _affogato_mws(weights, [list(o) for o in offsets], n_attractive, **kwargs)
        keep = np.ones(shape, bool) if mask is None else mask
        return relabel_first_seen(np.ascontiguousarray(seg, dtype=np.int64).ravel(), keep.ravel()).reshape(shape)

    n_pixels = int(np.prod(shape))
    if 2 * n_pixels * len(offsets) > MAX_INT32:
        raise ValueError(f"affs: {n_pixels} pixels x {len(offsets)} offsets is too large for one mutex "
                         "watershed (32-bit indices); process the volume in blocks")
    valid = _valid_edges(shape, offsets, n_attractive, strides, randomize_strides, mask, seed)
    sorted_edges = _edges_by_decreasing_weight(affs, n_attractive, valid)
    elem_strides = np.array([int(np.prod(shape[d + 1:])) for d in range(len(shape))], dtype=np.int64)
    flat_offsets = np.array([int(np.dot(o, elem_strides)) for o in offsets], dtype=np.int64)
    # Repulsive edges after the last attractive one can never block a merge:
    # stop there (exact, and it spares the mutex bookkeeping of the tail).
    sorted_edges = sorted_edges[: end_of_attractive(sorted_edges, n_attractive * n_pixels)]
    roots = mws_kruskal(sorted_edges, n_pixels, n_attractive, flat_offsets)
    keep = np.ones(n_pixels, bool) if mask is None else mask.ravel()
    return relabel_first_seen(roots, keep).reshape(shape)


# ------------------------------------------------------------------ helpers
def merge_small_objects(seg: np.ndarray, min_size: int, heightmap: np.ndarray | None = None) -> np.ndarray:
    """Dissolve segments smaller than ``min_size`` voxels into their neighbours.

    The small segments' voxels are re-flooded from the remaining segments by a
    watershed on ``heightmap`` (e.g. 1 - mean nearest-neighbour affinity; flat by
    default, which gives the nearest neighbour), restricted to the original
    foreground (``seg > 0``). A small segment with no neighbour stays as it is.

    Returns
    -------
    ndarray, same shape and dtype as ``seg``.
    """
    from skimage.segmentation import watershed

    seg = np.asarray(seg)
    if not np.issubdtype(seg.dtype, np.integer):
        raise TypeError(f"seg: expected an integer label array, got dtype {seg.dtype}")
    if heightmap is not None and np.shape(heightmap) != seg.shape:
        raise ValueError(f"heightmap: shape {np.shape(heightmap)} does not match seg's {seg.shape}")
    if min_size <= 1:
        return seg.copy()
    ids, inverse, counts = np.unique(seg, return_inverse=True, return_counts=True)
    small = (counts < min_size) & (ids != 0)
    if not small.any():
        return seg.copy()
    markers = np.where(small[inverse.reshape(seg.shape)], 0, seg)
    if not markers.any():
        return seg.copy()
    hmap = np.zeros(seg.shape, np.float32) if heightmap is None else np.asarray(heightmap, np.float32)
    filled = watershed(hmap, markers, mask=seg > 0)
    # anything unreachable (an isolated small segment) keeps its id
    unreached = (filled == 0) & (seg > 0)
    filled[unreached] = seg[unreached]
    return filled.astype(seg.dtype, copy=False)
