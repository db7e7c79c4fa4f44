"""Sparse instance-level annotation: which complete instances a user labels.

The paper annotates a subset of instances, each one completely; everything else
is *unlabeled* (not background). The release stores such volumes at "levels" whose
meaning is undocumented, so here the amount is explicit: a fraction of the
instances, or a voxel budget. The supplementary's size ablation compares sets of
*small* (below the median size), *random* and *large* (above the median) instances
with comparable annotated voxel counts; a voxel budget gives exactly that.
"""

from __future__ import annotations

import numpy as np

__all__ = ["instance_sizes", "annotate_instances", "check_sparse_annotation", "ANNOTATION_MODES"]

ANNOTATION_MODES = ("random", "small", "large")


def instance_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids (> 0) present in ``labels`` and their voxel counts, sorted by id."""
    labels = np.asarray(labels)
    ids, counts = np.unique(labels[labels != 0], return_counts=True)
    return ids, counts


def annotate_instances(
    labels: np.ndarray,
    mode: str = "random",
    *,
    fraction: float | None = None,
    voxel_budget: float | None = None,
    seed: int = 0,
    min_size: int = 1,
    tolerance: float = 0.05,
) -> np.ndarray:
    """Keep a subset of complete instances; set every other voxel to 0 (unlabeled).

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
        Dense instance labels, 0 = background.
    mode : {'random', 'small', 'large'}
        Candidates: every instance (``random``), those smaller than the median
        instance size (``small``), or those larger (``large``). The median is taken
        over instances of at least ``min_size`` voxels.
    fraction : float in (0, 1], optional
        Annotate ``round(fraction * n)`` instances, n = number of instances of at
        least ``min_size`` voxels (at least one).
    voxel_budget : int or float, optional
        Annotate instances until their voxels reach this budget within
        ``tolerance``: an int >= 1 is a voxel count, a float in (0, 1) a fraction
        of all instance voxels. Instances that would overshoot are skipped, so
        ``small`` / ``random`` / ``large`` sets get comparable voxel counts.
    seed : int
        The choice is a deterministic function of ``labels``, the options and
        ``seed``.
    min_size : int, default 1
        Instances smaller than this are never annotated (tiny fragments make a
        poor annotation and skew the median; see the shared data's README).
    tolerance : float, default 0.05
        Relative tolerance of the voxel budget.

    Returns
    -------
    ndarray, same shape and dtype as ``labels``
        The annotated instances keep their ids; all else is 0.

    Raises
    ------
    ValueError
        Bad arguments, or a request that cannot be met (too few candidates, or no
        subset reaching the voxel budget).
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels: expected an integer label array, got dtype {labels.dtype}")
    if mode not in ANNOTATION_MODES:
        raise ValueError(f"mode: expected one of {ANNOTATION_MODES}, got {mode!r}")
    if (fraction is None) == (voxel_budget is None):
        raise ValueError("give exactly one of fraction= or voxel_budget=")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: expected a value in [0, 1), got {tolerance}")

    ids, sizes = instance_sizes(labels)
    eligible = sizes >= min_size
    ids, sizes = ids[eligible], sizes[eligible]
    if len(ids) == 0:
        raise ValueError(f"labels: no instance of at least min_size={min_size} voxels")
    median = float(np.median(sizes))
    if mode == "small":
        cand = sizes < median
    elif mode == "large":
        cand = sizes > median
    else:
        cand = np.ones(len(ids), dtype=bool)
    cand_ids, cand_sizes = ids[cand], sizes[cand]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cand_ids))

    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
        k = max(1, int(round(fraction * len(ids))))
        if k > len(cand_ids):
            raise ValueError(
                f"fraction={fraction} asks for {k} of {len(ids)} instances, but mode={mode!r} "
                f"has only {len(cand_ids)} candidates (median size {median:g} voxels)"
            )
        chosen = cand_ids[order[:k]]
    else:
        total = int(sizes.sum())
        if isinstance(voxel_budget, (float, np.floating)) and 0 < voxel_budget < 1:
            budget = voxel_budget * total
        elif voxel_budget >= 1:
            budget = float(voxel_budget)
        else:
            raise ValueError(f"voxel_budget: expected a count >= 1 or a fraction in (0, 1), got {voxel_budget}")
        upper = budget * (1 + tolerance)
        picked, got = [], 0
        for i in order:
            if got >= budget * (1 - tolerance):
                break
            if got + cand_sizes[i] <= upper:
                picked.append(i)
                got += int(cand_sizes[i])
        if got < budget * (1 - tolerance):
            raise ValueError(
                f"voxel_budget={voxel_budget}: mode={mode!r} reaches only {got} of {budget:.0f} voxels "
                f"within tolerance {tolerance} ({len(cand_ids)} candidates, median size {median:g}, "
                f"largest candidate {int(cand_sizes.max()) if len(cand_sizes) else 0})"
            )
        chosen = cand_ids[np.asarray(picked, dtype=np.int64)]

    keep = np.isin(labels, chosen)
    return np.where(keep, labels, 0).astype(labels.dtype, copy=False)


def check_sparse_annotation(labels: np.ndarray, where: str, *, min_size: int = 1, border_axes=None) -> np.ndarray:
    """A sparse annotation as a user gives it, checked: non-zero ids are annotated
    instances, each taken as complete; 0 is unlabeled (not background).

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
    where : str
        The file (and key) the labels came from, named in every message.
    min_size : int
        Instances smaller than this are reported (a speck is rarely a whole instance).
    border_axes : sequence of int, optional
        The axes whose ends count as the border (default: all; a stack of 2D
        sections: its in-plane axes (1, 2)).

    Returns
    -------
    The labels, unchanged.

    Raises
    ------
    ValueError
        No annotated instance at all, or labels that are not integers.

    Warns
    -----
    UserWarning
        Instances that touch the array's border (the crop may cut them: an
        incomplete instance teaches cuts that are not there) or are smaller than
        ``min_size``.
    """
    import warnings

    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{where}: expected integer instance ids (0 = unlabeled), got dtype {labels.dtype}")
    ids, sizes = instance_sizes(labels)
    if ids.size == 0:
        raise ValueError(f"{where}: no annotated instance (every label of the {labels.shape} training part is 0); "
                         "a sparse annotation needs at least one complete instance with a non-zero id")
    border = np.zeros(labels.shape, bool)
    for axis in (range(labels.ndim) if border_axes is None else border_axes):
        index = [slice(None)] * labels.ndim
        for end in (0, -1):
            index[axis] = end
            border[tuple(index)] = True
    touching = np.unique(labels[border & (labels != 0)])
    if touching.size:
        warnings.warn(f"{where}: {touching.size} of {ids.size} annotated instances touch the border of the "
                      f"{labels.shape} training part (ids {touching[:5].tolist()}"
                      f"{' ...' if touching.size > 5 else ''}): "
                      "each is taken as complete, so where the crop cut it the network learns a boundary that is "
                      "not there", UserWarning, stacklevel=2)
    small = ids[sizes < min_size]
    if small.size:
        warnings.warn(f"{where}: {small.size} annotated instances are smaller than min_size={min_size} voxels "
                      f"(ids {small[:5].tolist()}{' ...' if small.size > 5 else ''}); they still count as complete",
                      UserWarning, stacklevel=2)
    return labels
