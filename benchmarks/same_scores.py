"""Same scores? Two records of notebook 01's runs, paired by method and seed.

    python benchmarks/same_scores.py OLD NEW [--measures test_error test_ap ...]

OLD and NEW are ``01_training.json`` records (``data/reproduce/``, or any commit's copy:
``git show REV:data/reproduce/01_training.json > old.json``) or a breadth grid's
``scores.csv`` (its rows at NEW's ``voxel_budget``). For each measure it prints the
mean of NEW − OLD over the runs both hold, the 95 % paired Student-t interval, the
largest single difference, and whether the interval contains 0 and lies within
±TOLERANCE: how a change of arithmetic or scheduling that should not move the scores
is checked (a change of thread count reorders floating-point sums, nothing more).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from affcons_lib.evaluation import stats

MEASURES = ("test_error", "test_ap", "unlabeled_error", "unlabeled_ap", "voi")


def load(path: str, budget: float | None = None) -> pd.DataFrame:
    p = Path(path)
    if p.suffix == ".csv":
        rows = pd.read_csv(p)
        if budget is not None and "budget" in rows:
            rows = rows[(rows.budget == budget) | rows.budget.isna()]
        return rows
    record = json.loads(p.read_text())
    if "scores" not in record:
        raise SystemExit(f"{p}: no 'scores' (expected notebook 01's 01_training.json)")
    return pd.DataFrame(record["scores"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--measures", nargs="+", default=list(MEASURES))
    ap.add_argument("--tolerance", type=float, default=0.005)
    args = ap.parse_args(argv)
    new = load(args.new)
    budget = json.loads(Path(args.new).read_text()).get("voxel_budget") if args.new.endswith(".json") else None
    old = load(args.old, budget)
    pairs = new.merge(old, on=["method", "seed"], suffixes=("_new", "_old"))
    print(f"{len(pairs)} runs paired by method and seed ({args.new} against {args.old})")
    for m in args.measures:
        if f"{m}_new" not in pairs:
            continue
        d = (pairs[f"{m}_new"] - pairs[f"{m}_old"]).to_numpy()
        diff = stats.paired_difference(pairs[f"{m}_new"].to_numpy(), pairs[f"{m}_old"].to_numpy())
        mean, low, high = diff.mean, diff.low, diff.high
        ok = low <= 0 <= high and -args.tolerance <= low and high <= args.tolerance
        print(f"{m:16s} new - old {mean:+.4f} [{low:+.4f}, {high:+.4f}], largest |difference| {abs(d).max():.4f}, "
              f"identical runs {int((d == 0).sum())} of {len(d)}: "
              f"{'same' if ok else 'not shown the same'} (0 inside, within ±{args.tolerance})")


if __name__ == "__main__":
    main()
