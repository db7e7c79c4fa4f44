"""Training with sparse instance labels: ``sparse_only``, ``crac`` (the paper's
cross-representation affinity consistency) and ``full_supervision``.

    python -m affcons_lib train CONFIG.yaml [--set key=value ...]
    torchrun --nproc_per_node N -m affcons_lib train CONFIG.yaml [--set ...]

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
import warnings

import torch

from . import checkpoint
from .. import distributed
from .checkpoint import build_models, load_checkpoint
from .config import METHODS, TrainConfig, load_config
from .cpsn import load_cpsn
from ..evaluation.evaluate import affinity_scores, score_prediction
from .inference import part_tiling, predict_affinities
from .loop import RESUME_MAY_CHANGE, TrainingLoop
from ..method.models import resolve_precision
from .objective import step_objective
from .sampling import PatchSampler, PreparedData, describe, prepare_data, training_sampler

# TrainConfig, load_config, PatchSampler, prepare_data, build_models and
# load_checkpoint live in config / sampling / checkpoint; they stay importable
# from here, where a reader of the loop looks for them.
__all__ = ["train", "score_test_part"]


def score_test_part(net: torch.nn.Module, prepared: PreparedData, cfg: TrainConfig) -> dict:
    """Scores of f(θ2) on the test part (the first test image of a collection),
    as the validation log records them: ``val_voi`` ... (3D) or ``val_aji`` ... (2D),
    and the affinity-level ``val_affinity_error`` and ``val_boundary_ap``, which
    need no agglomeration threshold (see :func:`~affcons_lib.evaluation.evaluate.affinity_scores`)."""
    raw, labels = prepared.raw_test[0], prepared.labels_test[0]
    tile, stride = part_tiling(labels.shape, cfg.patch, net.divisor)  # predict_part's
    affs = predict_affinities(net, raw, prepared.offsets, tile=tile, stride=stride,
                              with_entropy=False)  # restores train mode
    s = score_prediction(affs, labels, prepared.offsets)
    keys = ("voi", "voi_split", "voi_merge", "arand") if cfg.dim == 3 else ("aji", "pq", "dice")
    a = affinity_scores(affs, labels, prepared.offsets)
    return {**{f"val_{k}": s[k] for k in keys},
            "val_affinity_error": a["affinity_error"], "val_boundary_ap": a["boundary_ap"]}


def _cpsn_filter(cfg: TrainConfig, device):
    """The trained CPSN of ``cfg.cpsn_checkpoint`` (``crac`` only) and the iteration
    after which its filter is on; (None, 0) without one."""
    if not cfg.cpsn_checkpoint or cfg.method != "crac":
        return None, 0
    warmup = cfg.cpsn_warmup_iterations()
    if warmup >= cfg.iterations:
        warnings.warn(f"config.cpsn_warmup={cfg.cpsn_warmup!r}: the CPSN filter would switch on after iteration "
                      f"{warmup} of {cfg.iterations}, that is never; give a share of the run (e.g. 0.3)", UserWarning)
    return load_cpsn(cfg.cpsn_checkpoint, device), warmup


# ----------------------------------------------------------------------- loop
def train(cfg: TrainConfig, prepared: PreparedData | None = None) -> dict:
    """Train as configured; returns a summary (paths, final losses, timings).

    ``prepared`` (from :func:`prepare_data`) lets a notebook share one loaded
    dataset between runs. The skeleton (device, resume, log, checkpoints) is
    :class:`~affcons_lib.training.loop.TrainingLoop`'s; the loss of a step is
    :func:`~affcons_lib.training.objective.step_objective`'s.
    """
    cfg.validate()
    prepared = prepared or prepare_data(cfg)
    cfg = dataclasses.replace(cfg, in_channels=prepared.in_channels)  # RGB images: 3; the caller's cfg untouched
    loop = TrainingLoop(cfg, cfg.method, snapshots=cfg.snapshot_iters,  # snapshots: the CPSN's bank
                        may_change=RESUME_MAY_CHANGE + ("snapshot_iters",))
    device, precision = loop.device, resolve_precision(cfg.precision, loop.device)  # "auto": bf16 where native
    if cfg.progress and loop.main:
        print(describe(prepared, cfg), f"\n{cfg.method} on {device} ({loop.threads} CPU thread"
              f"{'s' if loop.threads > 1 else ''}): {cfg.iterations} iterations, batch {cfg.batch}, patch "
              f"{tuple(cfg.patch)}, widths {tuple(cfg.widths)}, {precision} -> {cfg.out_dir}", flush=True)
    sampler = training_sampler(cfg, prepared)
    loop.open()  # only once the data loaded: a failed start leaves no folder

    # 1. networks (several ranks: DistributedDataParallel with synchronised batch norm;
    #    `plain` holds the networks themselves, saved and resumed on any rank count)
    torch.manual_seed(cfg.seed)
    nets = {k: distributed.wrap(v.to(device).train(), device) for k, v in build_models(cfg).items()}
    plain = {k: distributed.unwrap(v) for k, v in nets.items()}
    optimizer = torch.optim.Adam([p for net in nets.values() for p in net.parameters()], lr=cfg.lr,
                                 betas=tuple(cfg.betas))
    cpsn, warmup = _cpsn_filter(cfg, device)
    start, saved = loop.resume(plain, optimizer)
    val_log = saved.get("val_log", [])

    # 2. this rank's share of each global batch: sample j of iteration t depends only on
    #    (seed, t, j), drawn here or in worker processes alike
    batches = sampler.batches(cfg.seed, start, cfg.iterations, distributed.rank() * cfg.batch, cfg.batch, cfg.workers)
    for t, batch in zip(loop.iterations(start), batches):
        raw, target, mask, valid = (x.to(device) for x in batch)
        x = raw.unsqueeze(1) if raw.ndim == target.ndim - 1 else raw  # add the channel axis unless RGB
        for group in optimizer.param_groups:
            group["lr"] = cfg.learning_rate(t)
        # 3. the objective: L_sup2 of f(θ2) on the labeled region; for crac also L_sup1 of
        #    f(θ1) and the cross-consistency on the unlabeled region; then the step
        step = step_objective(cfg, nets, x, target, mask, valid, prepared.offsets, prepared.n_nearest, t,
                              precision=precision, cpsn=cpsn if t > warmup else None)
        loop.step(t, step.total, step.log_terms(), optimizer)
        # 4. validation, checkpoints, snapshots
        if cfg.val_every and t % cfg.val_every == 0 and loop.main:
            val_log.append({"iteration": t, **score_test_part(plain["embedding"], prepared, cfg)})
            checkpoint.write_log(val_log, loop.out_dir, "validation.csv")
        loop.checkpoint(t, plain, optimizer, val_log=val_log, source=prepared.source,
                        numpy_rng={"seed": cfg.seed, "iteration": t})  # samples are seeded by (seed, t, j)
    return loop.finish({"iterations": cfg.iterations, "precision": precision, "source": prepared.source})
