"""Scores of predicted affinities against ground truth, as the paper reports them.

3D (:func:`evaluate_3d`): affinities -> segmentation by one of two pipelines,
then VOI split / merge and ARAND against the ground truth.

- ``waterz`` (default, the paper's pipeline): the segmentation recipe
  (:class:`~affcons_lib.segmentation.recipe.Recipe`, run the same by blockwise segmentation):
  crop-invariant fragments that do not cross a boundary (:mod:`affcons_lib.segmentation.fragments`,
  3D for isotropic data, per slice for anisotropic), then waterz's hierarchical
  agglomeration scored by the median boundary affinity (the library's own code,
  :mod:`affcons_lib.segmentation.agglomeration`, tested against waterz itself), over
  a sweep of thresholds; the best
  threshold is chosen on the ground truth, as in the paper (an oracle choice:
  say so).
- ``mutex_watershed``: all 12 channels, then segments below ``min_segment_size``
  voxels (boundary voxels left as specks) dissolved into their neighbours.

Scored region: the whole volume given. By default ground-truth voxels within one
pixel of a label border in their section are ignored (``border_tolerance=1``, the
CREMI challenge's convention; these are the voxels that border widening turns
into boundary in the training targets). :func:`reference_scores` gives a table's
floors (one object, every voxel alone) and its ceiling (the ground-truth targets
through the same pipeline).

2D (:func:`evaluate_2d`): mutex watershed, then AJI, Dice, F1, PQ (BBBC039), SBD,
|DiC| (CVPPP) and, per image, VOI and ARAND (the ISBI 2012 challenge's measures).
What label 0 is decides the convention (``background``): ``"instance"`` for the
dark background of nuclei images (a region of its own; the largest segment is taken
as background), ``"boundary"`` for the membrane of EM sections (every edge touching
it is a cut; membrane pixels are left out of both sides of every score).
:func:`reference_scores_2d` gives a 2D table's floors and ceiling.

    python -m affcons_lib evaluate PRED.h5 [--method waterz|mutex_watershed] [--json OUT]
    python -m affcons_lib evaluate --segmentation SEG --labels VOL.h5:KEY   (blockwise, block by block)

PRED.h5 is what ``python -m affcons_lib predict`` writes (affinities, offsets and
the ground-truth labels of the predicted part).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import write_text
from ..data import check_finite
from ..method import affinity
from ..segmentation import postprocess
from ..segmentation.recipe import Recipe, recipe_fragments, recipe_segmentations
from . import metrics

__all__ = ["evaluate_3d", "SweepResult", "recipe_sweep", "segment_3d", "reference_scores", "evaluate_2d",
           "score_prediction", "evaluate_2d_many", "segment_2d", "fragments_2d", "reference_scores_2d",
           "BACKGROUNDS", "SCORES_2D", "affinity_scores", "read_prediction"]

#: What label 0 of 2D labels is (:func:`evaluate_2d`).
BACKGROUNDS = ("instance", "boundary")
#: The scores :func:`evaluate_2d` returns per image and :func:`evaluate_2d_many` averages.
SCORES_2D = ("aji", "dice", "f1", "pq", "sbd", "dic", "voi", "voi_split", "voi_merge", "arand", "n_true")

METHODS_3D = ("waterz", "mutex_watershed")


def _check_method(method: str) -> None:
    if method not in METHODS_3D:
        raise ValueError(f"method: expected one of {METHODS_3D}, got {method!r}")


def _scores(seg: np.ndarray, gt: np.ndarray) -> dict:
    return metrics.voi_arand(seg, gt)


def segment_3d(affs: np.ndarray, *, method: str = "waterz", threshold: float = 0.5, recipe: Recipe | None = None,
               scoring: str | None = None, fragment_mode: str | None = None, offsets=affinity.OFFSETS_3D,
               min_segment_size: int = 50) -> np.ndarray:
    """One segmentation of 3D affinities by either pipeline of :func:`evaluate_3d`
    (``threshold``: waterz's; ignored by the mutex watershed; ``scoring`` and
    ``fragment_mode`` replace the recipe's).

    Returns
    -------
    ndarray of uint64 (waterz) or int64 (mutex watershed), shape (Z, Y, X), no 0.
    """
    _check_method(method)
    if method == "waterz":
        recipe = (recipe or Recipe()).replace(scoring=scoring, mode=fragment_mode)
        return recipe_segmentations(affs, recipe_fragments(affs, recipe), recipe, [threshold])[0]
    seg = postprocess.mutex_watershed(affs, offsets, affinity.N_NEAREST_3D, use_affogato=False)
    return postprocess.merge_small_objects(seg, min_segment_size)


def evaluate_3d(affs: np.ndarray, gt: np.ndarray, *, method: str = "waterz", recipe: Recipe | None = None,
                thresholds=None, scoring: str | None = None, fragment_mode: str | None = None,
                border_tolerance: int | None = None, offsets=affinity.OFFSETS_3D, min_segment_size: int = 50) -> dict:
    """Segment 3D affinities and score the segmentation against ``gt``.

    Parameters
    ----------
    affs : ndarray of float, shape (C, Z, Y, X), values in [0, 1]
        At least the 3 nearest-neighbour channels (waterz); all of ``offsets``
        for the mutex watershed.
    gt : ndarray of int, shape (Z, Y, X); 0 is ignored.
    method : 'waterz' or 'mutex_watershed'
    recipe : :class:`~affcons_lib.segmentation.recipe.Recipe`, the segmentation recipe
        (default ``Recipe()``: ascent fragments, median scoring, thresholds 0.1
        ... 0.9, border tolerance 1); the options below replace its fields.
    thresholds : waterz thresholds swept; the best by VOI is reported.
    scoring : a name of :data:`affcons_lib.segmentation.postprocess.SCORING`: ``median``
        (the field's median), ``median_release`` (the release's string), ``mean``.
    fragment_mode : 'volume' (isotropic data, the default) or 'slice' (anisotropic).
    border_tolerance : int
        Ground-truth voxels closer than this many pixels to a label border in
        their section are ignored (:func:`affcons_lib.evaluation.metrics.ignore_borders`);
        0 scores every voxel.
    offsets : the offsets of ``affs`` (mutex watershed).
    min_segment_size : mutex watershed: smaller segments are dissolved.

    Returns
    -------
    dict with ``voi_split``, ``voi_merge``, ``voi``, ``arand``, ``threshold``
    (waterz; None otherwise), ``rows`` (one per threshold), ``fragments`` (the
    scores of waterz's fragments alone), ``n_segments``, ``method``,
    ``border_tolerance``, ``recipe`` (its fields) and ``segmentation``.
    """
    _check_method(method)
    recipe = (recipe or Recipe()).replace(thresholds=thresholds, scoring=scoring, mode=fragment_mode,
                                          border_tolerance=border_tolerance)
    affs = check_finite(affs, "affs")  # a NaN would silently become a cut or a merge
    gt = np.asarray(gt)
    if affs.ndim != 4 or affs.shape[1:] != gt.shape:
        raise ValueError(f"affs: expected shape (C, *gt.shape) = (C, {', '.join(map(str, gt.shape))}), "
                         f"got {affs.shape}")
    scored = metrics.ignore_borders(gt, recipe.border_tolerance)
    if method == "waterz":
        frags = recipe_fragments(affs, recipe)
        sweep = recipe_sweep(affs, scored, recipe, fragments=frags)
        best = sweep.as_rows()[sweep.best_index]
        seg = sweep.best_segmentation
        out = {**best, "rows": sweep.as_rows(), "fragments": sweep.fragments}
    else:
        seg = segment_3d(affs, method=method, offsets=offsets, min_segment_size=min_segment_size)
        out = {**_scores(seg, scored), "threshold": None, "rows": [], "fragments": None}
    out.update(n_segments=int(len(np.unique(seg))), method=method, border_tolerance=int(recipe.border_tolerance),
               recipe=recipe.as_dict(), segmentation=seg)
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
    fragments: dict | None = None  # the scores of the fragments alone (a floor)

    @property
    def best_threshold(self) -> float:
        return self.thresholds[self.best_index]

    @property
    def voi(self) -> list[float]:
        return [s + m for s, m in zip(self.voi_split, self.voi_merge)]

    def as_rows(self) -> list[dict]:
        return [dict(threshold=t, voi_split=s, voi_merge=m, voi=s + m, arand=a)
                for t, s, m, a in zip(self.thresholds, self.voi_split, self.voi_merge, self.arand)]


def recipe_sweep(affs: np.ndarray, scored_gt: np.ndarray, recipe: Recipe | None = None, *, fragments=None,
                 keep_all: bool = False):
    """Every threshold of the recipe scored against ``scored_gt`` (borders
    already ignored): a :class:`SweepResult`, the best by VOI (an oracle choice,
    as in the paper), with the scores of the fragments alone.

    The voxels are counted once, against the fragments: each segmentation merges
    whole fragments, so its contingency table is the fragments' with their rows
    merged (:meth:`~affcons_lib.evaluation.metrics.Contingency.relabeled`), the same
    table entry for entry as counting its voxels again."""
    recipe = recipe or Recipe()
    if np.shape(scored_gt) != np.shape(affs)[1:]:
        raise ValueError(f"scored_gt: shape {np.shape(scored_gt)} does not match the affinities' {np.shape(affs)[1:]}")
    frags = recipe_fragments(affs, recipe) if fragments is None else np.asarray(fragments)
    segs = recipe_segmentations(affs, frags, recipe)
    table = metrics.contingency(frags, scored_gt)
    flat = frags.ravel()
    by_lookup = flat.size and flat.min() >= 0 and int(flat.max()) < max(4 * flat.size, 1 << 16)
    scores = []
    for seg in segs:
        if by_lookup:  # the segment of each fragment (every voxel of a fragment has the same)
            seg_of = np.zeros(int(flat.max()) + 1, seg.dtype)
            seg_of[flat] = seg.ravel()
            scores.append(metrics.voi_arand_of(table.relabeled(seg_of)))
        else:  # ids too large for a table: count the voxels
            scores.append(metrics.voi_arand(seg, scored_gt))
    splits, merges = [s["voi_split"] for s in scores], [s["voi_merge"] for s in scores]
    best = int(np.argmin(np.add(splits, merges)))
    return SweepResult(list(recipe.thresholds), splits, merges, [s["arand"] for s in scores], best, segs[best],
                       segs if keep_all else None, metrics.voi_arand_of(table))


def reference_scores(gt: np.ndarray, *, widen: bool = True, **evaluate_options) -> list[dict]:
    """The floors and the ceiling of a 3D score table, on the region of ``gt``.

    Rows (each with ``voi_split``, ``voi_merge``, ``voi``, ``arand``):

    - ``one object``: everything merged (VOI = merge = the entropy of ``gt``);
    - ``every voxel alone``: everything split;
    - ``ground-truth targets (ceiling)``: the affinity targets of ``gt`` (border
      widened when ``widen``, as in training) through :func:`evaluate_3d` with
      the same options: the best this pipeline can do with perfect affinities.

    A method is only seen between the floors and the ceiling; a score at a floor
    says nothing about the method. (The fragments-alone floor depends on the
    prediction: :func:`evaluate_3d` returns it under ``fragments``.)
    """
    gt = np.asarray(gt)
    recipe = (evaluate_options.get("recipe") or Recipe()).replace(
        border_tolerance=evaluate_options.get("border_tolerance"))
    scored = metrics.ignore_borders(gt, recipe.border_tolerance)
    rows = [dict(name="one object", **_scores(np.ones(gt.shape, np.uint32), scored)),
            dict(name="every voxel alone", **_scores(np.arange(1, gt.size + 1, dtype=np.uint64).reshape(gt.shape),
                                                     scored))]
    offsets = evaluate_options.get("offsets", affinity.OFFSETS_3D)
    targets = affinity.training_targets(gt, offsets, widen=widen)[0]
    ceiling = evaluate_3d(targets, gt, **evaluate_options)
    rows.append(dict(name="ground-truth targets (ceiling)", **{k: ceiling[k] for k in
                                                               ("voi_split", "voi_merge", "voi", "arand")}))
    return rows


def segment_2d(affs: np.ndarray, offsets, n_attractive: int = 2, *, min_size: int = 20,
               largest_is_background: bool = True, mask=None) -> np.ndarray:
    """Mutex watershed of 2D affinities, then small-object merging; without a
    foreground mask, the largest segment is taken as background (label 0)."""
    seg = postprocess.mutex_watershed(affs, offsets, n_attractive, mask=mask)
    if mask is None and largest_is_background and seg.max() > 0:
        sizes = np.bincount(seg.ravel())
        sizes[0] = 0
        seg[seg == int(np.argmax(sizes))] = 0
    if min_size > 1:
        hmap = 1.0 - affs[:n_attractive].mean(0)
        seg = postprocess.merge_small_objects(seg, min_size, heightmap=hmap)
    return seg


def _check_background(background: str) -> None:
    if background not in BACKGROUNDS:
        raise ValueError(f"background: expected one of {BACKGROUNDS} (what label 0 is), got {background!r}")


def fragments_2d(affs: np.ndarray, n_attractive: int = 2, threshold: float = 0.5) -> np.ndarray:
    """The fragments of 2D affinities: connected components of the pixels linked by
    a nearest-neighbour affinity above ``threshold`` (the segmentation before the
    mutex watershed's repulsive edges have a say: a floor of a 2D table).

    Returns
    -------
    ndarray of int64, shape (Y, X), ids from 1.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    affs = np.asarray(affs)
    shape = affs.shape[1:]
    index = np.arange(int(np.prod(shape))).reshape(shape)
    rows, cols = [], []
    for c in range(n_attractive):
        axis = c % 2  # OFFSETS_2D: (-1, 0), (0, -1)
        here = [slice(None)] * 2
        there = [slice(None)] * 2
        here[axis], there[axis] = slice(1, None), slice(None, -1)
        linked = affs[c][tuple(here)] > threshold
        rows.append(index[tuple(here)][linked])
        cols.append(index[tuple(there)][linked])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(index.size, index.size))
    return connected_components(graph, directed=False)[1].reshape(shape).astype(np.int64) + 1


def _scores_2d(seg: np.ndarray, gt: np.ndarray, background: str) -> dict:
    """Every 2D score of one segmentation; with ``background="boundary"`` the
    membrane (gt 0) is left out of both sides."""
    gt = np.asarray(gt)
    if background == "boundary":
        seg = np.where(gt > 0, seg, 0)
    out = {"aji": metrics.aji(seg, gt), "dice": metrics.dice(seg, gt), "f1": metrics.f1(seg, gt),
           "pq": metrics.pq(seg, gt), "sbd": metrics.sbd(seg, gt), "dic": metrics.dic(seg, gt)}
    out.update(metrics.voi_arand(seg, gt))  # gt 0 ignored: membrane or background alike
    out["n_true"] = int(np.unique(gt[gt > 0]).size)
    return out


def evaluate_2d(affs: np.ndarray, gt: np.ndarray, offsets, *, background: str = "instance",
                **segment_options) -> dict:
    """Mutex watershed segmentation scored with the 2D measures of the paper and
    the ISBI 2012 challenge's.

    Parameters
    ----------
    affs : ndarray of float, shape (C, Y, X), the channels of ``offsets``
    gt : ndarray of int, shape (Y, X)
    offsets : the 2D offsets (nearest neighbours first)
    background : "instance" or "boundary"
        What label 0 of ``gt`` is. ``"instance"`` (nuclei on a dark background):
        the largest segment is taken as background and label 0 is a region the
        instance measures score. ``"boundary"`` (EM membrane between cells): no
        segment is background, small membrane specks are dissolved into their
        neighbours, and membrane pixels are left out of both sides of every
        score (the segmentation is scored where ``gt > 0``).
    segment_options : go to :func:`segment_2d`.

    Returns
    -------
    dict with the :data:`SCORES_2D` (``n_true``: the cells of ``gt``), ``fragments``
    (the scores of :func:`fragments_2d` alone) and ``segmentation``.
    """
    _check_background(background)
    affs = check_finite(affs, "affs")
    if background == "boundary":
        segment_options = {"largest_is_background": False, **segment_options}
    seg = segment_2d(affs, offsets, **segment_options)
    out = _scores_2d(seg, gt, background)
    out["fragments"] = _scores_2d(fragments_2d(affs), gt, background)
    out["segmentation"] = seg
    return out


def evaluate_2d_many(affs_list, labels_list, offsets, **options) -> dict:
    """:func:`evaluate_2d` over a list of images (BBBC039, CVPPP, ISBI 2012
    sections): the mean of each score, the per-image scores under ``per_image``,
    the fragments' mean scores and the segmentations."""
    results = [evaluate_2d(a, lab, offsets, **options) for a, lab in zip(affs_list, labels_list)]
    out = {k: float(np.mean([r[k] for r in results])) for k in SCORES_2D}
    out["per_image"] = [{k: r[k] for k in SCORES_2D} for r in results]
    out["fragments"] = {k: float(np.mean([r["fragments"][k] for r in results])) for k in SCORES_2D}
    out["segmentation"] = [r["segmentation"] for r in results]
    return out


def reference_scores_2d(labels_list, offsets, *, background: str = "instance", sigma: float = 0.1, seed: int = 0,
                        **segment_options) -> list[dict]:
    """The floors and the ceiling of a 2D score table, mean over the images.

    Rows (each with the :data:`SCORES_2D`):

    - ``one object``: each image one segment;
    - ``every pixel alone``;
    - ``ground-truth targets``: the exact targets of the labels through
      :func:`evaluate_2d` with the same options;
    - ``ground-truth targets + noise (ceiling)``: ``clip(0.9 t + 0.05 + N(0,
      sigma))`` through the same pipeline, what a near-perfect network gives.

    (The fragments-alone floor depends on the prediction: :func:`evaluate_2d`
    returns it under ``fragments``.)
    """
    _check_background(background)
    labels_list = [np.asarray(lab) for lab in (labels_list if isinstance(labels_list, (list, tuple))
                                               else [labels_list])]

    def mean(rows):
        return {k: float(np.mean([r[k] for r in rows])) for k in SCORES_2D}

    table = [dict(name="one object", **mean([_scores_2d(np.ones(g.shape, np.int64), g, background)
                                              for g in labels_list])),
             dict(name="every pixel alone", **mean([_scores_2d(np.arange(1, g.size + 1).reshape(g.shape), g,
                                                               background) for g in labels_list]))]
    instance = background == "instance"
    exact = [affinity.training_targets(g, offsets, widen=False, background_is_instance=instance)[0]
             for g in labels_list]
    noisy = [affinity.noisy_targets(g, offsets, widen=False, background_is_instance=instance, sigma=sigma,
                                    seed=seed + i) for i, g in enumerate(labels_list)]
    for name, affs in (("ground-truth targets", exact), ("ground-truth targets + noise (ceiling)", noisy)):
        scored = evaluate_2d_many(affs, labels_list, offsets, background=background, **segment_options)
        table.append(dict(name=name, **{k: scored[k] for k in SCORES_2D}))
    return table


def affinity_scores(affs, labels, offsets, *, sparse_labels=None, widen: bool | None = None,
                    background: str = "instance") -> dict:
    """Affinity-level scores against the targets of ``labels``: no segmentation,
    no threshold chosen on the ground truth.

    Parameters
    ----------
    affs : ndarray of float, (C, *spatial), or a list of them (the edges of all
        images pooled)
    labels : ndarray of int, spatial shape (or a list); dense ground truth
    offsets : the affinities' offsets
    sparse_labels : ndarray of int (or a list), optional
        The annotation a run was trained with: then only its unlabeled region
        counts (valid edges outside :func:`~affcons_lib.method.affinity.labeled_region_mask`),
        where the cross-consistency loss acts.
    widen : bool, optional
        Targets from labels with widened borders, as 3D training uses (default:
        True for 3D, False for 2D).
    background : "instance" or "boundary"
        2D: what label 0 is (:func:`evaluate_2d`); 3D labels are always boundary.

    Returns
    -------
    dict with ``affinity_error`` (share of edges on the wrong side of 0.5, lower
    is better), ``boundary_ap`` (average precision of finding the cuts, higher is
    better), ``boundary_share`` (the AP of a random ranking) and ``edges``.
    """
    _check_background(background)
    many = isinstance(affs, (list, tuple))
    affs_list, labels_list = (list(affs), list(labels)) if many else ([affs], [labels])
    sparse_list = (list(sparse_labels) if many else [sparse_labels]) if sparse_labels is not None \
        else [None] * len(affs_list)
    preds, targets = [], []
    for a, lab, sparse in zip(affs_list, labels_list, sparse_list):
        lab = np.asarray(lab)
        three_d = lab.ndim == 3
        target, valid, _ = affinity.training_targets(lab, offsets, widen=three_d if widen is None else widen,
                                                     background_is_instance=not three_d and background == "instance")
        if sparse is not None:
            valid = valid & ~affinity.labeled_region_mask(np.asarray(sparse), offsets)
        a = np.asarray(a)
        if a.shape != target.shape:
            raise ValueError(f"affs: expected shape {target.shape} (the {len(offsets)} offsets' channels, then the "
                             f"labels' shape), got {a.shape}")
        # the edges once, for both scores (a test part holds tens of millions)
        preds.append(a[valid])
        targets.append(target[valid])
    pred, target = (np.concatenate(preds), np.concatenate(targets)) if many else (preds[0], targets[0])
    return dict(affinity_error=metrics.affinity_error(pred, target),
                boundary_ap=metrics.boundary_ap(pred, target),
                boundary_share=float(np.mean(target < 0.5)), edges=int(target.size))


def score_prediction(affs, labels, offsets, **options) -> dict:
    """Score a prediction of any of the three kinds the data come in: one volume
    (:func:`evaluate_3d`), one image (:func:`evaluate_2d`) or a list of images
    (:func:`evaluate_2d_many`); ``options`` go to that function."""
    if isinstance(affs, (list, tuple)):
        return evaluate_2d_many(affs, labels, offsets, **options)
    if np.ndim(labels) == 3:
        options.pop("background", None)  # 3D label 0 is always boundary
        return evaluate_3d(affs, labels, offsets=offsets, **options)
    return evaluate_2d(affs, labels, offsets, **options)


def read_prediction(prediction, labels=None):
    """Affinities, ground truth and offsets of a prediction on disk, as lists (one
    entry per image of a collection).

    ``prediction`` is the HDF5 of ``python -m affcons_lib predict`` (``affinities``
    with its ``offsets`` attribute, ``labels``; groups ``image_NNN`` for
    collections) or a zarr array of ``predict --blockwise``. ``labels``
    (``PATH[:KEY]``) gives or replaces the ground truth. Errors name the file and
    what is missing."""
    import h5py

    from ..data import read_array

    p = Path(prediction)
    if not p.exists():
        raise FileNotFoundError(f"prediction file not found: {p}")
    if p.is_dir():  # zarr affinities of predict --blockwise
        from ..data import open_volume

        arr = open_volume(p)
        affs = [np.asarray(arr[...])]
        offsets = [tuple(int(v) for v in o) for o in arr.attrs.get("offsets", affinity.OFFSETS_3D)]
        gt = [None]
    else:
        try:
            f = h5py.File(p, "r")
        except OSError as err:
            raise ValueError(f"{p}: not a readable HDF5 file ({err})") from err
        with f:
            groups = [f[k] for k in sorted(f) if k.startswith("image_")] or [f]
            for g in groups:
                if "affinities" not in g:
                    raise ValueError(f"{p}: no dataset 'affinities' (write it with python -m affcons_lib predict)")
            affs = [g["affinities"][...] for g in groups]
            gt = [g["labels"][...] if "labels" in g else None for g in groups]
            offsets = [tuple(int(v) for v in o) for o in groups[0]["affinities"].attrs["offsets"]]
    if labels is not None:
        if len(affs) > 1:
            raise ValueError(f"--labels {labels}: {p} holds {len(affs)} images; --labels scores one volume or image")
        gt = [read_array(labels, key_word="--labels PATH:KEY")]
    if any(g is None for g in gt):
        raise ValueError(f"{p}: no dataset 'labels'; give the ground truth with --labels PATH[:KEY]")
    for a, g in zip(affs, gt):
        if tuple(a.shape[1:]) != tuple(g.shape):
            raise ValueError(f"{p}: affinities of shape {a.shape[1:]} but labels of shape {g.shape}"
                             + (f" ({labels})" if labels else ""))
    return affs, gt, offsets
