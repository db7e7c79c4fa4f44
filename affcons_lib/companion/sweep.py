"""Run one notebook over a grid of parameters and collect its numbers.

    python -m affcons_lib sweep PARAMS.yaml

PARAMS.yaml::

    notebook: notebooks/01_training.ipynb
    out: runs/sweep_sparsity          # executed notebooks, results, table and figure
    fixed:    {iterations: 100, seeds: [0]}
    grid:     {sparsity: [0.05, 0.1, 0.2], annotation_seed: [0, 1]}
    metric:   voi                     # column plotted against the first grid key (optional)

Each combination runs with papermill into ``out/run_NNN.ipynb``; the notebook records
its numbers with :func:`affcons_lib.companion.viz.record_results` into ``out/run_NNN/``
(``AFFCONS_RESULTS_DIR``), and the sweep gathers every recorded row, with the
combination's parameters, into ``out/results.csv`` and plots ``metric``.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

from .._atomic import atomic_path


def _rows(result: dict) -> list[dict]:
    """Flatten a recorded result: lists of records become rows, scalars columns."""
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    tables = [v for v in result.values() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
    if not tables:
        return [scalars]
    return [{**scalars, **row} for table in tables for row in table]


def run_sweep(spec: dict, *, kernel: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import papermill as pm

    from .reproduce import declared_parameters

    for key in ("notebook", "grid"):
        if key not in spec:
            raise ValueError(f"sweep file: missing '{key}'")
    nb = Path(spec["notebook"])
    if not nb.is_file():
        raise FileNotFoundError(f"notebook not found: {nb}")
    grid, fixed = dict(spec["grid"]), dict(spec.get("fixed") or {})
    declared = declared_parameters(nb)
    unknown = sorted((set(grid) | set(fixed)) - declared)
    if unknown:
        raise ValueError(f"{nb.name} does not declare parameter(s) {unknown}; it declares {sorted(declared)}")
    out = Path(spec.get("out", f"runs/sweep_{nb.stem}"))
    out.mkdir(parents=True, exist_ok=True)
    keys = list(grid)
    rows = []
    for i, values in enumerate(itertools.product(*(grid[k] for k in keys))):
        params = {**fixed, **dict(zip(keys, values))}
        run_dir = out / f"run_{i:03d}"
        os.environ["AFFCONS_RESULTS_DIR"] = str(run_dir.resolve())
        os.environ.setdefault("AFFCONS_FIGURES_DIR", str((run_dir / "figures").resolve()))
        print(f"[{i + 1}] {nb.name} {params}", flush=True)
        pm.execute_notebook(str(nb), str(out / f"run_{i:03d}.ipynb"), parameters=params, cwd=str(nb.parent),
                            kernel_name=kernel, progress_bar=False)
        os.environ.pop("AFFCONS_FIGURES_DIR", None)
        for f in sorted(run_dir.glob("*.json")):
            for row in _rows(json.loads(f.read_text())):
                rows.append({"run": i, **dict(zip(keys, values)), **row})
    table = pd.DataFrame(rows)
    with atomic_path(out / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    metric = spec.get("metric")
    if metric and metric in table and keys:
        x = keys[0]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        hue = "method" if "method" in table else None
        for name, group in (table.groupby(hue) if hue else [(metric, table)]):
            g = group.groupby(x)[metric]
            ax.errorbar(g.mean().index, g.mean().values, yerr=g.std().fillna(0).values, marker="o", capsize=3,
                        label=str(name))
        ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.set_title(f"{nb.stem}: {metric} against {x} (mean ± sd)")
        ax.legend()
        fig.savefig(out / f"{metric}_vs_{x}.png", dpi=150, bbox_inches="tight")
    print(out / "results.csv")
    return out / "results.csv"
