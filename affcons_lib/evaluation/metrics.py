"""Segmentation metrics of the paper: VOI and ARAND (3D EM), SBD and |DiC| (CVPPP),
AJI, Dice, F1 and PQ (BBBC039); and affinity-level scores that need no
segmentation and no threshold chosen on the ground truth: the share of edges on
the wrong side of 0.5 (:func:`affinity_error`) and the average precision of
finding boundary edges (:func:`boundary_ap`).

Every function takes ``(seg, gt)``: a candidate segmentation and the ground truth,
integer arrays of one shape, 0 = background. The EM metrics follow the CREMI
convention: voxels where ``gt == 0`` are ignored, entropies are in bits (log2),
as in CREMI's and scikit-image's code.

All counting goes through one sparse contingency table (pairs of labels that
co-occur), so memory grows with the number of overlapping label pairs, never
with (#seg labels × #gt labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange
from scipy import sparse

from ..segmentation._kernels import EMPTY, grown_with, probe
from ..segmentation._keysort import sort_by_key
from ..segmentation.labels import dense_ids
from ..method.affinity import wrong_side

__all__ = ["Contingency", "contingency", "voi", "arand", "voi_arand", "voi_arand_of", "table_from_cells", "affinity_error",
           "precision_recall", "boundary_ap", "ignore_borders", "sbd", "dic", "aji", "dice", "f1", "pq"]


def _check_pair(seg, gt) -> tuple[np.ndarray, np.ndarray]:
    seg, gt = np.asarray(seg), np.asarray(gt)
    for name, arr in (("seg", seg), ("gt", gt)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise TypeError(f"{name}: expected an integer label array, got dtype {arr.dtype}")
        if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and arr.min() < 0:
            raise ValueError(f"{name}: labels must be non-negative, found {arr.min()}")
    if seg.shape != gt.shape:
        raise ValueError(f"seg and gt must have the same shape, got {seg.shape} and {gt.shape}")
    if seg.size == 0:
        raise ValueError("seg and gt are empty")
    return seg, gt


@dataclass
class Contingency:
    """Sparse contingency table ``table[i, j]`` = number of voxels with
    ``seg == seg_ids[i]`` and ``gt == gt_ids[j]``. Ignored voxels are left out, and
    so are ids that occur only there."""

    table: sparse.csr_array
    seg_ids: np.ndarray
    gt_ids: np.ndarray

    @property
    def n(self) -> float:
        return float(self.table.sum())

    def cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-zero cells as (seg id, gt id, voxel count), one entry each."""
        t = self.table
        rows = np.repeat(np.arange(t.shape[0]), np.diff(t.indptr))
        return self.seg_ids[rows], self.gt_ids[t.indices], t.data.copy()

    def relabeled(self, seg_of: np.ndarray) -> "Contingency":
        """The table of the segmentation that puts every voxel of seg id ``s`` in
        ``seg_of[s]`` (a merge of seg's labels, e.g. fragments into segments):
        counted from the cells, not from the voxels again."""
        s, g, c = self.cells()
        return table_from_cells(np.asarray(seg_of)[s], g, c)


@njit(cache=True, nogil=True)
def _count_pairs(seg, gt, ignore_gt, max_pairs):  # pragma: no cover - compiled
    """The distinct (seg, gt) value pairs of two flat arrays of ids below 2^31 and
    how many voxels hold each, in one pass: the hash table of :mod:`._kernels`
    keyed by ``seg << 32 | gt`` with a count per key (small for EM volumes, which
    have far fewer pairs than voxels), and a shortcut for a voxel whose pair is
    its predecessor's, as most are along a row. Returns ``complete=False`` as soon
    as more than ``max_pairs`` pairs are found: a table that outgrows the caches
    is slower than sorting."""
    keys = np.full(1 << 12, EMPTY, np.int64)
    counts = np.zeros(1 << 12, np.int64)
    size = 0
    last_key, last = np.int64(EMPTY), -1
    for k in range(seg.shape[0]):
        g = np.int64(gt[k])
        skip = False
        for v in ignore_gt:
            skip |= g == v
        if skip:
            continue
        key = (np.int64(seg[k]) << np.int64(32)) | g
        if key == last_key:
            counts[last] += 1
            continue
        i = probe(keys, key)
        if keys[i] == EMPTY:
            keys[i] = key
            size += 1
            if size > max_pairs:
                return keys[:0], np.zeros(0, np.float64), False
            if 2 * size > keys.shape[0]:  # load under one half: probes stay short
                keys, counts = grown_with(keys, counts)
                i = probe(keys, key)
        counts[i] += 1
        last_key, last = key, i
    used = keys != EMPTY
    return keys[used], counts[used].astype(np.float64), True


