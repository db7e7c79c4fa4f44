"""What-if controls for the notebooks: a slider in JupyterLab, one static figure
in batch.

Each control is a plain function that computes what the figure shows (tested like
the rest of the library) and a drawing function of one parameter value.
:func:`slider` connects a drawing function to an ipywidgets slider when a person
is looking (JupyterLab), and otherwise draws once at the parameter's value: under
``make reproduce``, papermill and the tests (``AFFCONS_STATIC=1``, which
:mod:`affcons_lib.companion.reproduce` and the test suite set), batch runs stay
deterministic and their figures stay in the executed notebook.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import numpy as np

__all__ = ["live_widgets", "slider", "entropy_filter", "ErrorByEntropy", "error_by_entropy", "draw_entropy_filter",
           "annotation_at_share", "draw_annotation", "agglomeration_at_thresholds", "draw_threshold"]


def live_widgets() -> bool:
    """True when sliders should be live: ipywidgets importable and
    ``AFFCONS_STATIC`` unset."""
    if os.environ.get("AFFCONS_STATIC"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def slider(draw: Callable, name: str, values: Sequence, value, *, live: bool | None = None,
           description: str | None = None):
    """Call ``draw(**{name: v})`` for ``v`` chosen on a slider over ``values``
    (live), or once for ``value`` (static). Returns the widget (live) or what
    ``draw`` returned (static).

    ``value`` must be one of ``values``: the static figure is one a reader could
    also reach with the slider."""
    values = list(values)
    if value not in values:
        raise ValueError(f"{name}: {value!r} is not among the slider's values {values}")
    live = live_widgets() if live is None else live
    if not live:
        return draw(**{name: value})
    import ipywidgets

    control = ipywidgets.SelectionSlider(options=values, value=value, description=description or name,
                                         continuous_update=False)
    return ipywidgets.interactive(draw, **{name: control})


# ------------------------------------------------------------ entropy filter
def entropy_filter(affs: np.ndarray, entropy: np.ndarray, target: np.ndarray, valid: np.ndarray,
                   alpha: float) -> dict:
    """The consistency loss's entropy filter at drop share ``alpha``, applied to a
    prediction whose targets are known: which edges it keeps, and how often the
    kept and the dropped ones are wrong.

    Uses the training code's own filter (:func:`affcons_lib.method.losses.confident_mask`:
    per channel, the top ``alpha`` share of entropies inside ``valid`` is dropped).

    Parameters
    ----------
    affs, entropy, target : ndarray of float, (C, *spatial)
    valid : ndarray of bool, (C, *spatial); the edges that count
    alpha : float in [0, 1)

    Returns
    -------
    dict with ``kept`` (bool, the shape of ``affs``), ``kept_share``,
    ``error_kept`` and ``error_dropped`` (share of wrong edges; NaN when empty).
    """
    import torch

    from ..method.affinity import wrong_side
    from ..method.losses import confident_mask

    affs, entropy, target, valid = (np.asarray(a) for a in (affs, entropy, target, valid))
    for name, a in (("entropy", entropy), ("target", target), ("valid", valid)):
        if a.shape != affs.shape:
            raise ValueError(f"{name}: shape {a.shape} does not match affs' {affs.shape}")
    valid = valid.astype(bool)
    kept = confident_mask(torch.from_numpy(np.ascontiguousarray(entropy, np.float32))[None],
                          torch.from_numpy(valid)[None], float(alpha))[0].numpy()
    wrong = wrong_side(affs, target)
    dropped = valid & ~kept

    def rate(m):
        return float(wrong[m].mean()) if m.any() else float("nan")

    return dict(kept=kept, kept_share=float(kept.sum() / max(valid.sum(), 1)), error_kept=rate(kept),
                error_dropped=rate(dropped))


@dataclasses.dataclass
class ErrorByEntropy:
    """How often affinities are wrong, by their entropy (:func:`error_by_entropy`).

    Attributes
    ----------
    bins : ndarray (n_bins + 1,), the entropy bin edges in nats, 0 to ln 2
    rate : ndarray (n_bins,), the share of wrong edges per bin (NaN where empty)
    share : ndarray (n_bins,), the share of all edges per bin
    error : float, the share of wrong edges overall
    low, high : float, the share of wrong edges among the lower half of the
        entropies and among the top 10 %
    """

    bins: np.ndarray
    rate: np.ndarray
    share: np.ndarray
    error: float
    low: float
    high: float


def error_by_entropy(affs: np.ndarray, entropy: np.ndarray, target: np.ndarray, valid: np.ndarray,
                     n_bins: int = 10) -> ErrorByEntropy:
    """Is high entropy where the mistakes are? The known edges (``valid``) binned
    by their entropy, each bin's share of edges on the wrong side of 0.5
    (:func:`affcons_lib.method.affinity.wrong_side`). All arrays (C, *spatial)."""
    from ..method.affinity import wrong_side

    valid = np.asarray(valid, bool)
    wrong = wrong_side(np.asarray(affs), np.asarray(target))[valid]
    h = np.asarray(entropy)[valid]
    bins = np.linspace(0, np.log(2), n_bins + 1)
    idx = np.clip(np.digitize(h, bins) - 1, 0, n_bins - 1)
    rate = np.array([wrong[idx == b].mean() if (idx == b).any() else np.nan for b in range(n_bins)])
    share = np.array([(idx == b).mean() for b in range(n_bins)])
    low, high = wrong[h < np.quantile(h, 0.5)].mean(), wrong[h >= np.quantile(h, 0.9)].mean()
    return ErrorByEntropy(bins, rate, share, float(wrong.mean()), float(low), float(high))


def draw_entropy_filter(affs, entropy, target, valid, alpha, channel=0, z=None, fig=None):
    """Figure of :func:`entropy_filter` on one channel (and slice ``z`` of a
    volume): the entropy, the edges the filter drops, and where the prediction
    is wrong; the title gives the error rates of kept and dropped edges."""
    import matplotlib.pyplot as plt

    from .viz import ENTROPY_CMAP

    out = entropy_filter(affs, entropy, target, valid, alpha)
    pick = (lambda a: a[channel] if np.ndim(a) == 3 else a[channel, z if z is not None else a.shape[1] // 2])
    if fig is None:
        fig = plt.figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    axes[0].imshow(pick(entropy), cmap=ENTROPY_CMAP, vmin=0, vmax=np.log(2))
    axes[0].set_title("entropy (nats)")
    axes[1].imshow(pick(valid) & ~pick(out["kept"]), cmap="gray_r", vmin=0, vmax=1)
    axes[1].set_title(f"dropped by the filter (α = {alpha:g})")
    axes[2].imshow(pick(valid) & ((pick(affs) >= 0.5) != (pick(target) >= 0.5)), cmap="Reds", vmin=0, vmax=1)
    axes[2].set_title("wrong edges")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"kept {out['kept_share']:.1%} of the edges; wrong among kept {out['error_kept']:.1%}, "
                 f"among dropped {out['error_dropped']:.1%}")
    return fig, out


# ------------------------------------------------------------ annotation share
def annotation_at_share(labels: np.ndarray, offsets, mode: str, share: float, seed: int = 0,
                        min_size: int = 1) -> dict:
    """Annotate ``share`` of the instances of ``labels`` in ``mode`` (random /
    small / large, :func:`affcons_lib.data.annotate_instances`) and return the
    sparse labels, the labeled region M of each affinity channel and the voxel
    budget they amount to.

    Returns
    -------
    dict with ``sparse`` (labels of the annotated instances, 0 elsewhere),
    ``region`` (bool, (C, *spatial)), ``instances``, ``voxel_share`` (annotated
    voxels / instance voxels) and ``edge_share`` (labeled edges / all edges).
    """
    from ..method import affinity
    from .. import data

    labels = np.asarray(labels)
    sparse = data.annotate_instances(labels, mode, fraction=share, min_size=min_size, seed=seed)
    region = affinity.labeled_region_mask(sparse, offsets)
    return dict(sparse=sparse, region=region, instances=int(len(np.unique(sparse[sparse > 0]))),
                voxel_share=float((sparse > 0).sum() / max((labels > 0).sum(), 1)),
                edge_share=float(region.mean()))


def draw_annotation(labels, offsets, mode, share, seed=0, min_size=1, z=None, channels=(0, 1, 2), fig=None):
    """Figure of :func:`annotation_at_share`: the annotated instances on a slice
    and the labeled region M of the first channels; the title gives the budget."""
    import matplotlib.pyplot as plt

    from .viz import show_labels

    out = annotation_at_share(labels, offsets, mode, share, seed=seed, min_size=min_size)
    z = labels.shape[0] // 2 if z is None else z
    if fig is None:
        fig = plt.figure(figsize=(4 * (1 + len(channels)), 4))
    axes = fig.subplots(1, 1 + len(channels))
    show_labels(axes[0], out["sparse"][z], "annotated instances")
    for ax, c in zip(axes[1:], channels):
        ax.imshow(out["region"][c, z], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"labeled region M, offset {tuple(int(v) for v in offsets[c])}")
        ax.set_axis_off()
    fig.suptitle(f"{mode}, {share:.0%} of instances: {out['instances']} instances, "
                 f"{out['voxel_share']:.1%} of instance voxels, {out['edge_share']:.1%} of edges labeled")
    return fig, out


# ------------------------------------------------------------ agglomeration threshold
def agglomeration_at_thresholds(affs: np.ndarray, gt: np.ndarray, thresholds=None, *, recipe=None,
                                fragment_mode: str | None = None, border_tolerance: int | None = None) -> dict:
    """The recipe's agglomeration of 3D affinities at every threshold (one pass:
    one merge history gives every threshold), each segmentation scored
    against ``gt`` as :func:`affcons_lib.evaluation.evaluate.evaluate_3d` scores it.

    Computed once, so that a threshold slider only looks results up.

    Parameters
    ----------
    affs : ndarray of float, (C >= 3, Z, Y, X), values in [0, 1]
    gt : ndarray of int, (Z, Y, X); 0 is ignored
    thresholds : increasing floats in [0, 1]; default the recipe's sweep
    recipe : :class:`~affcons_lib.segmentation.recipe.Recipe` (default ``Recipe()``), the
        one :func:`~affcons_lib.evaluation.evaluate.evaluate_3d` and blockwise segmentation run
    fragment_mode, border_tolerance : replace the recipe's

    Returns
    -------
    dict with ``thresholds`` (list of float), ``segmentations`` (list of uint64
    arrays, (Z, Y, X)), ``voi_split``, ``voi_merge``, ``n_segments`` (lists, one
    per threshold) and ``best`` (the threshold of lowest VOI: an oracle choice).
    """
    from ..evaluation import metrics
    from ..evaluation.evaluate import recipe_sweep
    from ..segmentation.recipe import Recipe

    affs, gt = np.asarray(affs), np.asarray(gt)
    if affs.ndim != 4 or affs.shape[1:] != gt.shape:
        raise ValueError(f"affs: expected shape (C, *gt.shape) = (C, {', '.join(map(str, gt.shape))}), "
                         f"got {affs.shape}")
    recipe = (recipe or Recipe()).replace(thresholds=thresholds, mode=fragment_mode,
                                          border_tolerance=border_tolerance)
    thresholds = list(recipe.thresholds)
    # the evaluation's own sweep (same fragments, scoring and border tolerance), keeping every segmentation
    sweep = recipe_sweep(affs, metrics.ignore_borders(gt, recipe.border_tolerance), recipe, keep_all=True)
    return dict(thresholds=thresholds, segmentations=sweep.segmentations, voi_split=sweep.voi_split,
                voi_merge=sweep.voi_merge, n_segments=[int(len(np.unique(s))) for s in sweep.segmentations],
                best=sweep.best_threshold)


def draw_threshold(sweep: dict, threshold: float, raw=None, z=None, fig=None):
    """Figure of one threshold of :func:`agglomeration_at_thresholds`: the
    segmentation on slice ``z`` (beside ``raw`` when given) and the split / merge
    trade-off over all thresholds with this one marked."""
    import matplotlib.pyplot as plt

    from .viz import show_labels

    if threshold not in sweep["thresholds"]:
        raise ValueError(f"threshold: {threshold!r} is not among the sweep's {sweep['thresholds']}")
    i = sweep["thresholds"].index(threshold)
    seg = sweep["segmentations"][i]
    z = seg.shape[0] // 2 if z is None else z
    if fig is None:
        fig = plt.figure(figsize=(4 * (3 if raw is not None else 2), 4))
    axes = fig.subplots(1, 3 if raw is not None else 2)
    if raw is not None:
        axes[0].imshow(np.asarray(raw)[z], cmap="gray")
        axes[0].set_title("raw")
        axes[0].set_axis_off()
    show_labels(axes[-2], seg[z], f"threshold {threshold:g}: {sweep['n_segments'][i]} segments")
    ax = axes[-1]
    ax.plot(sweep["thresholds"], sweep["voi_split"], "o-", label="split (over-segmentation)")
    ax.plot(sweep["thresholds"], sweep["voi_merge"], "s-", label="merge (under-segmentation)")
    ax.axvline(threshold, color="k", lw=1)
    ax.set_xlabel("agglomeration threshold (higher merges more)")
    ax.set_ylabel("VOI (bits)")
    ax.legend(fontsize=8)
    fig.suptitle(f"threshold {threshold:g}: VOI split {sweep['voi_split'][i]:.3f} + merge "
                 f"{sweep['voi_merge'][i]:.3f} = {sweep['voi_split'][i] + sweep['voi_merge'][i]:.3f} "
                 f"(lowest at {sweep['best']:g})")
    return fig, dict(index=i, voi_split=sweep["voi_split"][i], voi_merge=sweep["voi_merge"][i])
