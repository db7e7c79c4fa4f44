"""Reference runs: the three methods trained longer than a notebook can, kept
small (weights, configs, logs and learning curves) under ``data/reference/``.

    python -m affcons_lib reference [--methods ...] [--set KEY=VALUE ...] [--out DIR]
    make reference

Every method trains from ``data/reference/config.yaml`` (the notebooks' small
scale, longer), scores f(θ2) on the test part every ``val_every`` iterations
(VOI, ARAND and the threshold-free affinity error and boundary AP: the learning
curves), and is exported to ``data/reference/<method>/``:

- ``weights.pt``: the models and config only (no optimiser: a few hundred kB),
  loadable with :func:`affcons_lib.training.checkpoint.load_checkpoint`; for ``crac`` also
  ``snapshot_NNNNNNN.pt`` at ``snapshot_iters`` (a bank for the CPSN);
- ``config.yaml``, ``losses.csv``, ``validation.csv`` and ``summary.json``.

Notebooks 03 and 05 load these weights (``weights="reference"``) to show
entropy and error maps of trained networks in seconds. The full runs write
under ``runs/reference/`` (never committed); only the export is.

The paired reference runs (``make reference-paired``) are notebook 01 itself,
run longer with more seeds; :func:`export_paired` keeps what a reader needs under
``data/reference/paired/``: every run's scores (``scores.csv``), the claims as
:class:`~affcons_lib.evaluation.stats.Claim` records with ``source="reference"`` and the
setting (``claims.json``), and each run's weights and loss log
(``<method>_seed<k>/``). Notebook 01 shows them in seconds
(:func:`paired_results`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import yaml

from ..training import checkpoint
from .._atomic import write_text
from .._paths import CHECKOUT, runs_dir
from ..training.config import METHODS, load_config

__all__ = ["REFERENCE_DIR", "reference_dir", "WEIGHTS_CHOICES", "reference_weights", "use_reference", "export_weights",
           "export_summary", "export_run", "learning_curves", "export_paired", "paired_results", "rescore_paired",
           "INSTRUMENT_RECORD", "noisy_targets", "instrument_table", "export_instrument"]

#: Where the committed reference runs live (beside the package, in the repository).
REFERENCE_DIR = CHECKOUT / "data" / "reference"


def reference_dir() -> Path:
    """``$AFFCONS_REFERENCE_DIR`` if set (your own reference runs; the tests' tiny
    ones), else :data:`REFERENCE_DIR`."""
    env = os.environ.get("AFFCONS_REFERENCE_DIR")
    return Path(env) if env else REFERENCE_DIR


def reference_weights(method: str, root=None) -> Path:
    """The path of a method's reference weights; a clear error naming the
    command that makes them when they are missing."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    path = Path(root or reference_dir()) / method / "weights.pt"
    if not path.is_file():
        raise FileNotFoundError(f"reference weights not found: {path} (make them with `make reference`, "
                                "or give weights='train')")
    return path


#: A notebook's ``weights`` parameter: load the reference run, or train here.
WEIGHTS_CHOICES = ("reference", "train")


def use_reference(weights: str) -> bool:
    """True for ``weights="reference"``, False for ``"train"``; a clear error
    naming the parameter otherwise."""
    if weights not in WEIGHTS_CHOICES:
        raise ValueError(f"weights: expected one of {WEIGHTS_CHOICES}, got {weights!r}")
    return weights == "reference"


def export_weights(ckpt_path, out_path, config_updates=None) -> Path:
    """Copy a training checkpoint without its optimiser and random state: the
    models, the config (with ``config_updates`` applied), the logs and the data
    source (atomically)."""
    ckpt = checkpoint.read_checkpoint(ckpt_path)
    keep = {k: ckpt[k] for k in ("models", "config", "iteration", "log", "val_log", "source") if k in ckpt}
    if config_updates and "config" in keep:
        keep["config"] = {**keep["config"], **config_updates}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save(keep, out_path)
    return out_path


