"""Where a crac training step goes, at fp32 and bf16, against one large convolution.

    python benchmarks/bench_train.py [--patch 8 64 64] [--batch 2] [--widths 8 16 32] [--iters 10] [--device cpu]

Defaults: notebook 01's small scale. For each precision (``TrainConfig.precision``),
timed in this run on the same batches:

- the full crac iteration (patch sampling with augmentation, targets and masks, both
  networks, supervised + entropy-filtered cross-consistency losses, Adam step);
- the networks alone (forward of f(θ1) and f(θ2) with its cosine affinities, a trivial
  loss, backward, Adam step), whose share of the full iteration is the network share;
- their throughput, GMAC/s (forward MACs from affcons_lib.method.complexity, backward counted
  as twice the forward), as a ratio to one large conv3d (32 -> 32 channels, 3x3x3, on a
  batch-2 x 8x64x64 input) forward+backward at the same precision: how much of what the
  cores do on a convolution they are good at the small networks reach.

Then bf16 / fp32 time ratios of the full step and of the networks. With
``--side-by-side N``: whole crac runs of N iterations (notebook 01's configuration,
training only), two ways on the same cores: one process at all of them, one run after
another, against one process per core at one thread each, all at once
(affcons_lib.companion.side_by_side); printed as runs per minute and their ratio. With
``--compile``: the networks alone again under ``torch.compile`` (what the fused kernels
of inductor give at this scale, compile time apart). With
``--notebook EXECUTED.ipynb`` (a notebook papermill ran, e.g. ``make reproduce``'s
``runs/01_training.ipynb``): where its time went, cell by cell, with nothing
else timed. The precision only
changes the networks' arithmetic; whether bf16 runs reach the scores of fp32 runs is a
paired experiment (notebooks/book/time_to_claim.md), not a timing.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from affcons_lib.method import affinity, complexity, losses, models
from affcons_lib.training import train
from affcons_lib.training.checkpoint import set_threads
from affcons_lib.training.checkpoint import build_models
from affcons_lib.training.config import load_config
from affcons_lib.training.sampling import PatchSampler, prepare_data


def _one_run(overrides: dict, threads: int) -> float:
    """Seconds of one crac run of ``overrides`` in this process at ``threads`` threads."""
    set_threads(threads)
    cfg = load_config(None, {**overrides, "threads": threads})
    prepared = prepare_data(cfg)
    t0 = time.perf_counter()
    train.train(cfg, prepared)
    return time.perf_counter() - t0


def side_by_side(iterations: int, precision: str, out: str) -> None:
    """Runs per minute: one process at every core, runs one after another, against
    one process per core at one thread each."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    cores = len(os.sched_getaffinity(0))
    base = dict(method="crac", iterations=iterations, patch=(8, 64, 64), widths=(8, 16, 32), batch=2, lr=3e-3,
                voxel_budget=0.05, min_size=1000, precision=precision, progress=False, log_every=iterations,
                checkpoint_every=iterations)
    runs = [{**base, "seed": s, "annotation_seed": s, "out_dir": f"{out}/run{s}"} for s in range(cores)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:  # a fresh process, as below
        pool.submit(_one_run, runs[0], 1).result()  # warm-up: imports, data, allocations
        t0 = time.perf_counter()
        alone = [pool.submit(_one_run, r, cores).result() for r in runs]
        wall_alone = time.perf_counter() - t0
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as pool:
        for f in [pool.submit(_one_run, runs[0], 1) for _ in range(cores)]:
            f.result()  # warm-up of every worker
        t0 = time.perf_counter()
        together = [f.result() for f in [pool.submit(_one_run, r, 1) for r in runs]]
        wall_together = time.perf_counter() - t0
    a, b = len(runs) / wall_alone * 60, len(runs) / wall_together * 60
    print(f"{precision}, {len(runs)} crac runs of {iterations} iterations on {cores} cores: one process at {cores} "
          f"threads, one after another {a:.1f} runs/min (a run {sum(alone) / len(alone):.1f} s); {cores} processes "
          f"at 1 thread, side by side {b:.1f} runs/min (a run {sum(together) / len(together):.1f} s); "
          f"ratio side by side / one after another {b / a:.2f}")


def notebook_breakdown(path: str) -> None:
    """Each code cell's seconds and share of an executed notebook (papermill's per-cell
    times), named by its first line."""
    import json

    cells = [c for c in json.load(open(path))["cells"] if c["cell_type"] == "code"]
    times = [(c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0, "".join(c["source"]).split("\n")[0])
             for c in cells]
    total = sum(t for t, _ in times)
    if not total:
        raise SystemExit(f"{path}: no papermill cell times (expected a notebook executed by papermill)")
    print(f"{path}: {total / 60:.1f} min in {len(cells)} code cells")
    for k, (t, first) in enumerate(times, 1):
        if t >= 0.005 * total:
            print(f"  cell {k:2d} {t:7.1f} s {t / total:6.1%}  {first[:70]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, nargs=3, default=[8, 64, 64])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: OMP_NUM_THREADS or half the cores)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the networks alone under torch.compile (inductor), compile time printed apart")
    ap.add_argument("--side-by-side", type=int, metavar="N", default=0,
                    help="also time whole runs of N iterations one after another and side by side")
    ap.add_argument("--notebook", metavar="EXECUTED.ipynb", help="only: where an executed notebook's time went")
    args = ap.parse_args()
    if args.notebook:
        notebook_breakdown(args.notebook)
        return
    threads = set_threads(args.threads)
    cfg = load_config(None, {"patch": tuple(args.patch), "batch": args.batch, "widths": tuple(args.widths),
                                   "method": "crac", "progress": False, "voxel_budget": 0.05, "min_size": 1000})
    device = torch.device(args.device)
    prepared = prepare_data(cfg)
    offsets, n_nearest = prepared.offsets, prepared.n_nearest
    sampler = PatchSampler(prepared.raw_train, prepared.sparse_train, offsets, patch=cfg.patch,
                                 sparse=True, background_is_instance=False, widen=True, n_nearest=n_nearest,
                                 min_labeled=cfg.min_labeled)
    torch.manual_seed(0)
    nets = {k: v.to(device).train() for k, v in build_models(cfg).items()}
    opt = torch.optim.Adam([p for n in nets.values() for p in n.parameters()], lr=1e-4)
    shape = (cfg.batch, 1, *cfg.patch)
    macs = (complexity.count(models.build("embedding3d", widths=cfg.widths), shape, offsets=offsets)["macs"]
            + complexity.count(models.build("affinity3d", widths=cfg.widths), shape)["macs"])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def networks(x, precision):
        with models.autocast(precision, device):
            emb, aff1 = nets["embedding"](x), nets["affinity"](x)
        return affinity.affinities_from_embeddings(emb.float(), offsets), aff1.float()

    def full_step(t, precision):
        raw, target, mask, valid = (x.to(device) for x in sampler.sample(0, t, 0, cfg.batch))
        aff2, aff1 = networks(raw.unsqueeze(1), precision)
        loss = losses.weighted_mse(aff2, target, mask, n_nearest=n_nearest) + \
            losses.weighted_mse(aff1, target, mask, n_nearest=n_nearest)
        cross, _ = losses.cross_consistency_loss(aff1, aff2, valid & ~mask, alpha=losses.alpha_schedule(t, 100),
                                                 n_nearest=n_nearest)
        opt.zero_grad(set_to_none=True)
        (loss + cross).backward()
        opt.step()
        sync()

    fixed = torch.rand(shape, device=device)

    def bare_step(t, precision):
        aff2, aff1 = networks(fixed, precision)
        opt.zero_grad(set_to_none=True)
        (aff2.mean() + aff1.mean()).backward()
        opt.step()
        sync()

    c = 32
    a = torch.randn(cfg.batch, c, *cfg.patch, device=device, requires_grad=True)
    w = torch.randn(c, c, 3, 3, 3, device=device, requires_grad=True)
    conv_macs = c * c * 27 * a[:, 0].numel()

    def conv_step(t, precision):
        a.grad = w.grad = None
        with models.autocast(precision, device):
            out = F.conv3d(a, w, padding=1)
        out.float().sum().backward()
        sync()

    def best_of(step, precision):
        step(0, precision)  # warm-up (allocations, kernel choice)
        best = float("inf")
        for t in range(1, args.iters + 1):
            t0 = time.perf_counter()
            step(t, precision)
            best = min(best, time.perf_counter() - t0)
        return best

    from affcons_lib.companion.provenance import print_header

    print_header("benchmarks/bench_train.py", threads)
    print(f"device {device} ({threads} CPU thread{'s' if threads > 1 else ''}), batch {cfg.batch} x "
          f"{tuple(cfg.patch)}, widths {tuple(cfg.widths)}, data: {prepared.source}; best of {args.iters}")
    times = {}
    for precision in ("fp32", "bf16"):
        # interleaved per precision: the same batches, the same state of the machine
        full, bare, conv = (best_of(s, precision) for s in (full_step, bare_step, conv_step))
        times[precision] = (full, bare)
        net_rate, conv_rate = 3 * macs / bare / 1e9, 3 * conv_macs / conv / 1e9
        print(f"{precision}: crac iteration {full:.3f} s; networks alone {bare:.3f} s = {bare / full:.0%} of it "
              f"(sampling, losses and the rest {full - bare:.3f} s)")
        print(f"{precision}: networks {3 * macs / 1e9:.2f} GMAC -> {net_rate:.1f} GMAC/s; one conv3d "
              f"{c}->{c} 3x3x3 on {tuple(a.shape)}: {conv_rate:.1f} GMAC/s; ratio networks/conv3d "
              f"{net_rate / conv_rate:.2f}")
    print(f"ratio bf16/fp32: crac iteration {times['bf16'][0] / times['fp32'][0]:.2f}, "
          f"networks alone {times['bf16'][1] / times['fp32'][1]:.2f}")
    if args.compile:
        # the field's fused conv + norm + activation on CPUs: inductor compiles both networks (a
        # C++ compiler at run time; its cache keeps the kernels for the next process)
        eager = dict(nets)
        t0 = time.perf_counter()
        nets.update({k: torch.compile(v) for k, v in eager.items()})
        bare_step(0, "fp32")
        print(f"torch.compile: {time.perf_counter() - t0:.1f} s to compile (fp32, first step)")
        for precision in ("fp32", "bf16"):
            bare, conv = best_of(bare_step, precision), best_of(conv_step, precision)
            print(f"{precision}, compiled: networks alone {bare:.3f} s = {bare / times[precision][1]:.2f} of eager; "
                  f"ratio networks/conv3d {3 * macs / bare / (3 * conv_macs / conv):.2f}")
        nets.update(eager)
    if args.side_by_side and device.type == "cpu":
        import tempfile

        with tempfile.TemporaryDirectory() as out:
            # bf16 only where native: emulated, it says nothing a reader's run would do
            for precision in dict.fromkeys(("fp32", models.resolve_precision("auto", device))):
                side_by_side(args.side_by_side, precision, out)


if __name__ == "__main__":
    main()