@njit(cache=True, nogil=True)
def _pair_counts(si, gi, n_seg, n_gt, gt_ignored):  # pragma: no cover - compiled
    """Distinct (seg, gt) index pairs and their counts in O(voxels).

    A counting sort groups voxels by gt index; within each gt group a marker
    array finds each seg index's slot, so no sort and no n_seg x n_gt table."""
    n = si.shape[0]
    start = np.zeros(n_gt + 1, np.int64)
    for k in range(n):
        start[gi[k] + 1] += 1
    for g in range(n_gt):
        start[g + 1] += start[g]
    fill = start[:-1].copy()
    by_gt = np.empty(n, np.int64)
    for k in range(n):
        g = gi[k]
        by_gt[fill[g]] = si[k]
        fill[g] += 1
    mark = np.full(n_seg, -1, np.int64)
    slot = np.zeros(n_seg, np.int64)
    out_s = np.empty(n, np.int64)
    out_g = np.empty(n, np.int64)
    out_c = np.zeros(n, np.float64)
    nnz = 0
    for g in range(n_gt):
        if gt_ignored[g]:
            continue
        for k in range(start[g], start[g + 1]):
            s = by_gt[k]
            if mark[s] != g:
                mark[s] = g
                slot[s] = nnz
                out_s[nnz] = s
                out_g[nnz] = g
                nnz += 1
            out_c[slot[s]] += 1.0
    return out_s[:nnz], out_g[:nnz], out_c[:nnz]


def _flat(labels: np.ndarray) -> np.ndarray:
    flat = labels.ravel()
    return flat.view(np.uint8) if flat.dtype == bool else flat


def _small_ids(labels: np.ndarray) -> bool:
    """Ids in 0 ... 2^31 - 1 (bool included)."""
    return labels.size == 0 or labels.dtype == bool or (int(labels.min()) >= 0 and int(labels.max()) < 1 << 31)


def contingency(seg, gt, *, ignore_gt=(0,), ignore_seg=()) -> Contingency:
    """Sparse contingency table of two label arrays, counted in one pass.

    Parameters
    ----------
    seg, gt : ndarray of int, same shape
    ignore_gt, ignore_seg : sequence of int
        Voxels with these labels in ``gt`` (resp. ``seg``) are left out.

    Returns
    -------
    Contingency
    """
    seg, gt = _check_pair(seg, gt)
    ignore = np.array([int(v) for v in ignore_gt], dtype=np.int64)
    complete = False
    if _small_ids(seg) and _small_ids(gt):  # a pair fits one int64 key
        keys, counts, complete = _count_pairs(_flat(seg), _flat(gt), ignore, max(1 << 16, seg.size >> 6))
    if complete:
        cell_s, cell_g = (keys >> 32).astype(seg.dtype), (keys & 0xFFFFFFFF).astype(gt.dtype)
    else:  # many pairs (noise-like labels): ids to 0..n-1, then a counting sort of the voxels by gt
        seg_ids, si = dense_ids(seg)
        gt_ids, gi = dense_ids(gt)
        gt_ignored = np.isin(gt_ids, ignore.astype(gt_ids.dtype)) if len(ignore) else np.zeros(len(gt_ids), bool)
        rows, cols, counts = _pair_counts(si.ravel(), gi.ravel(), len(seg_ids), len(gt_ids), gt_ignored)
        cell_s, cell_g = seg_ids[rows], gt_ids[cols]
    if len(ignore_seg):
        keep = ~np.isin(cell_s, np.array([int(v) for v in ignore_seg]).astype(cell_s.dtype))
        cell_s, cell_g, counts = cell_s[keep], cell_g[keep], counts[keep]
    # ids seen only on ignored voxels get no row or column
    return table_from_cells(cell_s, cell_g, counts)


