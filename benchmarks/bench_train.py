"""One crac training iteration against the bare forward+backward of its two networks.

    python benchmarks/bench_train.py [--patch 8 96 96] [--batch 2] [--iters 5] [--device cpu]

Both are timed in this run on the same batches: the full iteration (patch sampling
with augmentation, targets and masks, both networks, supervised + entropy-filtered
cross-consistency losses, Adam step) and the networks alone (forward, a trivial
loss, backward, Adam step). The overhead ratio (full / bare - 1) is what the
training issue bounds at 30 %.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from affcons_lib import affinity, losses, train


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patch", type=int, nargs=3, default=[8, 96, 96])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--widths", type=int, nargs="+", default=[28, 36, 48, 64, 80])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    cfg = train.load_config(None, [f"patch={','.join(map(str, args.patch))}", f"batch={args.batch}",
                                   f"widths={','.join(map(str, args.widths))}", "method=crac", "progress=false"])
    device = torch.device(args.device)
    prepared = train.prepare_data(cfg)
    offsets, n_nearest = prepared["offsets"], prepared["n_nearest"]
    sampler = train.PatchSampler(prepared["raw_train"], prepared["sparse_train"], offsets, patch=cfg.patch,
                                 sparse=True, background_is_instance=False, widen=True, n_nearest=n_nearest,
                                 min_labeled=cfg.min_labeled)
    torch.manual_seed(0)
    nets = {k: v.to(device).train() for k, v in train.build_models(cfg).items()}
    opt = torch.optim.Adam([p for n in nets.values() for p in n.parameters()], lr=1e-4)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def full_step(t):
        raw, target, mask, valid = (x.to(device) for x in sampler.sample(0, t, 0, cfg.batch))
        x = raw.unsqueeze(1)
        aff2 = affinity.affinities_from_embeddings(nets["embedding"](x), offsets)
        aff1 = nets["affinity"](x)
        loss = losses.weighted_mse(aff2, target, mask, n_nearest=n_nearest) + \
            losses.weighted_mse(aff1, target, mask, n_nearest=n_nearest)
        cross, _ = losses.cross_consistency_loss(aff1, aff2, valid & ~mask, alpha=losses.alpha_schedule(t, 100),
                                                 n_nearest=n_nearest)
        opt.zero_grad(set_to_none=True)
        (loss + cross).backward()
        opt.step()
        sync()

    fixed = torch.rand(cfg.batch, 1, *cfg.patch, device=device)

    def bare_step(t):
        # f(θ2) through its similarity layer, as in training: that is part of the network
        aff2 = affinity.affinities_from_embeddings(nets["embedding"](fixed), offsets)
        aff1 = nets["affinity"](fixed)
        opt.zero_grad(set_to_none=True)
        (aff2.mean() + aff1.mean()).backward()
        opt.step()
        sync()

    full_step(0), bare_step(0)  # warm-up
    times = {}
    for name, step in (("full", full_step), ("bare", bare_step)):
        best = float("inf")
        for t in range(1, args.iters + 1):
            t0 = time.perf_counter()
            step(t)
            best = min(best, time.perf_counter() - t0)
        times[name] = best
    print(f"device {device}, batch {cfg.batch} x {tuple(cfg.patch)}, widths {tuple(cfg.widths)}, data: {prepared['source']}")
    print(f"crac iteration (sampling, targets, masks, losses, step): {times['full']:.3f} s")
    print(f"bare forward+backward+step of f(θ1) and f(θ2):           {times['bare']:.3f} s")
    print(f"overhead: {100 * (times['full'] / times['bare'] - 1):.1f} % (must stay under 30 %)")


if __name__ == "__main__":
    main()
