"""The paper's claim at its breadth: paired runs over annotation budgets, in 3D and
2D, and the method's parts one at a time, all under :data:`~affcons_lib.evaluation.protocol.PROTOCOL`.

    python -m affcons_lib reference --breadth GRID [GRID ...] [--workers 2]
    make reference-breadth

The grids are declared in ``data/reference/breadth/config.yaml`` before any run:
each names its data, its annotation budgets (``voxel_budget``: a share of the
instance voxels) or its ablation ``variants`` (config keys that change), and the
base setting (notebook 01's defaults), or the annotation sets it compares
(``annotations``: which complete instances are annotated, supplementary §2). A run is one
(method, budget, variant, draw); draw ``d`` is the training seed and the annotation draw, so runs of one draw
are paired. ``full_supervision`` ignores the annotation, so one run per draw serves
every budget of a data set; runs that two grids share (the ablation's ``crac`` and
``sparse_only`` at its budget) are trained once.

Each run is trained, scored as notebook 01 scores (:func:`~affcons_lib.training.predict.score_run`:
the segmentation score and the four affinity-level measures) and written as one
JSON row (atomically, so an interrupted grid resumes where it stopped); runs go to
``workers`` processes at one thread each. :func:`export` gathers the rows of a grid
into ``data/reference/breadth/<grid>/`` (``scores.csv``, ``claims.json`` with the
protocol's verdicts and gap shares per setting, the run's provenance).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import yaml

from .._atomic import write_json, write_text
from .._paths import CHECKOUT
from .provenance import provenance
from ..training.config import load_config
from ..evaluation.protocol import PROTOCOL, Protocol
from .side_by_side import run_side_by_side

__all__ = ["BREADTH_DIR", "Run", "load_grids", "grid_runs", "run_grid", "instrument", "export",
           "load_breadth", "grid_minutes", "verdict_table", "holds_count", "record_claims", "grid_claims",
           "GRID_KINDS", "readme_block", "readme_headline"]

#: Where the declared grids and their exported records live.
BREADTH_DIR = CHECKOUT / "data" / "reference" / "breadth"
CONFIG = BREADTH_DIR / "config.yaml"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of a grid: its method, annotation budget (None for dense
    labels), ablation variant ("crac" for the method as published), draw, and the
    config keys that make it."""

    data: str  # the data set's tag (its rows are shared between grids)
    method: str
    budget: float | None
    variant: str
    draw: int
    overrides: tuple  # (key, value) pairs of TrainConfig

    @property
    def key(self) -> str:
        budget = "dense" if self.budget is None else f"b{self.budget:g}"
        return f"{self.method}_{budget}_{self.variant}_d{self.draw}"


def load_grids(path=CONFIG) -> dict:
    """The declared grids (``grids``), the base setting (``base``) and the protocol's draws."""
    spec = yaml.safe_load(Path(path).read_text())
    for name, grid in spec["grids"].items():
        if sum(k in grid for k in GRID_KINDS) != 1:
            raise ValueError(f"{path}: grid {name!r}: expected exactly one of {', '.join(GRID_KINDS)}")
    return spec


#: What a grid varies: the annotation budget (every method), the method's parts (crac with
#: keys changed) or which instances are annotated (crac on each annotation set)
GRID_KINDS = ("budgets", "variants", "annotations")


def grid_claims(grid: dict) -> tuple:
    """The claims a grid tests: ``crac`` beats ``sparse_only`` (budgets, variants), or
    the paper's reading of its size ablation, ``random`` beats each other annotation set."""
    if "annotations" in grid:
        return tuple(f"random beats {a}" for a in grid["annotations"] if a != "random")
    return ("crac beats sparse_only",)