def table_from_cells(seg_ids, gt_ids, counts) -> Contingency:
    """The contingency table of cells given as (seg id, gt id, voxel count); a pair
    given more than once (counted block by block, or merged) is summed. The same
    table, entry for entry, as :func:`contingency` of the voxels the cells count."""
    seg_ids, gt_ids = np.asarray(seg_ids), np.asarray(gt_ids)
    counts = np.asarray(counts, np.float64)
    if not (seg_ids.shape == gt_ids.shape == counts.shape) or counts.ndim != 1:
        raise ValueError("seg_ids, gt_ids, counts: expected 1-D arrays of one length")
    seg_unique, rows = dense_ids(seg_ids)
    gt_unique, cols = dense_ids(gt_ids)
    # the sparse constructor sums repeated pairs and sorts each row: one canonical table
    table = sparse.csr_array((counts, (rows.ravel(), cols.ravel())), shape=(len(seg_unique), len(gt_unique)))
    return Contingency(table, seg_unique, gt_unique)


def _xlogx(x: np.ndarray, base: float) -> np.ndarray:
    out = np.zeros_like(x, dtype=np.float64)
    nz = x > 0
    out[nz] = x[nz] * np.log(x[nz]) / np.log(base)
    return out


def _margins(c: Contingency) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of the table's non-zero cells, of each seg id and of each gt id."""
    t = c.table
    running = np.concatenate([[0.0], np.cumsum(t.data)])
    seg_sizes = running[t.indptr[1:]] - running[t.indptr[:-1]]  # rows of the CSR table
    gt_sizes = np.bincount(t.indices, weights=t.data, minlength=t.shape[1])
    return t.data, seg_sizes, gt_sizes


def _voi_from(cells, seg_sizes, gt_sizes, n, base) -> tuple[float, float]:
    h_joint = -_xlogx(cells / n, base).sum()
    split = h_joint + _xlogx(gt_sizes / n, base).sum()   # H(seg, gt) - H(gt)
    merge = h_joint + _xlogx(seg_sizes / n, base).sum()  # H(seg, gt) - H(seg)
    return float(max(split, 0.0)), float(max(merge, 0.0))


def _arand_from(cells, seg_sizes, gt_sizes, n) -> float:
    sum_pij = float(np.dot(cells, cells))
    sum_a = float(np.dot(gt_sizes, gt_sizes))
    sum_b = float(np.dot(seg_sizes, seg_sizes))
    precision = (sum_pij - n) / (sum_b - n) if sum_b > n else 1.0
    recall = (sum_pij - n) / (sum_a - n) if sum_a > n else 1.0
    if precision + recall == 0:
        return 1.0
    return float(1.0 - 2.0 * precision * recall / (precision + recall))


def _counted(seg, gt, ignore_gt, what):
    return _sized(contingency(seg, gt, ignore_gt=ignore_gt), what)


def _sized(c: Contingency, what):
    cells, seg_sizes, gt_sizes = _margins(c)
    n = float(cells.sum())
    if n == 0:
        raise ValueError(f"gt: every voxel is ignored (all labels in ignore_gt), {what} is undefined")
    return cells, seg_sizes, gt_sizes, n


def voi(seg, gt, *, ignore_gt=(0,), base: float = 2.0) -> tuple[float, float]:
    """Variation of information, split and merge parts.

    ``split = H(seg | gt)`` (over-segmentation), ``merge = H(gt | seg)``
    (under-segmentation); VOI = split + merge. Lower is better; 0 is perfect.

    Parameters
    ----------
    seg, gt : ndarray of int, same shape
    ignore_gt : sequence of int, default (0,)
        Ground-truth labels whose voxels are ignored (CREMI convention).
    base : float, default 2
        Logarithm base; 2 gives bits as CREMI and scikit-image report.

    Returns
    -------
    (split, merge) : tuple of float
    """
    cells, seg_sizes, gt_sizes, n = _counted(seg, gt, ignore_gt, "VOI")
    return _voi_from(cells, seg_sizes, gt_sizes, n, base)