def export_summary(src, dest) -> Path:
    """Copy a run's ``summary.json`` without the paths of the machine that made it
    (``out_dir``, ``checkpoint``), with what made it (commit, versions, CPU): the
    committed summary names ``weights.pt``."""
    from .provenance import provenance

    summary = json.loads(Path(src).read_text())
    summary = {k: v for k, v in summary.items() if k not in ("out_dir", "checkpoint")}
    made = provenance(os.environ.get("OMP_NUM_THREADS"), summary.get("seconds", 0) / 60)
    write_text(Path(dest), json.dumps({"weights": "weights.pt", **summary, "provenance": made}, indent=2) + "\n")
    return Path(dest)


def learning_curves(root=None, methods=METHODS):
    """The reference runs' learning curves in one long table.

    Reads ``<root>/<method>/validation.csv`` (default root :func:`reference_dir`)
    for each method that has one.

    Returns
    -------
    pandas.DataFrame with ``method``, ``iteration`` and the validation columns
    (``val_voi``, ``val_voi_split``, ``val_voi_merge``, ``val_arand``,
    ``val_affinity_error``, ``val_boundary_ap``), sorted by method and iteration.
    A clear error when no method has a curve.
    """
    import pandas as pd

    root = Path(root or reference_dir())
    frames = []
    for method in methods:
        path = root / method / "validation.csv"
        if path.is_file():
            frames.append(pd.read_csv(path).assign(method=method))
    if not frames:
        raise FileNotFoundError(f"no learning curves under {root} (expected <method>/validation.csv; "
                                "make them with `make reference`)")
    table = pd.concat(frames, ignore_index=True)
    return table[["method", *[c for c in table.columns if c != "method"]]].sort_values(
        ["method", "iteration"], ignore_index=True)


def run_reference(method: str, config_path, out_root, overrides=()) -> Path:
    """Train one method from ``config_path`` and export it to ``out_root/method``."""
    from ..training.train import train

    work = runs_dir() / "reference" / method
    cfg = load_config(config_path, [f"method={method}", f"out_dir={work}", *overrides])
    train(cfg)
    return export_run(work, Path(out_root) / method)


def export_run(work, dest) -> Path:
    """Export a finished run in ``work`` (``last.pt``, snapshots, logs, summary) to
    ``dest``: weights without optimiser state and files without the paths of the
    machine that trained it (``out_dir`` becomes ``runs/reference/<method>``,
    where ``make reference`` trains)."""
    work, dest = Path(work), Path(dest)
    cfg = checkpoint.load_checkpoint(work / "last.pt")[1]
    relative = {"out_dir": f"runs/reference/{cfg.method}"}
    cfg = dataclasses.replace(cfg, **relative)
    dest.mkdir(parents=True, exist_ok=True)
    export_weights(work / "last.pt", dest / "weights.pt", relative)
    for snap in sorted(work.glob("snapshot_*.pt")):  # the CPSN's snapshot bank (notebook 05)
        export_weights(snap, dest / snap.name, relative)
    for name in ("losses.csv", "validation.csv"):
        if (work / name).is_file():
            shutil.copyfile(work / name, dest / name)
    if (work / "summary.json").is_file():
        export_summary(work / "summary.json", dest / "summary.json")
    write_text(dest / "config.yaml", yaml.safe_dump(
        {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}, sort_keys=False))
    return dest


