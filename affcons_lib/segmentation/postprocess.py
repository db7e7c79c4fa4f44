"""From affinities to instances.

3D (METHOD §6): waterz itself, the agglomeration the library's own
(:mod:`affcons_lib.segmentation.agglomeration`) is tested against: fragments
(the crop-invariant ones of :mod:`affcons_lib.segmentation.fragments`, or waterz's
own) merged by the median affinity between them, at each threshold.

2D: the mutex watershed (attractive = nearest-neighbour affinity, repulsive = 1 -
long-range affinity), an optional foreground mask, then small-object merging.

Affinities follow :mod:`affcons_lib.method.affinity`: channel-first, offsets with
non-positive entries, the nearest-neighbour channels (z, y, x) first -- exactly the
layout waterz expects (``affs[0][z][y][x]`` links (z, y, x) and (z-1, y, x)).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..method.affinity import check_affs, check_offsets, edge_slices
from .fragments import fragments as ascent_fragments
from .labels import dense_ids

__all__ = [
    "SCORING",
    "scoring_function",
    "agglomerate",
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
#:   :mod:`affcons_lib.blockwise.segment` computes).
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


def agglomerate(affs: np.ndarray, thresholds: Sequence[float], *, scoring: str = "median",
                fragments="ascent", gt: np.ndarray | None = None, quiet: bool = True,
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
    fragments : 'ascent', 'waterz' or ndarray of uint64 (Z, Y, X)
        ``ascent``: :func:`affcons_lib.segmentation.fragments.fragments` (the recipe's); ``waterz``:
        waterz's own zwatershed fragments (many more, see METHOD §12); or given
        fragments.
    gt : ndarray, optional
        Passed to waterz, which then also reports its own metrics (ignored here).
    quiet : bool
        Silence waterz's progress messages (printed by its C++ code).
    **fragment_options
        Passed to :func:`affcons_lib.segmentation.fragments.fragments`.

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
        if fragments == "ascent":
            frags = ascent_fragments(nn, **fragment_options)
        elif fragments == "waterz":
            frags = None
        else:
            raise ValueError(f"fragments: expected 'ascent', 'waterz' or an array, got {fragments!r}")
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
    sort of the weights' bit patterns with the ids: see ``_mws``). int32 ids
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
    ids, inverse = dense_ids(seg)
    small = (np.bincount(inverse.ravel(), minlength=len(ids)) < min_size) & (ids != 0)
    if not small.any():
        return seg.copy()
    markers = np.where(small[inverse], 0, seg)
    if not markers.any():
        return seg.copy()
    hmap = np.zeros(seg.shape, np.float32) if heightmap is None else np.asarray(heightmap, np.float32)
    filled = watershed(hmap, markers, mask=seg > 0)
    # anything unreachable (an isolated small segment) keeps its id
    unreached = (filled == 0) & (seg > 0)
    filled[unreached] = seg[unreached]
    return filled.astype(seg.dtype, copy=False)