def arand(seg, gt, *, ignore_gt=(0,)) -> float:
    """Adapted Rand error (SNEMI3D / CREMI): 1 - F-score of the Rand precision and
    recall over voxel pairs, ignoring voxels where ``gt`` is in ``ignore_gt``.

    Agrees with ``skimage.metrics.adapted_rand_error(gt, seg)[0]``.

    Returns
    -------
    float in [0, 1]; lower is better.
    """
    cells, seg_sizes, gt_sizes, n = _counted(seg, gt, ignore_gt, "ARAND")
    return _arand_from(cells, seg_sizes, gt_sizes, n)


def voi_arand(seg, gt, *, ignore_gt=(0,), base: float = 2.0) -> dict:
    """VOI split / merge and ARAND from one contingency table: one pass over the
    voxels instead of two, for evaluations that report both.

    Returns
    -------
    dict with ``voi_split``, ``voi_merge``, ``voi`` (their sum) and ``arand``;
    each equal to :func:`voi` / :func:`arand`.
    """
    return voi_arand_of(contingency(seg, gt, ignore_gt=ignore_gt), base=base)


def voi_arand_of(table: Contingency, *, base: float = 2.0) -> dict:
    """:func:`voi_arand` of a contingency table already counted (:func:`contingency`,
    :func:`table_from_cells`, :meth:`Contingency.relabeled`)."""
    cells, seg_sizes, gt_sizes, n = _sized(table, "VOI")
    split, merge = _voi_from(cells, seg_sizes, gt_sizes, n, base)
    return dict(voi_split=split, voi_merge=merge, voi=split + merge, arand=_arand_from(cells, seg_sizes, gt_sizes, n))


def ignore_borders(gt, width: int) -> np.ndarray:
    """Ground truth with a band around every label border set to 0 (ignored).

    The CREMI challenge's boundary tolerance (``border_threshold``): a label
    border is where two in-plane 4-neighbours differ (label 0 counts as a
    label); a voxel is ignored when its in-plane distance to the nearest border
    voxel is below ``width`` pixels. ``width=1`` ignores the one-pixel rim on each
    side of each border -- the voxels that border widening
    (:func:`affcons_lib.method.affinity.widen_borders`) turns into boundary in the
    training targets; ``width=0`` ignores nothing.

    Parameters
    ----------
    gt : ndarray of int, shape (Y, X) or (Z, Y, X)
    width : int >= 0, pixels in the section

    Returns
    -------
    ndarray, same shape and dtype as ``gt``.
    """
    from scipy import ndimage

    gt = np.asarray(gt)
    if not np.issubdtype(gt.dtype, np.integer):
        raise TypeError(f"gt: expected an integer label array, got dtype {gt.dtype}")
    if gt.ndim not in (2, 3):
        raise ValueError(f"gt: expected shape (Y, X) or (Z, Y, X), got {gt.shape}")
    if int(width) != width or width < 0:
        raise ValueError(f"width: expected a non-negative integer (pixels), got {width!r}")
    if width == 0:
        return gt.copy()
    sections = gt[None] if gt.ndim == 2 else gt
    out = sections.copy()
    for z, sec in enumerate(sections):
        border = np.zeros(sec.shape, bool)
        for axis in (0, 1):
            differ = np.diff(sec, axis=axis) != 0
            lo = [slice(None)] * 2
            hi = [slice(None)] * 2
            lo[axis], hi[axis] = slice(0, -1), slice(1, None)
            border[tuple(lo)] |= differ
            border[tuple(hi)] |= differ
        if border.any():
            out[z][ndimage.distance_transform_edt(~border) < width] = 0
    return out[0] if gt.ndim == 2 else out