def export_paired(work, dest, parameters: dict | None = None) -> Path:
    """Export a notebook 01 run in ``work`` (``AFFCONS_RUNS_DIR`` of that run: its
    ``01_training/<method>_seed<k>/`` checkpoints and ``results/01_training.json``,
    ``results/01_claims.json``) to ``dest`` as the paired reference runs: weights
    without optimiser state, loss logs, ``scores.csv`` and ``claims.json`` (claims
    marked ``source="reference"``, the notebook ``parameters`` beside them), with no
    path of the machine that made them."""
    import pandas as pd

    work, dest = Path(work), Path(dest)
    results = work / "results"
    missing = [p for p in (results / "01_training.json", results / "01_claims.json") if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"not a finished notebook 01 run: {', '.join(map(str, missing))} missing")
    scores = json.loads((results / "01_training.json").read_text())
    claims = json.loads((results / "01_claims.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for row in scores["scores"]:
        name = f"{row['method']}_seed{row['seed']}"
        run = work / "01_training" / name
        export_weights(run / "last.pt", dest / name / "weights.pt", {"out_dir": f"runs/01_training/{name}"})
        shutil.copyfile(run / "losses.csv", dest / name / "losses.csv")
    frame = pd.DataFrame(scores["scores"])
    write_text(dest / "scores.csv", frame.to_csv(index=False))
    from ..evaluation.stats import Claim, claim_summary

    records = [Claim(**{**c, "source": "reference"}) for c in claims["claims"]]
    claims["claims"] = [c.as_record() for c in records]
    # the central line made again from the records, as the notebook made it, not edited as text
    claims["central"] = claim_summary(records, "crac beats sparse_only", beyond=claims.get("beyond_floors"))
    record = {"parameters": parameters or {}, "source_data": scores.get("source"), **claims,
              "reference_scores": scores.get("reference", [])}
    write_text(dest / "claims.json", json.dumps(record, indent=1, default=float) + "\n")
    return dest


def paired_results(root=None):
    """The paired reference runs as notebook 01 shows them.

    Returns
    -------
    (scores, claims, record): a pandas.DataFrame with one row per run (``method``,
    ``seed``, VOI and the affinity-level scores), the list of
    :class:`~affcons_lib.evaluation.stats.Claim` records, and the whole ``claims.json``
    (setting, floors, minutes). A clear error naming the command that makes them
    when they are missing.
    """
    import pandas as pd

    from ..evaluation.stats import Claim

    root = Path(root or reference_dir()) / "paired"
    if not (root / "claims.json").is_file() or not (root / "scores.csv").is_file():
        raise FileNotFoundError(f"no paired reference runs under {root} (make them with `make reference-paired`)")
    record = json.loads((root / "claims.json").read_text())
    return pd.read_csv(root / "scores.csv"), [Claim(**c) for c in record["claims"]], record


VOI_COLUMNS = ("voi", "voi_split", "voi_merge", "arand", "threshold", "fragments_voi")


def rescore_paired(root=None, *, log=print) -> Path:
    """Score the paired reference runs' weights again with the current instrument
    (:func:`affcons_lib.evaluation.evaluate.evaluate_3d` with its default recipe), after the
    instrument changed: the segmentation columns of ``scores.csv`` (the previous
    ones kept as ``previous_*``), the VOI claims, the central line and the floors
    and ceiling of ``claims.json``. The affinity-level scores need no
    segmentation and stay as they were. Each run's data are prepared from the
    config its weights carry (its annotation seed), as notebook 01 prepared them."""
    import pandas as pd

    from ..evaluation.evaluate import evaluate_3d, reference_scores
    from ..training.predict import predict_part
    from ..training.sampling import prepare_data
    from ..evaluation.stats import Claim, claim_summary, paired_claims

    root = Path(root or reference_dir()) / "paired"
    frame, _, record = paired_results(root.parent)
    prepared, rows = {}, []
    for row in frame.to_dict("records"):
        weights = root / f"{row['method']}_seed{row['seed']}" / "weights.pt"
        _, cfg, _ = checkpoint.load_checkpoint(weights)
        if row["seed"] not in prepared:
            prepared[row["seed"]] = prepare_data(cfg)
        pred = predict_part(weights, prepared=prepared[row["seed"]], with_entropy=False)
        s = evaluate_3d(pred.affinities[0], pred.labels[0], offsets=pred.offsets)
        new = dict(voi=s["voi"], voi_split=s["voi_split"], voi_merge=s["voi_merge"], arand=s["arand"],
                   threshold=s["threshold"], fragments_voi=s["fragments"]["voi"])
        log(f"{row['method']} seed {row['seed']}: VOI {row['voi']:.3f} -> {new['voi']:.3f}")
        rows.append({**{k: v for k, v in row.items() if not k.startswith("previous_")},
                     **{f"previous_{k}": row[k] for k in VOI_COLUMNS}, **new})
    claims = [Claim(**c) for c in record["claims"] if c["measure"] != "voi"]
    voi_claims = paired_claims(rows, [("crac", "sparse_only"), ("full_supervision", "sparse_only"),
                                      ("full_supervision", "crac")], ["voi"], source="reference")
    # the order notebook 01 gives: per comparison, VOI first, then the affinity measures
    ordered = []
    for c in voi_claims:
        ordered.append(c)
        ordered += [d for d in claims if d.claim == c.claim]
    record["claims"] = [c.as_record() for c in ordered]
    record["central"] = claim_summary(ordered, "crac beats sparse_only", beyond=record.get("beyond_floors"))
    record["reference_scores"] = reference_scores(next(iter(prepared.values())).labels_test[0])
    record["instrument"] = "evaluate_3d default recipe (rescored by reference.rescore_paired)"
    write_text(root / "scores.csv", pd.DataFrame(rows).to_csv(index=False))
    write_text(root / "claims.json", json.dumps(record, indent=1, default=float) + "\n")
    return root


#: What the 3D instrument gives on inputs whose answer is known (the book's instrument page).
INSTRUMENT_RECORD = REFERENCE_DIR / "instrument.json"


def noisy_targets(gt, widen: bool, seed: int = 0):
    """Ground-truth affinity targets with noise, ``clip(0.9 t + 0.05 + N(0, 0.1))``: what
    a good network might give (borders widened as in training when ``widen``)."""
    import numpy as np

    from ..method import affinity

    labels = affinity.widen_borders(gt) if widen else gt
    targets, _ = affinity.affinities_from_labels(labels, affinity.OFFSETS_3D)
    noise = np.random.default_rng(seed).normal(0, 0.1, targets.shape)
    return np.clip(0.9 * targets + 0.05 + noise, 0, 1).astype(np.float32)


def instrument_table(gt) -> list[dict]:
    """VOI of the 3D instrument on ``gt`` for inputs whose answer is known, by method
    (the recipe, ``waterz``; the 3D mutex watershed): the floors, the ceiling, noisy
    targets with and without widened borders, and every affinity 1 or 0; and the recipe's
    ceiling with every voxel scored (no border tolerance). Rows of
    ``{"input", "method", "voi", "voi_split", "voi_merge", "arand"}``."""
    import numpy as np

    from ..evaluation import evaluate
    from ..method import affinity

    keys = ("voi", "voi_split", "voi_merge", "arand")
    rows = []
    for method in evaluate.METHODS_3D:
        named = {r["name"]: r for r in evaluate.reference_scores(gt, method=method)}
        inputs = {"one object (floor)": named["one object"], "every voxel alone (floor)": named["every voxel alone"],
                  "ground-truth targets, widened borders (ceiling)": named["ground-truth targets (ceiling)"]}
        for widen, name in ((True, "noisy targets, widened borders"), (False, "noisy targets, unwidened labels")):
            inputs[name] = evaluate.evaluate_3d(noisy_targets(gt, widen), gt, method=method)
        for value in (1.0, 0.0):
            affs = np.full((len(affinity.OFFSETS_3D),) + gt.shape, value, np.float32)
            inputs[f"every affinity {value:g}"] = evaluate.evaluate_3d(affs, gt, method=method)
        rows += [dict(input=name, method=method, **{k: float(r[k]) for k in keys}) for name, r in inputs.items()]
    # the recipe's ceiling when every voxel is scored: what the border tolerance is for
    untolerant = next(r for r in evaluate.reference_scores(gt, border_tolerance=0)
                      if r["name"] == "ground-truth targets (ceiling)")
    rows.append(dict(input="ground-truth targets, widened borders, every voxel scored (border tolerance 0)",
                     method="waterz", **{k: float(untolerant[k]) for k in keys}))
    return rows


def export_instrument(volume_path, out=INSTRUMENT_RECORD, test_slices: int = 50) -> Path:
    """Score :func:`instrument_table` on the test part of ``volume_path`` (its last
    ``test_slices`` slices, as the notebooks score) and write it with its provenance and
    the share of labeled voxels the border tolerance ignores."""
    import time

    from ..data import read_cremi
    from ..segmentation.recipe import Recipe
    from .provenance import provenance

    gt = read_cremi(volume_path)[1][-test_slices:]
    start = time.time()
    rows = instrument_table(gt)
    from ..evaluation.metrics import ignore_borders

    tolerance = Recipe().border_tolerance
    labeled = gt > 0
    ignored = float((labeled & (ignore_borders(gt, tolerance) == 0)).sum() / labeled.sum())
    record = {"source": f"{Path(volume_path).name}, last {test_slices} slices {tuple(int(n) for n in gt.shape)}",
              "border_tolerance": tolerance, "ignored_share": ignored, "rows": rows,
              "provenance": provenance(minutes=(time.time() - start) / 60)}
    return write_text(out, json.dumps(record, indent=2) + "\n")
