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

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import affinity, data, distributed, losses, models

__all__ = ["TrainConfig", "load_config", "PatchSampler", "train", "load_checkpoint", "build_models", "main"]

METHODS = ("sparse_only", "crac", "full_supervision")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults: a small CPU-sized run."""

    # data
    dataset: str = "auto"  # 3D: auto / fibsem / synthetic / CREMI path; 2D: auto / nuclei / synthetic / folder
    dim: int = 3
    train_fraction: float = 0.8  # leading part of z (3D) or x (2D) used for training; the rest is the test part
    sparsity: float = 0.1  # fraction of instances annotated (ignored when voxel_budget is set)
    annotation: str = "random"  # random / small / large
    voxel_budget: float | None = None  # annotate by voxel budget instead (count, or fraction in (0, 1))
    min_size: int = 1  # never annotate smaller instances
    annotation_seed: int = 0
    # network
    widths: tuple = (28, 36, 48, 64, 80)
    in_channels: int = 1  # set from the data (3 for RGB folders such as CVPPP)
    # optimisation
    method: str = "crac"
    patch: tuple = (8, 64, 64)
    batch: int = 2
    iterations: int = 200
    lr: float = 1e-4
    betas: tuple = (0.9, 0.999)
    seed: int = 0
    min_labeled: float = 0.02  # least fraction of labeled edges in a patch (resampled otherwise)
    augment: bool = True
    # cross-representation consistency
    lambda_cross: float = 1.0
    alpha0: float = 0.005
    nearest_weight: float = 10.0
    detach_targets: bool = True  # paper text; the release does not detach
    release_double_weight: bool = False  # the release's ×100 on the embedding cross term
    cpsn_checkpoint: str | None = None
    cpsn_warmup: int = 5000
    # output
    out_dir: str = "runs/train"
    checkpoint_every: int = 50
    snapshot_iters: tuple = ()  # keep copies of the models at these iterations (for the CPSN)
    log_every: int = 10
    val_every: int = 0  # score f(θ2) on the test part every N iterations (0: never) -> validation.csv
    resume: bool = False
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        for name in ("widths", "patch", "betas", "snapshot_iters"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the field for values that cannot work."""
        def bad(name, why):
            raise ValueError(f"config.{name}={getattr(self, name)!r}: {why}")

        if self.dim not in (2, 3):
            bad("dim", "expected 2 or 3")
        for name in ("widths", "patch", "snapshot_iters"):
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in getattr(self, name)):
                bad(name, "expected integers")
        if self.method not in METHODS:
            bad("method", f"expected one of {METHODS}")
        if self.annotation not in data.ANNOTATION_MODES:
            bad("annotation", f"expected one of {data.ANNOTATION_MODES}")
        if not 0 < self.sparsity <= 1:
            bad("sparsity", "expected a fraction of instances in (0, 1]")
        if self.voxel_budget is not None and self.voxel_budget <= 0:
            bad("voxel_budget", "expected a positive voxel count or fraction")
        if not 0 < self.train_fraction < 1:
            bad("train_fraction", "expected a value in (0, 1)")
        if len(self.patch) != self.dim or min(self.patch) < 1:
            bad("patch", f"expected {self.dim} positive sizes")
        divisor = 2 ** (len(self.widths) - 1)
        if any(p % divisor for p in self.patch[-2:]):
            bad("patch", f"in-plane sizes must be multiples of {divisor} (from {len(self.widths)} widths)")
        for name in ("batch", "iterations", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                bad(name, "expected a positive integer")
        if self.lr <= 0:
            bad("lr", "expected a positive learning rate")
        if not 0 <= self.min_labeled < 1:
            bad("min_labeled", "expected a fraction in [0, 1)")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            bad("device", "expected 'auto', 'cpu' or 'cuda[:N]'")
        return self


def _coerce(value: str, annotation, name: str):
    """Turn the text of ``--set name=value`` into the field's type."""
    text = value.strip()
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if text.lower() in ("none", "null") and (annotation is type(None) or type(None) in args):
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(text, a, name)
            except ValueError:
                continue
        raise ValueError(f"--set {name}={value}: cannot read as {annotation}")
    if annotation is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {name}={value}: expected true or false")
    if annotation in (int, float, str):
        try:
            return annotation(text)
        except ValueError as err:
            raise ValueError(f"--set {name}={value}: expected {annotation.__name__}") from err
    if annotation is tuple or origin is tuple:
        parts = [p.strip() for p in text.strip("()[] ").split(",") if p.strip()]

        def item(p):
            try:
                return int(p)
            except ValueError:
                try:
                    return float(p)
                except ValueError:
                    return p.strip("'\"")

        return tuple(item(p) for p in parts)
    return text


def load_config(path=None, overrides: typing.Sequence[str] = (), cls=None):
    """A config dataclass (:class:`TrainConfig` by default, or ``cls``) from an
    optional YAML file and ``key=value`` overrides; unknown keys and badly typed
    values fail at once, naming them."""
    import yaml

    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded)
    cls = cls or TrainConfig
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}{' in ' + str(path) if path else ''}; known: {sorted(known)}")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in known:
            raise ValueError(f"--set {key}: unknown config key; known: {sorted(known)}")
        values[key] = _coerce(value, hints[key], key)
    cfg = cls(**values)
    return cfg.validate() if hasattr(cfg, "validate") else cfg


