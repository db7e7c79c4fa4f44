"""Time to claim: paired runs of sparse_only and crac at one setting, scored at the
affinity level, with the minutes they took and the verdicts they give.

    python benchmarks/time_to_claim.py NAME [--set key=value ...] [--seeds 0,1,2,3,4]
        [--methods sparse_only crac] [--out data/reference/time_to_claim]
    python benchmarks/time_to_claim.py --table                  # the book's time-to-claim table
    python benchmarks/time_to_claim.py --compare A:B [C:D ...]   # setting A against B, paired by method and seed
    python benchmarks/time_to_claim.py --remake [NAME ...] [--workers 2]   # run recorded settings again

Each seed is a training seed and an annotation draw (notebook 01's: random complete
bodies of at least 1000 voxels up to 5 % of the instance voxels, unless --set says
otherwise), the same for every method. Every run is scored as notebook 01 scores it,
without the segmentation: f(θ2)'s affinities of the whole test part (affinity error,
boundary AP) and of the unlabeled region of a 96x96 training crop. The floors are
printed beside the means: on each region the trivial answer "every affinity 1" has
an affinity error equal to the share of cuts, and a random ranking an AP equal to it.

Writes NAME.csv (one row per run) and NAME.json (setting, minutes, floors, claims as
``stats.Claim`` records) under --out, atomically. Minutes are the wall time of this
process, training and scoring, at the thread count it ran with (printed).

``--remake`` runs the settings of the records under --out again (all, or the NAMEs
given) with the keys, seeds and methods each record names, ``--workers`` settings at a
time, each in a process of its own at one thread, longest first (as the records were
made: two processes sharing a 2-core machine); each record is replaced as its setting
finishes, with the provenance of the new run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from affcons_lib.training import sampling, train
from affcons_lib.evaluation import stats
from affcons_lib._atomic import atomic_path, write_json
from affcons_lib.training.checkpoint import set_threads
from affcons_lib.evaluation.evaluate import affinity_scores
from affcons_lib.training.predict import predict_part
from affcons_lib.training.config import load_config
from affcons_lib.training.sampling import prepare_data
from affcons_lib.companion import documents
from affcons_lib.companion.provenance import provenance

#: notebook 01's annotation and scale; --set overrides any key
BASE = dict(dataset="auto", dim=3, voxel_budget=0.05, min_size=1000, iterations=120, progress=False, log_every=10)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", help="the setting's name (its files NAME.csv, NAME.json)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--methods", nargs="+", default=["sparse_only", "crac"])
    ap.add_argument("--out", default="data/reference/time_to_claim")
    ap.add_argument("--runs", default="runs/time_to_claim", help="where the checkpoints go (not committed)")
    ap.add_argument("--train-crop", type=int, nargs=2, default=[96, 96])
    ap.add_argument("--summarize", metavar="CSV", help="no training: summarise the runs of CSV (this script's columns)")
    ap.add_argument("--minutes", type=float, help="with --summarize: the minutes those runs took")
    ap.add_argument("--threads", type=int, default=1, help="with --summarize: the threads those runs had")
    ap.add_argument("--table", action="store_true", help="no training: the book's time-to-claim table of every NAME.json in --out")
    ap.add_argument("--remake", nargs="*", metavar="NAME", help="run the recorded settings again (all without NAMEs)")
    ap.add_argument("--workers", type=int, default=2, help="with --remake: settings at a time")
    ap.add_argument("--compare", nargs="+", metavar="A:B",
                    help="no training: runs of setting A against the same method and seed of setting B (NAME.csv "
                         "under --out), pooled over the pairs A:B given, e.g. bf16 against fp32")
    args = ap.parse_args(argv)
    if args.table:
        print(documents.time_to_claim_table(args.out))
        return
    if args.compare:
        compare(args.out, [pair.split(":") for pair in args.compare])
        return
    if args.remake is not None:
        remake(args.out, args.remake, args.workers, args.runs)
        return
    if not args.name:
        ap.error("give the setting's NAME (or --table / --compare / --remake)")
    if args.summarize:
        rows = pd.read_csv(args.summarize).to_dict("records")
        report(args, rows, sorted({int(r["seed"]) for r in rows}), args.threads, args.minutes)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = [f"{k}={v}" for k, v in BASE.items() if k not in {s.split('=', 1)[0] for s in args.set}] + args.set
    base = load_config(None, overrides)
    threads = set_threads(base.threads)
    t_start = time.time()
    rows = []
    for seed in seeds:
        setting = overrides + [f"annotation_seed={seed}", f"seed={seed}", f"checkpoint_every={base.iterations}"]
        prepared = prepare_data(load_config(None, setting))
        view = sampling.crop_train_part(prepared, tuple(args.train_crop))
        for method in args.methods:
            cfg = load_config(None, setting + [f"method={method}",
                                                     f"out_dir={Path(args.runs) / args.name / f'{method}_seed{seed}'}"])
            summary = train.train(cfg, prepared)
            (affs,), _, (labels,), offsets = predict_part(summary["checkpoint"], "test", prepared=prepared,
                                                          with_entropy=False)
            test = affinity_scores(affs, labels, offsets)
            unlabeled = affinity_scores(predict_part(summary["checkpoint"], "train", prepared=view,
                                                     with_entropy=False).affinities[0],
                                        view.labels_train[0], offsets, sparse_labels=view.sparse_train[0])
            rows.append(dict(method=method, seed=seed, train_seconds=summary["seconds"],
                             test_error=test["affinity_error"], test_ap=test["boundary_ap"],
                             unlabeled_error=unlabeled["affinity_error"], unlabeled_ap=unlabeled["boundary_ap"],
                             test_cut_share=test["boundary_share"], unlabeled_cut_share=unlabeled["boundary_share"]))
            print(", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()),
                  flush=True)
    report(args, rows, seeds, threads, (time.time() - t_start) / 60)


def remake(out, names, workers, runs):
    """Run the settings recorded under ``out`` (``names``, or all) again, ``workers`` at a
    time, each by this script in a process of its own at one thread."""
    import json
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    records = {p.stem: json.loads(p.read_text()) for p in sorted(Path(out).glob("*.json"))}
    unknown = sorted(set(names) - set(records))
    if unknown:
        raise SystemExit(f"--remake: no record {unknown} under {out} (recorded: {', '.join(records)})")
    chosen = sorted((records[n] for n in (names or records)), key=lambda r: -r["minutes"])  # longest first

    def run(rec):
        argv = [sys.executable, __file__, rec["name"], "--seeds", ",".join(map(str, rec["seeds"])),
                "--methods", *rec["methods"], "--out", str(out), "--runs", str(runs)]
        argv += [a for kv in rec["set"] for a in ("--set", kv)]
        t0 = time.time()
        done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        status = "done" if done.returncode == 0 else f"FAILED (exit {done.returncode}): {done.stderr[-2000:]}"
        print(f"{rec['name']}: {status} ({(time.time() - t0) / 60:.1f} min)", flush=True)
        return done.returncode

    print(f"remaking {len(chosen)} settings, {workers} at a time: {', '.join(r['name'] for r in chosen)}", flush=True)
    with ThreadPoolExecutor(workers) as pool:
        failed = sum(code != 0 for code in pool.map(run, chosen))
    if failed:
        raise SystemExit(f"{failed} of {len(chosen)} settings failed")


def compare(out, pairs):
    """Print the paired difference A - B of every affinity-level measure, one pair
    per method and seed present in both settings, pooled over ``pairs``."""
    d = documents.setting_difference(out, pairs)
    print(f"{' + '.join(f'{a} - {b}' for a, b in pairs)}: {d['pairs']} paired runs (method and seed)")
    for measure, difference in d["difference"].items():
        print(f"  {measure}: {difference}")
    print("  training time A / B: " + ", ".join(f"{m} {r:.2f}" for m, r in d["time_ratio"].items()))


def report(args, rows, seeds, threads, minutes):
    """Print and write (NAME.csv, NAME.json) the means, floors and claims of ``rows``."""
    df = pd.DataFrame(rows)
    means = df.groupby("method").mean(numeric_only=True).drop(columns="seed")
    floors = {"test": float(df.test_cut_share.mean()), "unlabeled": float(df.unlabeled_cut_share.mean())}
    beyond = stats.beyond_floors(rows, {f"{region}_{kind}": floors[region] for region in floors
                                        for kind in ("error", "ap")})
    claims = stats.paired_claims(rows, [(a, b) for a, b in (("crac", "sparse_only"), ("full_supervision", "sparse_only"))
                                        if {a, b} <= set(args.methods)], stats.AFFINITY_MEASURES, "train")
    print(f"\n{args.name}: {' '.join(args.set) or 'notebook 01 defaults'}; {len(seeds)} paired seeds, "
          f"{threads} thread{'s' if threads > 1 else ''}, {minutes:.1f} min")
    print(means.round(4).to_string())
    print(f"floors (every affinity 1: error = share of cuts; chance AP = share of cuts): "
          f"test {floors['test']:.3f}, unlabeled region {floors['unlabeled']:.3f} (mean over draws)")
    for c in claims:
        print(c)
    if "crac" in args.methods and "sparse_only" in args.methods:
        print(stats.claim_summary(claims, "crac beats sparse_only", beyond=beyond))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / f"{args.name}.csv") as tmp:
        df.to_csv(tmp, index=False)
    write_json(out / f"{args.name}.json", {
        "name": args.name, "set": args.set, "seeds": seeds, "methods": args.methods, "threads": threads,
        "minutes": minutes, "means": means.to_dict("index"), "floors": floors, "beyond_floors": beyond,
        "claims": [c.as_record() for c in claims], "provenance": provenance(threads, minutes)})


if __name__ == "__main__":
    main()
