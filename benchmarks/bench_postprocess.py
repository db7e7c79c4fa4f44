"""Mutex watershed against the floor of its algorithm (sorting), and waterz.

    python benchmarks/bench_postprocess.py [--skip-waterz]

For a 2D 1024x1024 image with the paper's 10 offsets and a 3D 32x256x256 volume
with its 12 offsets, prints the best-of-3 time of
affcons_lib.segmentation.postprocess.mutex_watershed and of a plain ``numpy.argsort`` of the
same edge weights, measured in this run, and their ratio, for two inputs:

- structured: ground-truth affinities with noise (what a network gives);
- uniform random: every weight a uniform draw, where the union-find and mutex
  bookkeeping dominate (the hard case; the scoring issue asks for < 2).

Then times waterz agglomeration (fragments + median scoring) on 64x512x512.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from affcons_lib.method import affinity
from affcons_lib import data
from affcons_lib.segmentation import fragments, postprocess


def noisy_affinities(labels, offsets, background_is_instance, seed=0):
    """Ground-truth affinities blurred by noise: realistic ties-free weights."""
    affs, _ = affinity.affinities_from_labels(labels, offsets, background_is_instance=background_is_instance)
    rng = np.random.default_rng(seed)
    return np.clip(0.1 + 0.8 * affs + rng.normal(0, 0.15, affs.shape), 0, 1).astype(np.float32)


def best_of(fn, repeat=3):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_mws(name, affs, offsets, n_attractive, bar):
    postprocess.mutex_watershed(affs[(slice(None),) + (slice(0, 8),) * (affs.ndim - 1)], offsets, n_attractive,
                                use_affogato=False)  # compile
    w = affs.ravel().copy()  # the baseline sorts the same number of float32 weights
    t_sort, _ = best_of(lambda: np.argsort(w))
    t_mws, seg = best_of(lambda: postprocess.mutex_watershed(affs, offsets, n_attractive, use_affogato=False))
    ratio = t_mws / t_sort
    print(f"{name}: {w.size / 1e6:.1f} M edge weights, {seg.max()} segments")
    print(f"  mutex_watershed {t_mws:.2f} s, numpy.argsort {t_sort:.2f} s, ratio {ratio:.2f} ({bar})")
    return ratio


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-waterz", action="store_true")
    args = ap.parse_args()
    from affcons_lib.companion.provenance import print_header

    print_header("benchmarks/bench_postprocess.py")
    print(f"affogato importable: {postprocess.HAVE_AFFOGATO} (this benchmark times our numba implementation)")

    rng = np.random.default_rng(0)
    _, nuclei = data.make_nuclei_image((1024, 1024), n_nuclei=600, radius_range=(8, 30), seed=0)
    _, em = data.make_em_volume((32, 256, 256), n_neurites=60, seed=0)
    em = affinity.widen_borders(em)
    cases = [("2D 1024x1024, 10 offsets", affinity.OFFSETS_2D, 2, nuclei, True),
             ("3D 32x256x256, 12 offsets", affinity.OFFSETS_3D, 3, em, False)]
    ratios = {}
    for name, offsets, n_attractive, labels, background in cases:
        structured = noisy_affinities(labels, offsets, background)
        uniform = rng.random(structured.shape, dtype=np.float32)
        ratios[f"{name[:2]} structured"] = bench_mws(f"{name}, structured", structured, offsets, n_attractive,
                                                     "keep below 2")
        ratios[f"{name[:2]} uniform"] = bench_mws(f"{name}, uniform random", uniform, offsets, n_attractive,
                                                  "must be < 2")
    print("ratios mutex_watershed / argsort: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))

    if not args.skip_waterz:
        _, em = data.make_em_volume((64, 512, 512), n_neurites=150, seed=1)
        affs = noisy_affinities(affinity.widen_borders(em), affinity.OFFSETS_3D[:3], False)
        t0 = time.perf_counter()
        frags = fragments.fragments(affs)
        t1 = time.perf_counter()
        segs = postprocess.agglomerate(affs, [0.3, 0.5, 0.7], fragments=frags)
        t2 = time.perf_counter()
        print(f"waterz on 64x512x512: fragments {t1 - t0:.1f} s ({len(np.unique(frags))} fragments), "
              f"agglomeration at 3 thresholds {t2 - t1:.1f} s ({[int(len(np.unique(s))) for s in segs]} segments)")


if __name__ == "__main__":
    main()