# --------------------------------------------------------------------------- #
# Instance-matching metrics (2D: CVPPP, BBBC039). All use the table of overlaps
# between foreground instances (label 0 excluded on both sides).
# --------------------------------------------------------------------------- #


def _overlaps(seg, gt):
    """Overlap table between foreground instances plus their sizes.

    Returns (table csr (n_seg, n_gt), seg_sizes, gt_sizes) where row/col 0 of the
    contingency (background) has been removed.
    """
    c = contingency(seg, gt, ignore_gt=(), ignore_seg=())
    t = c.table
    seg_sizes = np.asarray(t.sum(axis=1)).ravel()
    gt_sizes = np.asarray(t.sum(axis=0)).ravel()
    rows = np.flatnonzero(c.seg_ids != 0)
    cols = np.flatnonzero(c.gt_ids != 0)
    t = t[rows][:, cols].tocoo()
    return t, seg_sizes[rows], gt_sizes[cols]


def _best_dice(t, sizes_a, sizes_b) -> float:
    """Mean over instances of A of the best Dice with any instance of B (t: A×B)."""
    if len(sizes_a) == 0:
        return 0.0 if len(sizes_b) else 1.0
    best = np.zeros(len(sizes_a))
    if t.nnz:
        d = 2.0 * t.data / (sizes_a[t.row] + sizes_b[t.col])
        np.maximum.at(best, t.row, d)
    return float(best.mean())


def sbd(seg, gt) -> float:
    """Symmetric best Dice (CVPPP): min(BD(seg, gt), BD(gt, seg)), where BD(A, B)
    averages over instances of A the best Dice with an instance of B.
    Background 0 is not an instance. Higher is better, in [0, 1]."""
    t, s_seg, s_gt = _overlaps(seg, gt)
    bd_seg = _best_dice(t, s_seg, s_gt)
    tt = sparse.coo_array((t.data, (t.col, t.row)), shape=(t.shape[1], t.shape[0]))
    bd_gt = _best_dice(tt, s_gt, s_seg)
    return min(bd_seg, bd_gt)


def dic(seg, gt) -> int:
    """|DiC|, the absolute difference in instance count (CVPPP). Label 0 is not an
    instance. Lower is better."""
    seg, gt = _check_pair(seg, gt)
    n_seg = len(np.unique(seg[seg != 0]))
    n_gt = len(np.unique(gt[gt != 0]))
    return abs(n_seg - n_gt)


def dice(seg, gt) -> float:
    """Foreground Dice 2|S∩G| / (|S| + |G|) of the binary masks seg > 0, gt > 0."""
    seg, gt = _check_pair(seg, gt)
    s, g = seg != 0, gt != 0
    total = int(s.sum()) + int(g.sum())
    return 1.0 if total == 0 else float(2.0 * np.logical_and(s, g).sum() / total)


def aji(seg, gt) -> float:
    """Aggregated Jaccard index (Kumar et al. 2017).

    Each ground-truth instance is matched to the predicted instance of highest IoU;
    AJI = Σ|G∩S*| / (Σ|G∪S*| + Σ|unmatched S|). Predicted instances used by no
    ground-truth instance add their area to the denominator. Higher is better.
    """
    t, s_seg, s_gt = _overlaps(seg, gt)
    if len(s_gt) == 0:
        return 1.0 if len(s_seg) == 0 else 0.0
    inter_best = np.zeros(len(s_gt))
    match = np.full(len(s_gt), -1, dtype=np.int64)
    if t.nnz:
        iou = t.data / (s_seg[t.row] + s_gt[t.col] - t.data)
        # Sort by (gt instance, IoU); the last entry of each gt run is its best
        # match (ties: the larger predicted index, deterministically).
        order = np.lexsort((t.row, iou, t.col))
        cols = t.col[order]
        best = order[np.r_[cols[1:] != cols[:-1], True]]
        match[t.col[best]] = t.row[best]
        inter_best[t.col[best]] = t.data[best]
    matched = match >= 0
    union = np.where(matched, s_gt + s_seg[np.maximum(match, 0)] - inter_best, s_gt)
    used = np.zeros(len(s_seg), dtype=bool)
    used[match[matched]] = True
    denom = union.sum() + s_seg[~used].sum()
    return float(inter_best.sum() / denom) if denom else 1.0


