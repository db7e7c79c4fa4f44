"""Training with sparse instance labels: ``sparse_only``, ``crac`` (the paper's
cross-representation affinity consistency) and ``full_supervision``.

    python -m affcons_lib.train CONFIG.yaml [--set key=value ...]
    torchrun --nproc_per_node N -m affcons_lib.train CONFIG.yaml [--set ...]

The loop in :func:`train` reads top to bottom: sample a batch, predict, add the
losses, step, log, checkpoint. Configuration is one dataclass, :class:`TrainConfig`.

Methods
-------
sparse_only        f(θ2) alone, supervised on the labeled region M of the sparse
                   annotation.
crac               f(θ1) and f(θ2), both supervised on M, and each the soft target
                   of the other on the unlabeled region where the target branch is
                   confident (entropy filter; CPSN filter when given).
full_supervision   f(θ2) alone, on dense labels (an upper bound).

Reproducibility: sample j of iteration t is drawn from a generator seeded with
(seed, t, j), so a resumed run draws exactly the batches the uninterrupted run would
have; checkpoints hold models, optimiser, iteration, random states and config.

Under torchrun each of N ranks trains on ``batch`` samples per iteration (a global
batch of N·batch) and the run equals one process at batch N·batch: see
:mod:`affcons_lib.distributed`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path

import torch

from . import checkpoint, distributed
from ._atomic import write_json
from .checkpoint import build_models, load_checkpoint
from .config import METHODS, TrainConfig, load_config, run_config_cli
from .cpsn import load_cpsn
from .evaluate import affinity_scores, score_prediction
from .inference import part_tiling, predict_affinities
from .models import resolve_precision
from .objective import step_objective
from .sampling import PatchSampler, PreparedData, describe, prepare_data, training_sampler

# TrainConfig, load_config, PatchSampler, prepare_data, build_models and
# load_checkpoint live in config / sampling / checkpoint; they stay importable
# from here, where a reader of the loop looks for them.
__all__ = ["METHODS", "TrainConfig", "load_config", "PatchSampler", "prepare_data", "train", "score_test_part",
           "load_checkpoint", "build_models", "main"]


def score_test_part(net: torch.nn.Module, prepared: PreparedData, cfg: TrainConfig) -> dict:
    """Scores of f(θ2) on the test part (the first test image of a collection),
    as the validation log records them: ``val_voi`` ... (3D) or ``val_aji`` ... (2D),
    and the affinity-level ``val_affinity_error`` and ``val_boundary_ap``, which
    need no agglomeration threshold (see :func:`~affcons_lib.evaluate.affinity_scores`)."""
    raw, labels = prepared.raw_test[0], prepared.labels_test[0]
    tile, stride = part_tiling(labels.shape, cfg.patch, net.divisor)  # predict_part's
    affs = predict_affinities(net, raw, prepared.offsets, tile=tile, stride=stride,
                              with_entropy=False)  # restores train mode
    s = score_prediction(affs, labels, prepared.offsets)
    keys = ("voi", "voi_split", "voi_merge", "arand") if cfg.dim == 3 else ("aji", "pq", "dice")
    a = affinity_scores(affs, labels, prepared.offsets)
    return {**{f"val_{k}": s[k] for k in keys},
            "val_affinity_error": a["affinity_error"], "val_boundary_ap": a["boundary_ap"]}


def _state(iteration, plain, optimizer, cfg, log, val_log, running, source) -> dict:
    """Everything a run needs to go on from ``iteration`` exactly as if never stopped."""
    return {
        "models": {k: v.state_dict() for k, v in plain.items()},
        "optimizer": optimizer.state_dict(),
        "iteration": iteration,
        "torch_rng": checkpoint.rng_state(),
        "numpy_rng": {"seed": cfg.seed, "iteration": iteration},  # samples are seeded by (seed, t, j)
        "config": dataclasses.asdict(cfg),
        "world_size": distributed.world_size(),
        "log": log,
        "val_log": val_log,
        "running": dict(running),  # loss sums since the last log row
        "source": source,
    }


# ----------------------------------------------------------------------- loop
def train(cfg: TrainConfig, prepared: PreparedData | None = None) -> dict:
    """Train as configured; returns a summary (paths, final losses, timings).

    ``prepared`` (from :func:`prepare_data`) lets a notebook share one loaded
    dataset between runs.
    """
    cfg.validate()
    out_dir = Path(cfg.out_dir)
    threads = checkpoint.set_threads(cfg.threads)
    device = distributed.setup(str(checkpoint.resolve_device(cfg)))  # joins torchrun's process group, if any
    main_rank = distributed.is_main()  # rank 0 alone writes logs and checkpoints
    precision = resolve_precision(cfg.precision, device)  # "auto": bf16 where the device has it natively
    prepared = prepared or prepare_data(cfg)
    cfg.in_channels = prepared.in_channels
    if cfg.progress and main_rank:
        print(describe(prepared, cfg), f"\n{cfg.method} on {device} ({threads} CPU thread{'s' if threads > 1 else ''}): "
              f"{cfg.iterations} iterations, batch {cfg.batch}, patch {tuple(cfg.patch)}, widths {tuple(cfg.widths)}, "
              f"{precision} -> {out_dir}", flush=True)
    offsets, n_nearest = prepared.offsets, prepared.n_nearest
    sampler = training_sampler(cfg, prepared)
    out_dir.mkdir(parents=True, exist_ok=True)  # only once the data loaded: a failed start leaves no folder

    torch.manual_seed(cfg.seed)
    # several ranks: DistributedDataParallel with synchronised batch norm; `plain`
    # holds the networks themselves (saved, validated, resumed on any rank count)
    nets = {k: distributed.wrap(v.to(device).train(), device) for k, v in build_models(cfg).items()}
    plain = {k: distributed.unwrap(v) for k, v in nets.items()}
    params = [p for net in nets.values() for p in net.parameters()]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
    cpsn = load_cpsn(cfg.cpsn_checkpoint, device) if cfg.cpsn_checkpoint and cfg.method == "crac" else None
    warmup = cfg.cpsn_warmup_iterations()
    if cpsn is not None and warmup >= cfg.iterations:
        warnings.warn(f"config.cpsn_warmup={cfg.cpsn_warmup!r}: the CPSN filter would switch on after iteration "
                      f"{warmup} of {cfg.iterations}, that is never; give a share of the run (e.g. 0.3)", UserWarning)
    start, log, val_log, running = 1, [], [], {}
    last = out_dir / "last.pt"
    if cfg.resume and last.is_file():
        ckpt = checkpoint.read_checkpoint(last, device, keys=("models", "optimizer", "iteration", "log"))
        for name, net in plain.items():
            net.load_state_dict(ckpt["models"][name])
        optimizer.load_state_dict(ckpt["optimizer"])
        checkpoint.restore_rng_state(ckpt["torch_rng"])
        start, log, val_log = ckpt["iteration"] + 1, ckpt["log"], ckpt.get("val_log", [])
        running = ckpt.get("running", {})

    from tqdm import tqdm

    bar = tqdm(range(start, cfg.iterations + 1), disable=not (cfg.progress and main_rank), desc=cfg.method,
               leave=False)
    t_start = time.time()
    # 1. this rank's share of each global batch: sample j of iteration t depends only on
    #    (seed, t, j), drawn here or in worker processes alike
    batches = sampler.batches(cfg.seed, start, cfg.iterations, distributed.rank() * cfg.batch, cfg.batch, cfg.workers)
    for t, batch in zip(bar, batches):
        raw, target, mask, valid = (x.to(device) for x in batch)
        x = raw.unsqueeze(1) if raw.ndim == target.ndim - 1 else raw  # add the channel axis unless RGB
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate(t)

        # 2. the objective (affcons_lib.objective): L_sup2 of f(θ2) on the labeled region;
        #    for crac also L_sup1 of f(θ1) and the cross-consistency on the unlabeled region
        step = step_objective(cfg, nets, x, target, mask, valid, offsets, n_nearest, t, precision=precision,
                              cpsn=cpsn if t > warmup else None)
        loss, terms = step.total, step.log_terms()
        terms = distributed.mean_over_ranks(terms)  # each rank holds its share of the global mean
        bad = [k for k, v in terms.items() if not math.isfinite(v)]
        if bad:  # stop before the step: every checkpoint written so far holds finite weights
            kept = f"{last} holds the last finite weights" if last.is_file() else "no checkpoint was written"
            raise FloatingPointError(f"iteration {t}: loss term {bad[0]!r} is {terms[bad[0]]} (not finite); "
                                     f"training stopped, {kept}; check the data and lower lr")

        # 4. step
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        # 5. log, checkpoint, snapshots
        for k, v in terms.items():
            running[k] = running.get(k, 0.0) + v
        if t % cfg.log_every == 0 or t == cfg.iterations:
            n = cfg.log_every if t % cfg.log_every == 0 else (t % cfg.log_every)
            row = {"iteration": t, **{k: v / n for k, v in running.items()}, "seconds": time.time() - t_start}
            log.append(row)
            running = {}
            bar.set_postfix(loss=f"{row['total']:.4f}")
        if cfg.val_every and t % cfg.val_every == 0 and main_rank:
            val_log.append({"iteration": t, **score_test_part(plain["embedding"], prepared, cfg)})
            checkpoint.write_log(val_log, out_dir, "validation.csv")
        if main_rank and (t in cfg.snapshot_iters or t % cfg.checkpoint_every == 0 or t == cfg.iterations):
            state = _state(t, plain, optimizer, cfg, log, val_log, running, prepared.source)
            if t in cfg.snapshot_iters:
                checkpoint.save(state, out_dir / f"snapshot_{t:07d}.pt")
            if t % cfg.checkpoint_every == 0 or t == cfg.iterations:
                checkpoint.save(state, last)
                checkpoint.write_log(log, out_dir)
    bar.close()
    summary = {"out_dir": str(out_dir), "checkpoint": str(last), "iterations": cfg.iterations, "precision": precision,
               "seconds": time.time() - t_start, "last_losses": log[-1] if log else {},
               "source": prepared.source}
    if main_rank:
        write_json(out_dir / "summary.json", summary)
    distributed.barrier()  # no rank leaves before rank 0 has written everything
    return summary


def main(argv=None) -> int:
    description = ("Train with sparse instance labels: sparse_only, crac (the paper's cross-representation "
                   "affinity consistency) or full_supervision. Defaults are a small CPU run; --set scale=paper "
                   "gives the paper's settings. Annotation as notebook 01: random complete instances of at least "
                   "1000 voxels (100 pixels in 2D; min_size) up to 5 % of the instance voxels (voxel_budget); "
                   "--set sparsity=0.1 alone annotates a share of the instances instead. --print-config lists every "
                   "key.")
    return run_config_cli(argv, prog="python -m affcons_lib.train", description=description,
                          cls=TrainConfig, run=train)


if __name__ == "__main__":
    raise SystemExit(main())
