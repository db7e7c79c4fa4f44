"""Scores of predicted affinities against ground truth, as the paper reports them.

3D: waterz agglomeration over a threshold sweep, VOI split/merge and ARAND at the
best threshold (chosen on the ground truth, as in the paper: say so).
2D: mutex watershed, then AJI, Dice, F1, PQ (BBBC039) and SBD, |DiC| (CVPPP).

    python -m affcons_lib.evaluate PRED.h5 [--thresholds 0.1 0.2 ...] [--json OUT]

PRED.h5 is what ``python -m affcons_lib.predict`` writes (affinities, offsets and
the ground-truth labels of the predicted part).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from . import metrics, postprocess

__all__ = ["evaluate_3d", "evaluate_2d", "evaluate_2d_many", "segment_2d", "main"]

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.1))


def evaluate_3d(affs: np.ndarray, gt: np.ndarray, thresholds=THRESHOLDS) -> dict:
    """waterz sweep; returns the best threshold's VOI split/merge/total, ARAND,
    the threshold, the per-threshold rows and the best segmentation."""
    sweep = postprocess.sweep_thresholds(affs, gt, thresholds)
    best = sweep.as_rows()[sweep.best_index]
    return {**best, "rows": sweep.as_rows(), "segmentation": sweep.best_segmentation}


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


def evaluate_2d(affs: np.ndarray, gt: np.ndarray, offsets, **segment_options) -> dict:
    """Mutex watershed segmentation scored with the 2D metrics of the paper."""
    seg = segment_2d(affs, offsets, **segment_options)
    return {"aji": metrics.aji(seg, gt), "dice": metrics.dice(seg, gt), "f1": metrics.f1(seg, gt),
            "pq": metrics.pq(seg, gt), "sbd": metrics.sbd(seg, gt), "dic": metrics.dic(seg, gt),
            "segmentation": seg}


def evaluate_2d_many(affs_list, labels_list, offsets, **segment_options) -> dict:
    """:func:`evaluate_2d` over a list of images (BBBC039, CVPPP): the mean of each
    score, the per-image scores under ``per_image`` and the segmentations."""
    results = [evaluate_2d(a, lab, offsets, **segment_options) for a, lab in zip(affs_list, labels_list)]
    keys = ("aji", "dice", "f1", "pq", "sbd", "dic")
    out = {k: float(np.mean([r[k] for r in results])) for k in keys}
    out["per_image"] = [{k: r[k] for k in keys} for r in results]
    out["segmentation"] = [r["segmentation"] for r in results]
    return out


def main(argv=None) -> int:
    import h5py

    ap = argparse.ArgumentParser(prog="python -m affcons_lib.evaluate", description=__doc__.splitlines()[0])
    ap.add_argument("prediction", help="HDF5 written by affcons_lib.predict")
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS), help="waterz thresholds (3D)")
    ap.add_argument("--json", help="write the scores to this JSON file too")
    args = ap.parse_args(argv)
    p = Path(args.prediction)
    if not p.is_file():
        print(f"error: prediction file not found: {p}", file=sys.stderr)
        return 2
    with h5py.File(p, "r") as f:
        groups = [f[k] for k in sorted(f) if k.startswith("image_")] or [f]
        for g in groups:
            for key in ("affinities", "labels"):
                if key not in g:
                    print(f"error: {p}: no dataset '{key}' (write it with python -m affcons_lib.predict)",
                          file=sys.stderr)
                    return 2
        affs = [g["affinities"][...] for g in groups]
        gt = [g["labels"][...] for g in groups]
        offsets = [tuple(int(v) for v in o) for o in groups[0]["affinities"].attrs["offsets"]]
    if gt[0].ndim == 3:
        scores = evaluate_3d(affs[0], gt[0], args.thresholds)
    elif len(gt) > 1:
        scores = evaluate_2d_many(affs, gt, offsets)
    else:
        scores = evaluate_2d(affs[0], gt[0], offsets)
    scores.pop("segmentation")
    text = json.dumps(scores, indent=2)
    print(text)
    if args.json:
        tmp = Path(args.json + ".part")
        tmp.write_text(text)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