def _matches_at(seg, gt, threshold: float = 0.5):
    """One-to-one matches with IoU > threshold (unique for threshold >= 0.5)."""
    t, s_seg, s_gt = _overlaps(seg, gt)
    if t.nnz:
        iou = t.data / (s_seg[t.row] + s_gt[t.col] - t.data)
        hit = iou > threshold
        return iou[hit], len(s_seg), len(s_gt)
    return np.zeros(0), len(s_seg), len(s_gt)


def f1(seg, gt, threshold: float = 0.5) -> float:
    """Instance F1 at an IoU threshold (default 0.5): 2TP / (2TP + FP + FN).
    For thresholds >= 0.5 a match is unique. Higher is better."""
    if threshold < 0.5:
        raise ValueError(f"threshold: must be >= 0.5 for unique matching, got {threshold}")
    ious, n_seg, n_gt = _matches_at(seg, gt, threshold)
    tp = len(ious)
    denom = n_seg + n_gt
    return 1.0 if denom == 0 else float(2.0 * tp / denom)


def pq(seg, gt) -> float:
    """Panoptic quality (Kirillov et al. 2019) of instances at IoU > 0.5:
    Σ IoU(TP) / (TP + FP/2 + FN/2) = segmentation quality × recognition quality."""
    ious, n_seg, n_gt = _matches_at(seg, gt, 0.5)
    tp = len(ious)
    fp, fn = n_seg - tp, n_gt - tp
    denom = tp + 0.5 * fp + 0.5 * fn
    return 1.0 if denom == 0 else float(ious.sum() / denom)


# ------------------------------------------------------------ affinity level
def _edges(pred, target, mask, what: str):
    # float32 affinities stay float32 (exact, and boundary_ap then takes the fast path)
    pred = np.asarray(pred)
    pred = pred if pred.dtype == np.float32 else pred.astype(np.float64)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"{what}: pred shape {pred.shape} does not match target shape {target.shape}")
    if mask is None:
        if pred.size == 0:
            raise ValueError(f"{what}: no edge")
        return pred.ravel(), target.ravel()
    mask = np.asarray(mask)
    if mask.shape != pred.shape:
        raise ValueError(f"{what}: mask shape {mask.shape} does not match pred shape {pred.shape}")
    if not mask.any():
        raise ValueError(f"{what}: the mask selects no edge")
    return pred[mask.astype(bool)], target[mask.astype(bool)]


def affinity_error(pred, target, mask=None) -> float:
    """Share of edges on the wrong side of 0.5: ``pred >= 0.5`` where the target
    says the two pixels are apart, or ``pred < 0.5`` where it says together.

    Parameters
    ----------
    pred : ndarray of float, (C, *spatial), affinities in [0, 1]
    target : ndarray, same shape, 0 / 1 affinity targets
    mask : ndarray of bool, same shape, optional
        The edges that count (e.g. the unlabeled region, or the valid edges).

    Returns
    -------
    float in [0, 1]; lower is better.
    """
    p, t = _edges(pred, target, mask, "affinity_error")
    return float(np.mean(wrong_side(p, t)))


