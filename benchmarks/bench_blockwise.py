"""Blockwise prediction and segmentation (daisy) against the in-memory versions,
and their peak memory beside the volume size.

    python benchmarks/bench_blockwise.py [--depths 64 128] [--workers 2] [--checkpoint CKPT] [--record OUT.json]

For each depth Z, a Z x 512 x 512 volume (the shared FIB-SEM volume tiled by
mirroring; generated EM-like data without it) is written to a chunked HDF5 file.
Then, with ``--workers`` daisy workers, in subprocesses so that their memory is
theirs alone:

1. ``python -m affcons_lib predict --blockwise``: affinities into zarr, compared
   with the in-memory tiled prediction of the same network (largest |difference|);
2. ``python -m affcons_lib blockwise segment`` on ground-truth affinities blurred
   by noise (a realistic, dense boundary map): VOI against the same recipe in
   memory (:func:`affcons_lib.evaluation.evaluate.segment_3d`, same threshold): 0 when the
   fragments and the agglomeration are the in-memory ones.

Prints, per volume, the peak resident memory of the scheduler and of the largest
worker: it depends on the block, not on the volume; and the graph step's memory
per edge of the fragment graph (its peak above what the scheduler held before,
over the number of edges): the size of graph one machine can agglomerate. With
``--record``, the rows and the run's provenance are also written as JSON (the book's
blockwise page shows ``benchmarks/results/bench_blockwise.json``). The network is a small one
trained for a few iterations here (or ``--checkpoint``): equality of the two
predictions does not depend on its quality.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import zarr

from affcons_lib.method import affinity
from affcons_lib import data
from affcons_lib.evaluation import evaluate, metrics
from affcons_lib.training import inference, train
from affcons_lib.training.checkpoint import load_checkpoint
from affcons_lib.training.config import load_config

BLOCK = (64, 256, 256)


def tiled_volume(depth: int, size: int = 512):
    """Raw (uint8) and labels of depth x size x size: the real volume mirrored
    to size in-plane, generated data when the real one is absent."""
    try:
        ds = data.load_volume("fibsem")
        raw, labels = np.asarray(ds.raw), np.asarray(ds.labels)
        raw = (raw * 255).astype(np.uint8) if raw.dtype != np.uint8 else raw
        source = "FIB-SEM tiled"
    except (FileNotFoundError, OSError, ValueError):
        labels_only = data.make_em_volume((min(depth, 64), size, size), n_neurites=120, seed=0)
        raw, labels = (labels_only[0] * 255).astype(np.uint8), labels_only[1]
        source = "generated"

    raw, labels = data.mirror_to_shape(raw, (depth, size, size)), data.mirror_to_shape(labels, (depth, size, size))
    # mirrored copies of one body are separate objects only where they do not touch;
    # they are one label here, which is fine for comparing two segmentations
    return raw, labels, source


def run_cli(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-m"] + args, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{' '.join(args[:2])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


def bench_predict(checkpoint, nets, raw, d, depth, workers):
    t = time.time()
    pred = run_cli(["affcons_lib", "predict", checkpoint, "--blockwise", "--raw", f"{d / 'raw.h5'}:volumes/raw",
                    "--out", str(d / "affs.zarr"), "--block", *map(str, BLOCK), "--workers", str(workers)])
    t_block = time.time() - t
    lo, hi = pred["raw_range"]
    t = time.time()
    ref = inference.predict_affinities(nets["embedding"], data.normalize_raw(raw, (lo, hi)), affinity.OFFSETS_3D, tile=tuple(pred["tile"]),
                                       stride=tuple(pred["stride"]), with_entropy=False)
    t_mem = time.time() - t
    diff = 0.0
    got = zarr.open_array(str(d / "affs.zarr"))
    for z in range(0, depth, BLOCK[0]):  # compare slab by slab
        diff = max(diff, float(np.abs(got[:, z:z + BLOCK[0]] - ref[:, z:z + BLOCK[0]]).max()))
    del ref
    print(f"  predict: blockwise {t_block:.0f} s, in memory {t_mem:.0f} s, max |difference| {diff:.2e}; "
          f"peak memory: scheduler {pred['peak_mb_main']:.0f} MiB, largest worker {pred['peak_mb_worker']:.0f} MiB")

    return pred, diff, t_block, t_mem


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--checkpoint")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    ap.add_argument("--skip-predict", action="store_true", help="segmentation only (no network needed)")
    ap.add_argument("--record", help="also write the rows and the provenance of this run as JSON")
    args = ap.parse_args()
    started = time.time()
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_blockwise_"))
    work.mkdir(parents=True, exist_ok=True)

    checkpoint = args.checkpoint
    if not checkpoint and not args.skip_predict:
        cfg = load_config(None, ["widths=4,8,16", "patch=8,64,64", "iterations=20", "dataset=auto",
                                       f"out_dir={work / 'train'}", "progress=false"])
        train.train(cfg)
        checkpoint = str(work / "train" / "last.pt")
    nets = None if args.skip_predict else load_checkpoint(checkpoint)[0]

    rows, records = [], []
    for depth in args.depths:
        raw, labels, source = tiled_volume(depth)
        d = work / f"z{depth}"
        d.mkdir(exist_ok=True)
        with h5py.File(d / "raw.h5", "w") as f:
            f.create_dataset("volumes/raw", data=raw, chunks=(min(32, depth), 128, 128))
        print(f"\n{raw.shape} ({source}, {raw.size / 1e6:.0f} M voxels), block {BLOCK}, {args.workers} workers")

        # 1. prediction
        pred = {"peak_mb_main": float("nan"), "peak_mb_worker": float("nan")}
        diff = t_predict = t_predict_mem = float("nan")
        if not args.skip_predict:
            pred, diff, t_predict, t_predict_mem = bench_predict(checkpoint, nets, raw, d, depth, args.workers)

        # 2. segmentation of noisy ground-truth affinities
        gt_affs, _ = affinity.affinities_from_labels(affinity.widen_borders(labels), affinity.OFFSETS_3D[:3])
        rng = np.random.default_rng(0)
        gt_affs = np.clip(0.1 + 0.8 * gt_affs + rng.normal(0, 0.15, gt_affs.shape), 0, 1).astype(np.float32)
        zarr.create_array(store=str(d / "gt_affs.zarr"), data=gt_affs, chunks=(3,) + BLOCK, overwrite=True)
        t = time.time()
        seg_info = run_cli(["affcons_lib", "blockwise", "segment", str(d / "gt_affs.zarr"), "--out", str(d / "seg"),
                            "--threshold", str(args.threshold), "--block", *map(str, BLOCK),
                            "--workers", str(args.workers)])
        t_block = time.time() - t
        t = time.time()
        ref_seg = evaluate.segment_3d(gt_affs, threshold=args.threshold)
        t_mem = time.time() - t
        seg = zarr.open_array(str(d / "seg" / "segmentation"))[:]
        split, merge = metrics.voi(seg, ref_seg)
        print(f"  segment: blockwise {t_block:.0f} s (graph step {seg_info['seconds_graph']:.1f} s, "
              f"{seg_info['graph_edges']} edges), in memory {t_mem:.0f} s; VOI blockwise vs in memory "
              f"{split + merge:.4f} (split {split:.4f}, merge {merge:.4f}; must be < 0.05); "
              f"{len(np.unique(seg))} vs {len(np.unique(ref_seg))} segments")
        print(f"  peak memory: scheduler {seg_info['peak_mb_main']:.0f} MiB, largest worker "
              f"{seg_info['peak_mb_worker']:.0f} MiB; graph step {seg_info['graph_peak_mb']:.0f} MiB for "
              f"{seg_info['graph_edges']:,} edges and {seg_info['fragments_in_graph']:,} fragments = "
              f"{seg_info['graph_bytes_per_edge']:.0f} bytes per edge")
        rows.append((raw.shape, pred["peak_mb_main"], pred["peak_mb_worker"], seg_info["peak_mb_main"],
                     seg_info["peak_mb_worker"], diff, split + merge, seg_info["graph_bytes_per_edge"]))
        records.append(dict(shape=list(raw.shape), source=source, block=list(BLOCK), workers=args.workers,
                            predict_max_difference=diff, predict_seconds=t_predict,
                            predict_in_memory_seconds=t_predict_mem, predict_peak_mib=pred["peak_mb_main"],
                            predict_worker_peak_mib=pred["peak_mb_worker"], segment_voi=split + merge,
                            segment_seconds=t_block, segment_in_memory_seconds=t_mem,
                            segment_peak_mib=seg_info["peak_mb_main"], segment_worker_peak_mib=seg_info["peak_mb_worker"],
                            graph_edges=seg_info["graph_edges"], graph_bytes_per_edge=seg_info["graph_bytes_per_edge"],
                            fragments=seg_info["fragments_in_graph"]))
        del gt_affs, seg, ref_seg

    print("\nvolume               predict: scheduler / worker MiB   segment: scheduler / worker MiB   "
          "max|Δaffs|   VOI      graph bytes/edge")
    for shape, pm, pw, sm, sw, diff, voi, bpe in rows:
        print(f"{str(shape):20s} {pm:10.0f} / {pw:6.0f}                {sm:10.0f} / {sw:6.0f}"
              f"              {diff:.1e}     {voi:.4f}   {bpe:.0f}")
    if len(rows) > 1:
        voxels = np.prod(rows[-1][0]) / np.prod(rows[0][0])
        print(f"largest worker, segment: {rows[-1][4] / rows[0][4]:.2f}x for {voxels:.0f}x the voxels")
    print(f"(work directory: {work})")
    if args.record:
        from affcons_lib._atomic import write_json
        from affcons_lib.companion.provenance import provenance

        command = "python benchmarks/bench_blockwise.py " + " ".join(sys.argv[1:])
        # JSON has no NaN: a step not run (--skip-predict) is null
        records = [{k: None if isinstance(v, float) and v != v else v for k, v in r.items()} for r in records]
        write_json(args.record, {"command": command, "rows": records,
                                 "provenance": provenance(args.workers, (time.time() - started) / 60)})


if __name__ == "__main__":
    main()