def grid_runs(spec: dict, name: str, protocol: Protocol = PROTOCOL) -> list[Run]:
    """Every run of grid ``name``, ordered draw by draw (a grid cut short still has
    complete draws for every setting)."""
    if name not in spec["grids"]:
        raise ValueError(f"grid {name!r}: expected one of {sorted(spec['grids'])}")
    grid = spec["grids"][name]
    base = {**spec["base"], **grid["data"]}
    runs = []
    for draw in protocol.draws:
        seeded = {**base, "seed": draw, "annotation_seed": draw}
        if "budgets" in grid:
            for budget in grid["budgets"]:
                for method in ("sparse_only", "crac"):
                    runs.append(Run(grid["tag"], method, budget, method, draw,
                                    tuple({**seeded, "method": method, "voxel_budget": budget}.items())))
        elif "annotations" in grid:  # crac on each annotation set; no dense run: no gap to share
            for annotation in grid["annotations"]:
                runs.append(Run(grid["tag"], "crac", grid["budget"], annotation, draw,
                                tuple({**seeded, "method": "crac", "voxel_budget": grid["budget"],
                                       "annotation": annotation}.items())))
            continue
        else:
            budget = grid["budget"]
            for method in ("sparse_only", "crac"):
                runs.append(Run(grid["tag"], method, budget, method, draw,
                                tuple({**seeded, "method": method, "voxel_budget": budget}.items())))
            for variant, keys in grid["variants"].items():
                runs.append(Run(grid["tag"], "crac", budget, variant, draw,
                                tuple({**seeded, "method": "crac", "voxel_budget": budget, **keys}.items())))
        # the dense run of the draw (an ablation shares it with the budget grid of its data): the gap's upper end
        runs.append(Run(grid["tag"], "full_supervision", None, "full_supervision", draw,
                        tuple({**seeded, "method": "full_supervision"}.items())))
    return runs