def precision_recall(scores, positives):
    """Precision and recall of flagging the highest-scoring items, at every
    cut-off (ties flagged together), and the average precision: the area under
    the step curve, as scikit-learn's ``average_precision_score`` computes it.

    Parameters
    ----------
    scores : ndarray of float; higher = more likely positive
    positives : ndarray of bool, same size

    Returns
    -------
    precision, recall : ndarray of float, one entry per distinct score
    ap : float
    """
    scores = np.asarray(scores)
    scores = (scores if scores.dtype == np.float32 else scores.astype(np.float64)).ravel()
    positives = np.asarray(positives).ravel().astype(bool)
    if scores.shape != positives.shape:
        raise ValueError(f"scores ({scores.size}) and positives ({positives.size}) differ in size")
    if positives.sum() == 0:
        raise ValueError("positives: none, precision and recall are undefined")
    if not np.isfinite(scores).all():
        raise ValueError("scores: expected finite numbers, got NaN or infinity")
    if scores.dtype == np.float32:
        # affinities and error maps come as float32: their bit patterns as uint32 keys,
        # sorted with the flags packed beside them (_keysort), instead of a comparison
        # sort of the floats (with the pass below, the whole AP many times faster at
        # tens of millions of edges, bench_metrics); same curve, ties included, since
        # only each distinct score's last item is read
        keys, e = sort_by_key(_descending_keys(scores.view(np.uint32)), positives.view(np.uint8))
        # one pass for the running count at each distinct score's last item: the
        # numpy cumsum / diff / nonzero / gather it replaces took twice the sort
        last, tp = _distinct_ends(keys, e)
    else:
        order = np.argsort(-scores, kind="stable")
        s, e = scores[order], positives[order]
        last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # one point per distinct score
        tp = np.cumsum(e, dtype=np.int64)[last]
    # the area term of each step, (recall_k - recall_k-1) * precision_k, in one compiled
    # pass (the numpy diff of a copy took as long as the sort); summed by numpy as before
    ap = float(np.sum(_step_areas(last, tp)))
    return tp / (last + 1), tp / tp[-1], ap


@njit(cache=True)
def _step_areas(last, tp):  # pragma: no cover - compiled
    """(recall_k - recall_(k-1)) * precision_k for each distinct score k, with
    precision_k = tp_k / (last_k + 1) and recall_k = tp_k / tp_(n-1): the same
    float64 operations, value for value, as numpy's on the arrays."""
    n = tp.shape[0]
    out = np.empty(n, np.float64)
    previous = 0.0
    for k in range(n):
        recall = tp[k] / tp[n - 1]
        out[k] = (recall - previous) * (tp[k] / (last[k] + 1))
        previous = recall
    return out


@njit(cache=True, parallel=True)
def _descending_keys(bits):  # pragma: no cover - compiled
    """uint32 keys of float32 scores, given as their bit patterns ``bits``, that
    sort ascending as the scores sort descending. A float's bit pattern orders
    like the float once negatives have all bits flipped and non-negatives their
    sign bit set; -0.0 counts as +0.0."""
    keys = np.empty(bits.shape[0], np.uint32)
    sign = np.uint32(0x80000000)
    for i in prange(bits.shape[0]):
        b = bits[i]
        if b == sign:  # -0.0
            b = np.uint32(0)
        k = ~b if b & sign else b | sign
        keys[i] = ~k
    return keys


@njit(cache=True)
def _distinct_ends(keys, positives):  # pragma: no cover - compiled
    """For sorted ``keys`` and their 0/1 ``positives``: the index of the last
    item of each run of equal keys, and the number of positives up to it."""
    n = keys.shape[0]
    last = np.empty(n, np.int64)
    tp = np.empty(n, np.int64)
    m = 0
    count = 0
    for i in range(n):
        count += positives[i]
        if i == n - 1 or keys[i + 1] != keys[i]:
            last[m] = i
            tp[m] = count
            m += 1
    return last[:m], tp[:m]


def boundary_ap(pred, target, mask=None) -> float:
    """Average precision of ``1 - pred`` for finding the boundary edges
    (``target == 0``): how well the affinities rank cuts above links, with no
    threshold. The share of boundary edges is the score of a random ranking.

    Parameters
    ----------
    pred, target, mask : as in :func:`affinity_error`

    Returns
    -------
    float in (0, 1]; higher is better.
    """
    p, t = _edges(pred, target, mask, "boundary_ap")
    # ranking by -pred is ranking by 1 - pred, and negation keeps float32 exact
    scores = -p if p.dtype == np.float32 else 1.0 - p.astype(np.float64)
    return precision_recall(scores, t < 0.5)[2]
