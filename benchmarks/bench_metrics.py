"""VOI + ARAND: affcons_lib.evaluation.metrics against scikit-image on 64x512x512 pairs.

    python benchmarks/bench_metrics.py [--shape 64 512 512] [--repeat 3]

Two pairs: an EM-like one (blocky segments, shifted borders, splits and merges)
and uniform random labels (every voxel its own draw: the most distinct label
pairs). For each, prints the best-of-``repeat`` times measured in this run and
their ratio (ours / skimage; the scoring issue asks for <= 0.33):
``metrics.voi_arand`` counts the label pairs in one pass and derives both scores
from them, where scikit-image builds its table twice. Results must agree to
1e-9, which is checked too.

Then the boundary average precision (``metrics.boundary_ap``) of float32
affinities the size of notebook 01's test part (12 x 50 x 250 x 250 edges): the
sort of float32 bit patterns (packed with the flags, numpy's vectorised sort) against the stable comparison sort of the
same scores as float64 (the path float64 input takes), same AP checked.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.metrics import adapted_rand_error, variation_of_information

from affcons_lib.evaluation import metrics


def make_pair(shape, seed=0):
    """A ground truth of ~thousands of blocky segments, and a candidate that shifts
    its borders and splits/merges some segments (an EM-like error pattern)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    coarse = rng.integers(1, 20_000, (max(z // 4, 1), max(y // 16, 1), max(x // 16, 1)), dtype=np.uint64)
    gt = coarse.repeat(4, 0).repeat(16, 1).repeat(16, 2)[:z, :y, :x]
    gt = np.ascontiguousarray(np.pad(gt, [(0, z - gt.shape[0]), (0, y - gt.shape[1]), (0, x - gt.shape[2])], mode="edge"))
    seg = np.roll(gt, 3, axis=2) * 3
    seg[:, : y // 2] += (np.arange(x) // 5 % 2).astype(np.uint64)  # splits in one half
    seg[seg % 7 == 0] = 7  # a few merges
    gt[rng.random(gt.shape) < 0.02] = 0  # some ignored voxels
    return seg, gt


def random_pair(shape, n_labels=2000, seed=0):
    """Uniform random labels in [0, n_labels) for both arrays (0 ignored in gt)."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, n_labels, shape).astype(np.uint64), rng.integers(0, n_labels, shape).astype(np.uint64))


def best_of(fn, repeat):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from affcons_lib.companion.provenance import print_header

    print_header("benchmarks/bench_metrics.py")
    ratios = {}
    for name, (seg, gt) in (("EM-like", make_pair(tuple(args.shape))), ("uniform random", random_pair(tuple(args.shape)))):
        print(f"{name}: volume {tuple(args.shape)} = {seg.size / 1e6:.1f} M voxels, "
              f"{len(np.unique(gt))} gt ids, {len(np.unique(seg))} seg ids")

        def ours():
            return metrics.voi_arand(seg, gt)

        def skimage():
            return variation_of_information(gt, seg, ignore_labels=(0,)), adapted_rand_error(gt, seg)[0]

        metrics.voi_arand(seg[:1], gt[:1])  # compile outside the timing
        t_ours, r = best_of(ours, args.repeat)
        t_sk, (v_sk, a_sk) = best_of(skimage, args.repeat)
        assert abs(r["voi_split"] - v_sk[0]) < 1e-9 and abs(r["voi_merge"] - v_sk[1]) < 1e-9, (r, v_sk)
        assert abs(r["arand"] - a_sk) < 1e-9, (r["arand"], a_sk)
        print(f"  VOI split/merge {r['voi_split']:.4f}/{r['voi_merge']:.4f}, ARAND {r['arand']:.4f} "
              "(equal to skimage's within 1e-9)")
        print(f"  affcons_lib voi_arand: {t_ours:.2f} s; scikit-image VOI + ARAND: {t_sk:.2f} s")
        ratios[name] = t_ours / t_sk
        print(f"  ratio ours/skimage: {ratios[name]:.2f} (must be <= 0.33)")
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))

    rng = np.random.default_rng(1)
    target = (rng.random((12, 50, 250, 250)) < 0.34).astype(np.float32)
    pred = np.clip(0.6 * target + 0.2 + rng.normal(0, 0.2, target.shape), 0, 1).astype(np.float32)
    metrics.boundary_ap(pred[:, :1, :8], target[:, :1, :8])  # compile outside the timing
    t32, ap32 = best_of(lambda: metrics.boundary_ap(pred, target), args.repeat)
    t64, ap64 = best_of(lambda: metrics.boundary_ap(pred.astype(np.float64), target), args.repeat)
    assert abs(ap32 - ap64) < 1e-9, (ap32, ap64)
    print(f"boundary AP of {pred.size / 1e6:.1f} M float32 edges: {ap32:.4f}; key sort {t32:.2f} s, "
          f"comparison sort (float64) {t64:.2f} s, ratio {t32 / t64:.2f}")


if __name__ == "__main__":
    main()