def _overrides(run: Run, work) -> dict:
    """The configuration of ``run``: its keys, its directory under ``work``, and notebook
    01's logging (one checkpoint at the end, about 30 loss lines)."""
    overrides = dict(run.overrides)
    iterations = load_config(None, overrides).iterations
    return {**overrides, "out_dir": str(Path(work) / run.data / "runs" / run.key), "progress": False,
            "checkpoint_every": iterations, "log_every": max(1, iterations // 30)}


def run_grid(spec: dict, name: str, work="runs/breadth", workers: int = 2, log=print) -> tuple[list[dict], int]:
    """Run (or resume) grid ``name``: rows already written are kept, the rest are
    trained and scored side by side (:func:`affcons_lib.companion.side_by_side.run_side_by_side`,
    ``workers`` processes at one thread each), each row written as its run finishes.
    Returns every row of the grid and how many runs this call trained."""
    runs = grid_runs(spec, name)
    rows_dir = Path(work) / spec["grids"][name]["tag"] / "rows"
    todo, seen = [], set()
    for r in runs:
        if r.key not in seen and not (rows_dir / f"{r.key}.json").is_file():
            todo.append(r)
        seen.add(r.key)
    log(f"grid {name}: {len(seen)} runs, {len(seen) - len(todo)} already done, {len(todo)} to train "
        f"({workers} processes at 1 thread)")

    def write_row(i, row):
        r = todo[i]
        row = dict(data=r.data, method=r.method, budget=r.budget, variant=r.variant,
                   **{k: v for k, v in row.items() if k != "checkpoint"})  # a path of this machine: not a record
        rows_dir.mkdir(parents=True, exist_ok=True)
        write_json(rows_dir / f"{r.key}.json", row)

    if todo:
        run_side_by_side([_overrides(r, work) for r in todo], workers=workers, train_crop=(96, 96),
                         names=[r.key for r in todo], log=log, on_row=write_row)
    return [json.loads((rows_dir / f"{r.key}.json").read_text()) for r in runs], len(todo)


def _settings(spec: dict, name: str) -> list[tuple[str, dict]]:
    """(label, {method: (budget, variant)}) of each compared setting of a grid."""
    grid = spec["grids"][name]
    if "budgets" in grid:
        return [(f"{b:g}", {"sparse_only": (b, "sparse_only"), "crac": (b, "crac"),
                            "full_supervision": (None, "full_supervision")}) for b in grid["budgets"]]
    b = grid["budget"]
    if "annotations" in grid:  # one setting; its "methods" are the annotation sets
        return [(f"{b:g}", {a: (b, a) for a in grid["annotations"]})]
    base = {"sparse_only": (b, "sparse_only"), "full_supervision": (None, "full_supervision")}
    return [(v, {**base, "crac": (b, v)}) for v in ("crac", *grid["variants"])]


def instrument(spec: dict, name: str) -> list[dict]:
    """The floors and the ceiling of grid ``name``'s score table, on its test part
    with the same pipeline (:func:`~affcons_lib.evaluation.evaluate.reference_scores` in 3D,
    :func:`~affcons_lib.evaluation.evaluate.reference_scores_2d` in 2D)."""
    from ..evaluation.evaluate import reference_scores, reference_scores_2d
    from ..training.sampling import prepare_data

    cfg = load_config(None, {**spec["base"], **spec["grids"][name]["data"]})
    prepared = prepare_data(cfg)
    if prepared.dim == 3:
        return reference_scores(prepared.labels_test[0])
    return reference_scores_2d(prepared.labels_test, prepared.offsets, background=prepared.background)


def export(spec: dict, name: str, rows: list[dict], dest=None, *, minutes: float | None = None,
           protocol: Protocol = PROTOCOL) -> Path:
    """Write ``scores.csv`` and ``claims.json`` of grid ``name`` under ``dest``
    (default ``data/reference/breadth/<name>``): per setting (a budget or a
    variant), the protocol's claims (``crac`` against ``sparse_only``; with a dense
    run, ``full_supervision`` against both) as Claim records with ``data``, ``dim``,
    ``voxel_budget`` and ``variant``, the gap shares, the floors and the provenance."""
    import pandas as pd

    from ..evaluation import stats

    grid = spec["grids"][name]
    dest = Path(dest) if dest is not None else BREADTH_DIR / name
    by_annotation = "annotations" in grid
    if by_annotation:  # compared: the annotation sets, each trained by crac
        rows = [{**r, "method": r["variant"]} for r in rows]
    by = {(r["method"], r["budget"], r["variant"], int(r["seed"])): r for r in rows}
    claimed = grid_claims(grid)
    settings = []
    for label, chosen in _settings(spec, name):
        picked = [by[(method, *which, d)] for method, which in chosen.items() if which is not None
                  for d in protocol.draws if (method, *which, d) in by]
        comparisons = ([tuple(c.split(" beats ")) for c in claimed] if by_annotation else
                       [c for c in protocol.comparisons if set(c) <= {r["method"] for r in picked}])
        claims = protocol.claims(picked, "reference", comparisons)
        floors = stats.affinity_floors(picked)
        beyond = stats.beyond_floors(picked, floors) if floors else None
        first = next(iter(chosen.values()))
        meta = (dict(data=grid["tag"], dim=grid["data"]["dim"], voxel_budget=first[0], variant="annotation sets")
                if by_annotation else
                dict(data=grid["tag"], dim=grid["data"]["dim"], voxel_budget=chosen["crac"][0],
                     variant=chosen["crac"][1]))
        shares = protocol.gap_shares(picked) if "full_supervision" in {r["method"] for r in picked} else []
        settings.append(dict(setting=label, **meta, claims=[{**c.as_record(), **meta} for c in claims],
                             gap_shares=[g.as_record() for g in shares], floors=floors, beyond_floors=beyond,
                             summary=" ".join(stats.claim_summary(claims, c, beyond=beyond) for c in claimed),
                             means={m: {k: float(pd.DataFrame([r for r in picked if r["method"] == m])[k].mean())
                                        for k in (*protocol.measures, "fragments_voi") if k in picked[0]}
                                    for m in dict.fromkeys(r["method"] for r in picked)}))
    dest.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows).drop(columns=["data"], errors="ignore")
    write_text(dest / "scores.csv", table.to_csv(index=False))
    record = dict(grid=name, declared=grid, base=spec["base"], protocol=protocol.rule(), claims=list(claimed),
                  provenance=provenance(threads=1, minutes=minutes), instrument=instrument(spec, name),
                  settings=settings)
    write_json(dest / "claims.json", record, default=str)
    return dest


AFFINITY_AND_VOI = ("test_error", "test_ap", "unlabeled_error", "unlabeled_ap", "voi")


def verdict_table(record, claim: str = "crac beats sparse_only", measures=AFFINITY_AND_VOI):
    """A grid's verdicts, one row per setting (a budget or a variant): each
    measure's paired difference "mean [low, high] verdict" ("(at the floor)" where
    either method is no better than its floor), and the share of the gap closed on
    the first measure where the record has one. A pandas DataFrame."""
    import math

    import pandas as pd

    a, b = claim.split(" beats ")
    out = []
    for s in record["settings"]:
        row = {"setting": s["setting"]}
        beyond = s.get("beyond_floors") or {}
        for m in measures:
            c = next((c for c in s["claims"] if c["claim"] == claim and c["measure"].lstrip("-") == m), None)
            floor = m in beyond and not {a, b} <= set(beyond[m])
            row[m] = "—" if c is None else (f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] {c['verdict']}"
                                            + (" (at the floor)" if floor else ""))
        g = next((g for g in s.get("gap_shares", []) if g["measure"] == measures[0]), None)
        if g is not None:
            bounded = math.isfinite(g["low"]) and math.isfinite(g["high"])
            row[f"gap closed ({measures[0]})"] = (f"{g['share']:.0%} [{g['low']:.0%}, {g['high']:.0%}]" if bounded
                                                  else f"{g['share']:.0%} (interval unbounded)")
        out.append(row)
    return pd.DataFrame(out)