# ------------------------------------------------------------------------ data
class PatchSampler:
    """Random training patches with flips, 90° in-plane rotations and intensity
    jitter; targets and masks are computed after augmentation, on the patch.

    ``raw`` and ``labels`` are one volume / image or lists of them (folder datasets
    such as BBBC039; an image is drawn with probability proportional to its area).
    Raw data have the labels' shape, or a leading channel axis (RGB).

    A patch whose labeled region covers less than ``min_labeled`` of its edges is
    drawn again: with sparse labels most random patches hold little annotation.
    """

    def __init__(self, raw, labels, offsets, *, patch, sparse: bool, background_is_instance: bool, widen: bool,
                 n_nearest: int, min_labeled: float = 0.02, augment: bool = True, max_tries: int = 200):
        raws = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        labs = list(labels) if isinstance(labels, (list, tuple)) else [labels]
        patch = tuple(int(p) for p in patch)
        if len(raws) != len(labs) or not raws:
            raise ValueError(f"raw and labels: expected lists of equal, non-zero length, got {len(raws)} and {len(labs)}")
        for r, lab in zip(raws, labs):
            if r.shape[-lab.ndim:] != lab.shape or r.ndim not in (lab.ndim, lab.ndim + 1):
                raise ValueError(f"raw {r.shape} and labels {lab.shape} do not match")
            if any(p > n for p, n in zip(patch, lab.shape)):
                raise ValueError(f"config.patch={patch} is larger than the training data {lab.shape}")
        self.raws, self.labs, self.offsets = raws, labs, offsets
        areas = np.array([lab.size for lab in labs], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.patch, self.sparse, self.bg = patch, sparse, background_is_instance
        self.widen, self.n_nearest = widen, n_nearest
        self.min_labeled, self.augment, self.max_tries = min_labeled, augment, max_tries

    def _crop(self, rng):
        k = int(rng.choice(len(self.raws), p=self.weights)) if len(self.raws) > 1 else 0
        raw, lab = self.raws[k], self.labs[k]
        corner = [int(rng.integers(0, n - p + 1)) for n, p in zip(lab.shape, self.patch)]
        region = tuple(slice(c, c + p) for c, p in zip(corner, self.patch))
        return raw[(Ellipsis,) + region].copy(), lab[region].copy()

    def _augment(self, raw, lab, rng):
        if not self.augment:
            return raw, lab
        lead = raw.ndim - lab.ndim  # 1 for a channel axis
        for axis in range(lab.ndim):
            if rng.random() < 0.5:
                raw, lab = np.flip(raw, axis + lead), np.flip(lab, axis)
        if lab.shape[-1] == lab.shape[-2] and rng.random() < 0.5:
            raw, lab = np.swapaxes(raw, -1, -2), np.swapaxes(lab, -1, -2)
        contrast = rng.uniform(0.8, 1.2)
        brightness = rng.uniform(-0.1, 0.1)
        gamma = rng.uniform(0.8, 1.25)
        raw = np.clip(raw * contrast + brightness, 0, 1) ** gamma
        return np.ascontiguousarray(raw, np.float32), np.ascontiguousarray(lab)

    def sample_one(self, rng):
        for _ in range(self.max_tries):
            raw, lab = self._augment(*self._crop(rng), rng)
            lab_t = affinity.widen_borders(lab) if self.widen else lab
            target, valid = affinity.affinities_from_labels(lab_t, self.offsets,
                                                            background_is_instance=self.bg and not self.sparse)
            mask = affinity.labeled_region_mask(lab, self.offsets) & valid if self.sparse else valid
            if mask.mean() >= self.min_labeled:
                return raw, target, mask, valid
        raise RuntimeError(
            f"no patch with at least {self.min_labeled:.1%} labeled edges in {self.max_tries} draws: annotate "
            "more instances (sparsity / voxel_budget) or lower config.min_labeled"
        )

    def sample(self, seed: int, iteration: int, first: int, count: int):
        """Samples ``first … first+count-1`` of the global batch of ``iteration``,
        stacked as tensors (raw, target, mask, valid). Sample ``j`` comes from its
        own generator seeded ``(seed, iteration, j)``: a rank draws its share of the
        global batch, and the global batch is the same however it is split."""
        items = [self.sample_one(np.random.default_rng([seed, iteration, j])) for j in range(first, first + count)]
        return [torch.from_numpy(np.stack(x)) for x in zip(*items)]


def _split(array: np.ndarray, fraction: float, dim: int):
    """Train / test parts along z (3D) or x (2D)."""
    axis = 0 if dim == 3 else 1
    cut = int(round(array.shape[axis] * fraction))
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, cut)
    train_part = array[tuple(index)]
    index[axis] = slice(cut, None)
    return train_part, array[tuple(index)]


