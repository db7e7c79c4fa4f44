"""Figures: consistent colours for labels, and atomic saving to ``figures/``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, write_json
from .._paths import runs_dir
from ..segmentation.labels import dense_ids

__all__ = ["AFFINITY_CMAP", "ENTROPY_CMAP", "DIFFERENCE_CMAP", "METHOD_FIGURE", "method_figure", "figures_dir", "save_figure", "label_cmap", "show_labels", "matched_labels", "results_dir", "record_results", "show_findings", "paired_plot", "paired_panels", "MEASURE_LABELS", "METHOD_COLOURS", "budget_figure"]


def figures_dir() -> Path:
    """``$AFFCONS_FIGURES_DIR`` if set (``make reproduce`` sets it to the
    repository's ``figures/``), else ``runs/figures``: a one-off run, in
    JupyterLab or papermill, never overwrites the figures of ``make reproduce``."""
    env = os.environ.get("AFFCONS_FIGURES_DIR")
    if env:
        return Path(env)
    return runs_dir() / "figures"


def save_figure(fig, name: str, formats=("png", "pdf"), dpi: int = 110) -> list[Path]:
    """Save ``fig`` as ``figures/NAME.png`` and ``.pdf``, each written to a temporary
    file first and renamed, so an interrupted run never leaves half a figure."""
    out_dir = figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        final = out_dir / f"{name}.{fmt}"
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(final)
    return paths


def label_cmap(n: int = 4096, seed: int = 0):
    """A random colour map for instance ids, label 0 black."""
    from matplotlib.colors import ListedColormap

    colours = np.random.default_rng(seed).uniform(0.15, 1.0, (n, 3))
    colours[0] = 0
    return ListedColormap(colours)


def show_labels(ax, labels: np.ndarray, title: str | None = None, seed: int = 0, id_space=None):
    """Draw a 2D label image with distinct colours per id (0 black).

    ``id_space`` (the ids of several images, e.g. ``np.union1d(a, b)``) gives an id
    the same colour in each image drawn with it; by default colours follow the
    rank of the ids in this image alone."""
    labels = np.asarray(labels)
    ids = np.unique(labels if id_space is None else np.union1d(np.asarray(id_space).ravel(), labels))
    # ids become 0..k-1 with 0 kept at 0 when present, so colours do not depend on id size
    shown = np.searchsorted(ids, labels) + (0 if ids[0] == 0 else 1)
    ax.imshow(shown, cmap=label_cmap(max(int(shown.max()) + 1, 2), seed), interpolation="nearest",
              vmin=0, vmax=max(int(shown.max()), 1))
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def matched_labels(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``labels`` with each segment renamed to the ``reference`` segment it
    matches (each the other's largest overlap), so that drawn with a shared
    ``id_space`` equal segments get equal colours; unmatched segments get new
    ids above the reference's. Background 0 stays 0.

    Parameters
    ----------
    labels, reference : ndarray of int, same shape

    Returns
    -------
    ndarray of int64, the shape of ``labels``.
    """
    labels, reference = np.asarray(labels), np.asarray(reference)
    if labels.shape != reference.shape:
        raise ValueError(f"labels: shape {labels.shape} does not match reference's {reference.shape}")
    ids, inv = dense_ids(labels)
    ref_ids, ref_inv = dense_ids(reference)
    overlap = np.zeros((len(ids), len(ref_ids)), np.int64)
    np.add.at(overlap, (inv.ravel(), ref_inv.ravel()), 1)
    best_ref = overlap.argmax(1)
    best_lab = overlap.argmax(0)
    mutual = best_lab[best_ref] == np.arange(len(ids))
    new_ids = np.where(mutual, ref_ids[best_ref], 0).astype(np.int64)
    unmatched = ~mutual
    new_ids[unmatched] = int(max(ref_ids.max(initial=0), 0)) + 1 + np.arange(int(unmatched.sum()))
    new_ids[ids == 0] = 0
    return new_ids[inv]


def results_dir() -> Path:
    """``$AFFCONS_RESULTS_DIR`` if set, else ``runs/results`` (:func:`runs_dir`)."""
    env = os.environ.get("AFFCONS_RESULTS_DIR")
    if env:
        return Path(env)
    return runs_dir() / "results"


def record_results(name: str, results: dict) -> Path:
    """Write a notebook's key numbers to ``results_dir()/NAME.json`` (atomically),
    so batch runs collect numbers from files rather than from printed text. The
    record also names what made it (``provenance``: commit, date, versions, CPU,
    whether it computes bf16 natively, torch's threads)."""
    import torch

    from .provenance import provenance

    out_dir = results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_json(out_dir / f"{name}.json", {**results, "provenance": provenance(torch.get_num_threads())},
                      default=float)


def show_findings(name: str, lines) -> Path:
    """A notebook's "What this run found": its verdicts in words, one Markdown
    bullet per line, each written by the notebook from the run's own numbers.
    Displayed in the notebook and recorded as ``results_dir()/NAME_findings.json``
    (``{"findings": [...]}``), where ``reproduce --record`` finds them.
    Returns the file written."""
    lines = [str(line).strip() for line in lines]
    if not lines or not all(lines):
        raise ValueError(f"{name}: expected one or more non-empty findings, got {lines!r}")
    try:
        from IPython.display import Markdown, display
        display(Markdown("\n".join(f"- {line}" for line in lines)))
    except ImportError:  # outside Jupyter: plain text
        print("\n".join(f"- {line}" for line in lines))
    return record_results(f"{name}_findings", {"findings": lines})


#: How each reference row of :func:`affcons_lib.evaluation.evaluate.reference_scores` is drawn.
REFERENCE_STYLES = {
    "one object": dict(color="0.35", ls="--"),
    "ground-truth targets (ceiling)": dict(color="tab:purple", ls=":"),  # not a method's colour
}


def mark_references(ax, reference_rows, metric: str = "voi") -> None:
    """Draw a score plot's floor and ceiling as horizontal lines with labels.

    ``reference_rows``: the rows of :func:`affcons_lib.evaluation.evaluate.reference_scores`
    (dicts with ``name`` and ``metric``). The one-object floor and the ceiling
    (ground-truth targets through the same pipeline) are drawn; "every voxel
    alone" (VOI 10-20 bits) would only squash the axis and is left to the table.
    """
    for row in reference_rows:
        style = REFERENCE_STYLES.get(row["name"])
        if style is not None:
            ax.axhline(row[metric], lw=1.2, label=f"{row['name']}: {row[metric]:.2f}", **style)
    ax.legend(fontsize=8, loc="best")


#: One colour map per meaning, across the notebooks: affinities, their entropy, and the
#: difference between two affinity maps (labels use :func:`label_cmap`).
AFFINITY_CMAP = "viridis"
ENTROPY_CMAP = "magma"
DIFFERENCE_CMAP = "cividis"


def show_affinities_and_entropy(fig, top_axes, bottom_axes, affs, entropy, names) -> None:
    """Affinity maps (top row, ``viridis``, [0, 1]) above their entropy (bottom
    row, ``magma``, [0, ln 2] nats), one column per entry of ``names``; ``affs``
    and ``entropy`` are sequences of 2D arrays in the same order."""
    for ax_a, ax_h, a, h, name in zip(top_axes, bottom_axes, affs, entropy, names):
        im = ax_a.imshow(a, cmap=AFFINITY_CMAP, vmin=0, vmax=1)
        ax_a.set_title(f"affinity, {name}")
        fig.colorbar(im, ax=ax_a, fraction=0.046)
        im = ax_h.imshow(h, cmap=ENTROPY_CMAP, vmin=0, vmax=np.log(2))
        ax_h.set_title(f"entropy, {name} (nats)")
        fig.colorbar(im, ax=ax_h, fraction=0.046)


#: Axis labels of the scores notebook 01 compares, with the direction that is better.
MEASURE_LABELS = {
    "voi": "VOI, test part (bits), lower is better",
    "test_error": "affinity error, test part, lower is better",
    "test_ap": "boundary AP, test part, higher is better",
    "unlabeled_error": "affinity error, unlabeled region, lower is better",
    "unlabeled_ap": "boundary AP, unlabeled region, higher is better",
    "aji": "AJI, higher is better",
}


def paired_plot(ax, rows, measure: str, methods, *, floor: float | None = None, floor_label: str = "floor",
                ceiling: float | None = None, ceiling_label: str = "ceiling") -> None:
    """The paired design drawn: one grey line per seed joining its runs across
    ``methods`` (a seed is a training seed and an annotation draw), each method's
    mean as a black bar in front, and the measure's floor (dashed) and ceiling
    (dotted) where given.

    Parameters
    ----------
    ax : matplotlib Axes
    rows : iterable of mappings with ``method``, ``seed`` and ``measure``
    measure : str
    methods : sequence of str, the x order
    floor, ceiling : float, optional
    """
    rows = [r for r in rows if r["method"] in methods]
    seeds = sorted({r["seed"] for r in rows})
    x_of = {m: i for i, m in enumerate(methods)}
    value = {(r["method"], r["seed"]): float(r[measure]) for r in rows}
    for seed in seeds:
        pts = [(x_of[m], value[(m, seed)]) for m in methods if (m, seed) in value]
        ax.plot(*zip(*pts), color="0.6", lw=1, marker="o", ms=4, zorder=2)
    for m in methods:
        vals = [v for (mm, _), v in value.items() if mm == m]
        if vals:
            ax.plot([x_of[m] - 0.18, x_of[m] + 0.18], [np.mean(vals)] * 2, color="k", lw=2.5, zorder=3)
    if floor is not None:
        ax.axhline(floor, color="0.35", ls="--", lw=1.2, label=f"{floor_label}: {floor:.2f}", zorder=1)
    if ceiling is not None:
        ax.axhline(ceiling, color="tab:purple", ls=":", lw=1.4, label=f"{ceiling_label}: {ceiling:.2f}", zorder=1)
    if floor is not None or ceiling is not None:
        ax.legend(fontsize=7, loc="best")
    ax.set_xticks(range(len(methods)), [m.replace("_", " ") for m in methods], fontsize=8)
    ax.set_xlim(-0.4, len(methods) - 0.6)
    ax.set_ylabel(MEASURE_LABELS.get(measure, measure), fontsize=8)


def paired_panels(rows, methods, floors: dict, reference_rows=(), metric: str = "voi"):
    """Notebook 01's score figure: one :func:`paired_plot` per measure, the
    segmentation ``metric`` first (its one-object floor and ground-truth ceiling from
    ``reference_rows`` of :func:`affcons_lib.evaluation.evaluate.reference_scores`), then each
    affinity-level measure of ``floors`` with its trivial answer ("every affinity 1"
    for an error, chance for an AP). Returns the figure."""
    import matplotlib.pyplot as plt

    rows = list(rows)
    shown = [metric] + list(floors)
    fig, axes = plt.subplots(1, len(shown), figsize=(3.3 * len(shown), 3.6), squeeze=False)
    refs = {r["name"]: r[metric] for r in reference_rows}
    ceiling = next((v for name, v in refs.items() if name.endswith("(ceiling)")), None)  # 3D exact, 2D noisy
    for ax, measure in zip(axes[0], shown):
        if measure == metric:
            paired_plot(ax, rows, metric, methods, floor=refs.get("one object"), floor_label="one object",
                        ceiling=ceiling, ceiling_label="ground-truth targets")
        else:
            paired_plot(ax, rows, measure, methods, floor=floors[measure],
                        floor_label="every affinity 1" if measure.endswith("error") else "chance")
    fig.tight_layout()
    return fig


#: One colour per method in every breadth figure.
METHOD_COLOURS = {"sparse_only": "#4c72b0", "crac": "#dd8452", "full_supervision": "#55a868"}


def budget_figure(scores, record, measures=("test_error", "test_ap", "voi")):
    """Each method's score against the annotation budget (mean over the draws, band:
    its 95 % t interval), the floors (dashed) and the ceiling (dotted) where the
    record has them, and in the last panel the share of the gap closed by ``crac``
    with Fieller's interval (:func:`affcons_lib.evaluation.protocol.gap_share`).

    ``scores`` and ``record``: :func:`affcons_lib.companion.breadth.load_breadth` of a budget grid.
    """
    import matplotlib.pyplot as plt
    from scipy.stats import t as student_t

    budgets = [s["voxel_budget"] for s in record["settings"]]
    fig, axes = plt.subplots(1, len(measures) + 1, figsize=(3.6 * (len(measures) + 1), 3.4))
    for ax, measure in zip(axes, measures):
        for method, colour in METHOD_COLOURS.items():
            rows = [scores[(scores.method == method) & ((scores.budget == b) if method != "full_supervision"
                                                        else scores.budget.isna())][measure] for b in budgets]
            means = np.array([r.mean() for r in rows])
            half = np.array([student_t.ppf(0.975, max(1, len(r) - 1)) * r.std(ddof=1) / np.sqrt(len(r)) for r in rows])
            ax.plot(budgets, means, "o-", color=colour, label=method, lw=1.5, ms=4)
            ax.fill_between(budgets, means - half, means + half, color=colour, alpha=0.2, lw=0)
        floors = record["settings"][0].get("floors") or {}
        if measure in floors:
            ax.axhline(floors[measure], color="0.4", ls="--", lw=1, label="floor")
        ref = {r["name"]: r for r in record.get("instrument", [])}
        if measure == "voi" and ref:
            ax.axhline(ref["one object"]["voi"], color="0.4", ls="--", lw=1, label="floor (one object)")
            ceiling = next(r for n, r in ref.items() if "ceiling" in n)
            ax.axhline(ceiling["voi"], color="#8172b3", ls=":", lw=1.5, label="ceiling")
        ax.set_xscale("log")
        ax.set_xticks(budgets, [f"{b:.0%}" for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("annotation budget (share of instance voxels)")
        ax.set_title(MEASURE_LABELS.get(measure, measure), fontsize=9)
    ax = axes[-1]
    for k, measure in enumerate(measures):
        shares = [next((g for g in s["gap_shares"] if g["measure"] == measure), None) for s in record["settings"]]
        x = np.array(budgets) * (1 + 0.06 * (k - 1))  # side by side
        y = np.array([g["share"] for g in shares])
        lo = np.array([g["low"] if np.isfinite(g["low"]) else np.nan for g in shares])
        hi = np.array([g["high"] if np.isfinite(g["high"]) else np.nan for g in shares])
        ax.errorbar(x, y, yerr=[np.where(np.isnan(lo), 0, y - lo), np.where(np.isnan(hi), 0, hi - y)], fmt="o",
                    ms=4, capsize=2, label=measure)
    ax.axhline(0, color="0.4", ls="--", lw=1)
    ax.axhline(1, color="#55a868", ls=":", lw=1)
    ax.set_ylim(-1, 2)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [f"{b:.0%}" for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("annotation budget")
    ax.set_title("share of the gap closed by crac\n(0: sparse_only, 1: full_supervision)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    handles, labels = axes[0].get_legend_handles_labels()
    extra = [(h, lab) for h, lab in zip(*axes[len(measures) - 1].get_legend_handles_labels()) if lab not in labels]
    fig.legend(handles + [h for h, _ in extra], labels + [lab for _, lab in extra], loc="lower center",
               ncol=6, frameon=False, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig



#: Where the method picture lives: drawn by :func:`method_figure`, committed, and
#: regenerated by ``python -m affcons_lib book --method-figure`` (a test compares).
METHOD_FIGURE = Path(__file__).resolve().parents[2] / "figures" / "method.svg"


def method_figure(path=None) -> Path:
    """Draw the method (CRAC) as one picture and write it as SVG to ``path`` (default
    :data:`METHOD_FIGURE`): a patch through both branches, f(θ1)'s affinities and
    f(θ2)'s cosine affinities, the supervised losses on the labeled region M, the entropy
    filter, and the cross targets each branch gives the other on the unlabeled region U.
    The file is byte-for-byte the same on every run (no date, fixed element ids)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    path = Path(path or METHOD_FIGURE)
    colours = {"net": "#dbe9f6", "aff": "#fdebd0", "loss": "#e8f6e3", "filter": "#f5e1f0", "in": "#eeeeee"}
    with plt.rc_context({"svg.hashsalt": "affcons-method", "svg.fonttype": "none", "font.size": 10}):
        fig, ax = plt.subplots(figsize=(9.6, 4.4))
        ax.set_xlim(0, 12)
        ax.set_ylim(0, 5.6)
        ax.axis("off")

        def box(x, y, w, h, text, kind):
            ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                                        fc=colours[kind], ec="#444444", lw=1))
            ax.text(x + w / 2, y + h / 2, text, ha="center", va="center")

        def arrow(a, b, text=None, style="-|>", colour="#333333", rad=0.0, dy=0.12):
            ax.add_patch(FancyArrowPatch(a, b, arrowstyle=style, mutation_scale=12, lw=1.2, color=colour,
                                         connectionstyle=f"arc3,rad={rad}"))
            if text:
                ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + dy, text, ha="center", va="bottom",
                        fontsize=8.5, color=colour)

        box(0.1, 2.3, 1.5, 1.0, "raw patch\n(sparse labels)", "in")
        box(2.2, 3.9, 1.6, 0.9, "f(θ1)\nU-Net", "net")
        box(2.2, 0.8, 1.6, 0.9, "f(θ2)\nU-Net", "net")
        box(4.4, 3.9, 1.9, 0.9, "affinities A1\n(sigmoid)", "aff")
        box(4.4, 0.8, 1.9, 0.9, "embeddings →\ncosine A2", "aff")
        box(7.0, 4.3, 2.3, 0.9, "L_sup(A1) on M", "loss")
        box(7.0, 0.3, 2.3, 0.9, "L_sup(A2) on M", "loss")
        box(7.0, 2.2, 2.3, 1.2, "entropy filter\nmax(H(A1), H(A2))\n< threshold(α_t)", "filter")
        box(10.0, 3.3, 1.9, 0.9, "A2 → target\nof A1 on U", "loss")
        box(10.0, 1.3, 1.9, 0.9, "A1 → target\nof A2 on U", "loss")
        arrow((1.6, 3.0), (2.2, 4.3))
        arrow((1.6, 2.6), (2.2, 1.2))
        arrow((3.8, 4.35), (4.4, 4.35))
        arrow((3.8, 1.25), (4.4, 1.25))
        arrow((6.3, 4.6), (7.0, 4.75), "M", dy=0.08)
        arrow((6.3, 0.95), (7.0, 0.75), "M", dy=-0.32)
        arrow((6.3, 4.1), (7.0, 3.2), "unlabeled U", dy=-0.05)
        arrow((6.3, 1.5), (7.0, 2.4))
        arrow((9.3, 3.0), (10.0, 3.6), "kept edges", dy=0.05)
        arrow((9.3, 2.6), (10.0, 1.9))
        ax.text(5.35, 2.75, "inference:\nf(θ2) alone", ha="center", va="center", fontsize=8.5, color="#555555")
        ax.set_title("CRAC: each branch teaches the other where both are confident", fontsize=11)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(fig)
    return path