def holds_count(setting: dict, claim: str = "crac beats sparse_only") -> tuple[int, int]:
    """(measures where ``claim`` holds, affinity-level measures counted) of one
    setting of a grid, or of any record with ``claims`` and ``beyond_floors``: the
    measures on which both methods beat their floor."""
    a, b = claim.split(" beats ")
    beyond = setting.get("beyond_floors") or {}
    counted = [c for c in setting["claims"] if c["claim"] == claim and c["measure"].lstrip("-") in AFFINITY_AND_VOI[:4]
               and {a, b} <= set(beyond.get(c["measure"].lstrip("-"), (a, b)))]
    return sum(c["verdict"] == "holds" for c in counted), len(counted)


README_START = ("<!-- breadth: generated by `python -m affcons_lib book --documents` from "
                "data/reference/breadth; do not edit -->")
README_END = "<!-- breadth: end -->"
GRID_TITLES = {"budgets_3d": "FIB-SEM, 3D: annotation budget", "budgets_2d": "ISBI 2012, 2D: annotation budget",
               "ablation_3d": "FIB-SEM, 3D, 5 %: the method with one part changed",
               "sizes_3d": "FIB-SEM, 3D, 1 %: which instances are annotated (crac on each set)"}


def record_claims(record) -> list:
    """The claims a grid's record tests (records made before grids named them: crac's)."""
    return record.get("claims", ["crac beats sparse_only"])


def readme_block(root=None) -> str:
    """The breadth section of the results page, generated from the exported grids: per grid a
    table of "crac beats sparse_only" per setting, a line of what holds, and where
    the runs ran. Grids not exported yet are named as such."""
    import pandas as pd

    lines = [README_START]
    for name, title in GRID_TITLES.items():
        try:
            _, record = load_breadth(name, root)
        except FileNotFoundError:
            lines += ["", f"**{title}**: not run yet (`make reference-breadth`)."]
            continue
        claims = record_claims(record)
        tables = [verdict_table(record, c) for c in claims]
        if len(claims) > 1:  # one row per setting and claim
            for t, c in zip(tables, claims):
                t["setting"] = t["setting"] + f": {c}"
        table = pd.concat(tables, ignore_index=True)
        p = record["provenance"]
        held = [(s["setting"] + (f" ({c})" if len(claims) > 1 else ""), *holds_count(s, c))
                for c in claims for s in record["settings"]]
        said = "; ".join(f"{label}: {h} of {n}" for label, h, n in held)
        ref = {r["name"]: r for r in record.get("instrument", [])}
        ceiling = next((r for n, r in ref.items() if n.endswith("(ceiling)")), None)
        seen = (f" Instrument: VOI one object {ref['one object']['voi']:.2f}, ceiling {ceiling['voi']:.3f}."
                if ceiling is not None and "one object" in ref else "")
        named = " and ".join("`{}` beats `{}`".format(*c.split(" beats ")) for c in claims)
        lines += ["", f"**{title}** — {named} holds on (affinity-level measures above their "
                      f"floors) {said}.{seen} Ten paired draws per setting; {p['cpu']}, one thread per run, "
                      f"{'bf16' if p['native_bf16'] else 'fp32'}, {p['minutes']:.0f} min for the grid, commit "
                      f"{p['commit'][:8]}.", ""]
        header = list(table.columns)
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    lines += ["", README_END]
    return "\n".join(lines)