def prepare_data(cfg: TrainConfig):
    """Load the dataset, split it, annotate the training part. Returns a dict with
    raw/labels (dense) for train and test, the sparse training labels, offsets and
    a description."""
    if cfg.dim == 3:
        ds = data.load_volume(cfg.dataset, synthetic_shape=(64, 160, 160), seed=cfg.annotation_seed)
        offsets, n_nearest = affinity.OFFSETS_3D, affinity.N_NEAREST_3D
    elif data.is_image_collection(cfg.dataset):  # BBBC039 / CVPPP folder: lists of images
        coll = data.load_image_collection(cfg.dataset, cfg.train_fraction)
        first = lambda im: np.moveaxis(im, -1, 0) if im.ndim == 3 else im  # RGB: channels first
        sparse = [_annotate(lab, cfg, cfg.annotation_seed + i) for i, lab in enumerate(coll.train_labels)]
        return dict(raw_train=[first(i) for i in coll.train_images], raw_test=[first(i) for i in coll.test_images],
                    labels_train=coll.train_labels, labels_test=coll.test_labels, sparse_train=sparse,
                    offsets=affinity.OFFSETS_2D, n_nearest=affinity.N_NEAREST_2D, source=coll.source,
                    in_channels=3 if coll.train_images[0].ndim == 3 else 1)
    else:
        ds = data.load_image(cfg.dataset, synthetic_shape=(256, 512), seed=cfg.annotation_seed)
        offsets, n_nearest = affinity.OFFSETS_2D, affinity.N_NEAREST_2D
    raw_train, raw_test = _split(ds.raw, cfg.train_fraction, cfg.dim)
    lab_train, lab_test = _split(ds.labels, cfg.train_fraction, cfg.dim)
    sparse = _annotate(lab_train, cfg, cfg.annotation_seed)
    return dict(raw_train=raw_train, raw_test=raw_test, labels_train=lab_train, labels_test=lab_test,
                sparse_train=sparse, offsets=offsets, n_nearest=n_nearest, source=ds.source, in_channels=1)


def _annotate(labels, cfg: TrainConfig, seed: int):
    if cfg.voxel_budget is not None:
        return data.annotate_instances(labels, cfg.annotation, voxel_budget=cfg.voxel_budget, seed=seed,
                                       min_size=cfg.min_size)
    return data.annotate_instances(labels, cfg.annotation, fraction=cfg.sparsity, seed=seed, min_size=cfg.min_size)


# ---------------------------------------------------------------- checkpoints
def build_models(cfg: TrainConfig) -> dict[str, torch.nn.Module]:
    """f(θ2) always (the inference branch); f(θ1) too for ``crac``."""
    suffix = "3d" if cfg.dim == 3 else "2d"
    nets = {"embedding": models.build(f"embedding{suffix}", widths=cfg.widths, in_channels=cfg.in_channels)}
    if cfg.method == "crac":
        nets["affinity"] = models.build(f"affinity{suffix}", widths=cfg.widths, in_channels=cfg.in_channels)
    return nets


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_log(rows: list[dict], out_dir: Path, name: str = "losses.csv") -> None:
    """A CSV log, rewritten whole and atomically."""
    if not rows:
        return
    tmp = out_dir / f"{name}.part"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out_dir / name)