HEADLINE_START = ("<!-- breadth headline: generated by `python -m affcons_lib book --documents`; "
                  "do not edit -->")
HEADLINE_END = "<!-- breadth headline: end -->"
SHORT_TITLES = {"budgets_3d": "3D (FIB-SEM), by annotation budget",
                "budgets_2d": "2D (ISBI 2012 EM), by annotation budget",
                "ablation_3d": "the method's parts (3D, 5 %), one changed at a time",
                "sizes_3d": "which instances to annotate (3D, 1 %, crac)"}


def readme_headline(root=None) -> str:
    """The front page's lines on the breadth grids (also on the results page): per grid, on how many
    affinity-level measures above their floors each of its claims ("crac beats sparse_only";
    the size grid's "random beats small / large") holds at each setting over all ten
    draws, its VOI verdict, and the share of the gap closed on the test affinity error."""
    lines = [HEADLINE_START]
    for name, title in SHORT_TITLES.items():
        try:
            _, record = load_breadth(name, root)
        except FileNotFoundError:
            lines.append(f"- **{title}**: not run yet.")
            continue
        parts = []
        claims = record_claims(record)
        for s, claim in ((s, c) for s in record["settings"] for c in claims):
            held, counted = holds_count(s, claim)
            g = next((g for g in s.get("gap_shares", []) if g["measure"] == "test_error"), None)
            share = ""
            if g is not None:
                bounded = math.isfinite(g["low"]) and math.isfinite(g["high"])
                share = (f", gap closed {g['share']:.0%} [{g['low']:.0%}, {g['high']:.0%}]" if bounded
                         else f", gap closed {g['share']:.0%} (unbounded)")
            label = (f"`{claim}`" if len(claims) > 1 else
                     f"{float(s['setting']):.0%}" if "budgets" in name else f"`{s['setting']}`")
            voi = next((c["verdict"] for c in s["claims"] if c["claim"] == claim and c["measure"] == "voi"), None)
            parts.append(f"{label} {held} of {counted}" + (f" (VOI: {voi})" if voi else "") + share)
        lines.append(f"- **{title}**: holds on " + "; ".join(parts) + ".")
    lines.append(HEADLINE_END)
    return "\n".join(lines)


def grid_minutes(name: str, this_call: float, trained: int, root=None) -> float:
    """The wall time a grid took: this call's where it trained runs, else (a
    re-export of rows trained before) the minutes its previous record states."""
    previous = Path(root or BREADTH_DIR) / name / "claims.json"
    if not trained and previous.is_file():
        return float(json.loads(previous.read_text())["provenance"].get("minutes") or this_call)
    return this_call


def load_breadth(name: str, root=None) -> tuple:
    """(scores DataFrame, claims record) of an exported grid, in seconds."""
    import pandas as pd

    folder = Path(root or BREADTH_DIR) / name
    if not (folder / "claims.json").is_file():
        raise FileNotFoundError(f"{folder}: no exported grid {name!r} (make reference-breadth writes it)")
    return pd.read_csv(folder / "scores.csv"), json.loads((folder / "claims.json").read_text())