def load_checkpoint(path, device="cpu") -> tuple[dict[str, torch.nn.Module], TrainConfig, dict]:
    """Models (in eval mode), config and the raw checkpoint dict from a file
    written by :func:`train`."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    ckpt = torch.load(p, map_location=device, weights_only=False)
    cfg = TrainConfig(**ckpt["config"])
    nets = build_models(cfg)
    for name, net in nets.items():
        net.load_state_dict(ckpt["models"][name])
        net.to(device).eval()
    return nets, cfg, ckpt


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def validate(net: torch.nn.Module, prepared: dict, cfg: TrainConfig) -> dict:
    """Scores of f(θ2) on the test part: VOI / ARAND (3D, waterz at the best
    threshold) or AJI / PQ (2D, mutex watershed)."""
    from .evaluate import evaluate_2d, evaluate_3d
    from .inference import predict_affinities
    from .predict import default_tile

    raw, labels = prepared["raw_test"], prepared["labels_test"]
    if isinstance(raw, list):  # an image collection: score the first test image
        raw, labels = raw[0], labels[0]
    tile = default_tile(labels.shape, cfg.patch, net.divisor)
    affs = predict_affinities(net, raw, prepared["offsets"], tile=tile, with_entropy=False)  # restores train mode
    if cfg.dim == 3:
        s = evaluate_3d(affs, labels)
        return {"val_voi": s["voi"], "val_voi_split": s["voi_split"], "val_voi_merge": s["voi_merge"],
                "val_arand": s["arand"]}
    s = evaluate_2d(affs, labels, prepared["offsets"])
    return {"val_aji": s["aji"], "val_pq": s["pq"], "val_dice": s["dice"]}


# ----------------------------------------------------------------------- loop
def train(cfg: TrainConfig, prepared: dict | None = None) -> dict:
    """Train as configured; returns a summary (paths, final losses, timings).

    ``prepared`` (from :func:`prepare_data`) lets a notebook share one loaded
    dataset between runs.
    """
    cfg.validate()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = distributed.setup(str(_device(cfg)))  # joins torchrun's process group, if any
    main_rank = distributed.is_main()  # rank 0 alone writes logs and checkpoints
    prepared = prepared or prepare_data(cfg)
    cfg.in_channels = prepared.get("in_channels", 1)
    offsets, n_nearest = prepared["offsets"], prepared["n_nearest"]
    full = cfg.method == "full_supervision"
    sampler = PatchSampler(
        prepared["raw_train"], prepared["labels_train"] if full else prepared["sparse_train"], offsets,
        patch=cfg.patch, sparse=not full, background_is_instance=cfg.dim == 2, widen=cfg.dim == 3,
        n_nearest=n_nearest, min_labeled=0.0 if full else cfg.min_labeled, augment=cfg.augment)

    torch.manual_seed(cfg.seed)
    # several ranks: DistributedDataParallel with synchronised batch norm; `plain`
    # holds the networks themselves (saved, validated, resumed on any rank count)
    nets = {k: distributed.wrap(v.to(device).train(), device) for k, v in build_models(cfg).items()}
    plain = {k: distributed.unwrap(v) for k, v in nets.items()}
    params = [p for net in nets.values() for p in net.parameters()]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas))
    cpsn = None
    if cfg.cpsn_checkpoint and cfg.method == "crac":
        from .cpsn import load_cpsn  # the CPSN issue provides it

        cpsn = load_cpsn(cfg.cpsn_checkpoint, device)
    start, log, val_log = 1, [], []
    last = out_dir / "last.pt"
    if cfg.resume and last.is_file():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        for name, net in plain.items():
            net.load_state_dict(ckpt["models"][name])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["torch_rng"])
        start, log, val_log = ckpt["iteration"] + 1, ckpt["log"], ckpt.get("val_log", [])

    def checkpoint(iteration: int, path: Path):
        if not main_rank:
            return
        _atomic_save({
            "models": {k: v.state_dict() for k, v in plain.items()},
            "optimizer": optimizer.state_dict(),
            "iteration": iteration,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": {"seed": cfg.seed, "iteration": iteration},  # samples are seeded by (seed, t, j)
            "config": dataclasses.asdict(cfg),
            "world_size": distributed.world_size(),
            "log": log,
            "val_log": val_log,
            "source": prepared["source"],
        }, path)

    from tqdm import tqdm

    bar = tqdm(range(start, cfg.iterations + 1), disable=not (cfg.progress and main_rank), desc=cfg.method,
               leave=False)
    t_start, running = time.time(), {}
    for t in bar:
        # 1. this rank's share of the global batch: sample j depends only on (seed, t, j)
        first = distributed.rank() * cfg.batch
        raw, target, mask, valid = (x.to(device) for x in sampler.sample(cfg.seed, t, first, cfg.batch))
        x = raw.unsqueeze(1) if raw.ndim == target.ndim - 1 else raw  # add the channel axis unless RGB

        # 2. f(θ2): embeddings -> affinities, supervised on the labeled region
        aff2 = affinity.affinities_from_embeddings(nets["embedding"](x), offsets)
        loss_sup2 = losses.weighted_mse(aff2, target, mask, n_nearest=n_nearest, nearest_weight=cfg.nearest_weight)
        loss = loss_sup2
        terms = {"sup2": loss_sup2.item()}

        # 3. crac: f(θ1) too, and the cross-consistency on the unlabeled region
        if cfg.method == "crac":
            aff1 = nets["affinity"](x)
            loss_sup1 = losses.weighted_mse(aff1, target, mask, n_nearest=n_nearest,
                                            nearest_weight=cfg.nearest_weight)
            extra1 = extra2 = None
            if cpsn is not None and t > cfg.cpsn_warmup:
                from .cpsn import cpsn_confidence

                extra1 = cpsn_confidence(cpsn, x, aff1.detach())
                extra2 = cpsn_confidence(cpsn, x, aff2.detach())
            loss_cross, info = losses.cross_consistency_loss(
                aff1, aff2, valid & ~mask, alpha=losses.alpha_schedule(t, cfg.iterations, cfg.alpha0),
                n_nearest=n_nearest, nearest_weight=cfg.nearest_weight, detach_targets=cfg.detach_targets,
                release_double_weight=cfg.release_double_weight,
                extra_confidence1=extra1, extra_confidence2=extra2)
            loss = loss + loss_sup1 + cfg.lambda_cross * loss_cross
            terms.update(sup1=loss_sup1.item(), cross=loss_cross.item(), **info)
        terms["total"] = loss.item()
        terms = distributed.mean_over_ranks(terms)  # each rank holds its share of the global mean

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
            val_log.append({"iteration": t, **validate(plain["embedding"], prepared, cfg)})
            _write_log(val_log, out_dir, "validation.csv")
        if t in cfg.snapshot_iters:
            checkpoint(t, out_dir / f"snapshot_{t:07d}.pt")
        if t % cfg.checkpoint_every == 0 or t == cfg.iterations:
            checkpoint(t, last)
            if main_rank:
                _write_log(log, out_dir)
    bar.close()
    summary = {"out_dir": str(out_dir), "checkpoint": str(last), "iterations": cfg.iterations,
               "seconds": time.time() - t_start, "last_losses": log[-1] if log else {},
               "source": prepared["source"]}
    if main_rank:
        tmp = out_dir / "summary.json.part"
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, out_dir / "summary.json")
    distributed.barrier()  # no rank leaves before rank 0 has written everything
    return summary


def run_config_cli(argv, *, prog: str, description: str, cls, run) -> int:
    """The command line shared by the training entry points: a YAML file and
    ``--set key=value`` overrides become a ``cls`` config, ``run(config)`` returns a
    summary printed as JSON. Bad configs and data exit with status 2 and a message."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", nargs="?", help=f"YAML file with {cls.__name__} keys (optional)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set iterations=500 --set patch=8,64,64")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set, cls=cls)
        if args.print_config:
            print(json.dumps(dataclasses.asdict(cfg), indent=2))
            return 0
        summary = run(cfg)
    except (ValueError, FileNotFoundError) as err:  # bad config, or bad data found while loading
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()  # leave torchrun's process group, if joined
    print(json.dumps(summary, indent=2, default=str))
    return 0


def main(argv=None) -> int:
    return run_config_cli(argv, prog="python -m affcons_lib.train", description=__doc__.splitlines()[0],
                          cls=TrainConfig, run=train)


if __name__ == "__main__":
    raise SystemExit(main())
