"""The Confidence Pixel Selection Network (CPSN): learning where affinity
predictions go wrong.

Training data come from simulated mistakes (supplementary §1): snapshots of the
segmentation networks saved during training (:class:`SnapshotBank`), one drawn at
random each iteration and run with dropout of a random rate on its last two
layers, predict affinities of an annotated patch. Where the prediction, thresholded
at 0.5, disagrees with the target, the error target is 1:

    m = |1[a >= 0.5] - A_gt|     on the annotated region only.

The CPSN sees the image, one affinity channel and its entropy (I ⊕ A ⊕ H) and
predicts the probability E that the affinity is wrong; trained with binary
cross-entropy over the annotated region, error pixels up-weighted by the ratio of
correct to erroneous ones. In ``crac`` training, after a warm-up, only pixels with
E < 0.5 (and a passing entropy) enter the cross-consistency loss, for every channel.

    python -m affcons_lib cpsn CONFIG.yaml [--set key=value ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..method import affinity, losses, models
from . import checkpoint
from .. import distributed
from ..evaluation import metrics
from .config import TrainConfig
from .loop import TrainingLoop
from .sampling import PatchSampler, PreparedData, prepare_data

__all__ = ["SnapshotBank", "snapshot_affinities", "error_target", "cpsn_input", "cpsn_loss", "CPSNConfig",
           "train_cpsn", "HeldoutPatches", "load_cpsn", "cpsn_confidence", "predict_errors", "heldout_patches",
           "OwnTaskScores", "own_task_scores", "compare_filters", "precision_recall"]

PAPER_SNAPSHOTS = (1000, 5000, 10000, 50000, 100000)
RELEASE_SNAPSHOTS = tuple(range(1000, 20001, 1000))


class SnapshotBank:
    """Segmentation networks saved during training, loaded lazily.

    Parameters
    ----------
    run_dir : str or Path
        A training run's ``out_dir`` holding ``snapshot_NNNNNNN.pt`` files.
    iterations : sequence of int, optional
        Which snapshots to use (paper: 1k, 5k, 10k, 50k, 100k; release: 1k-20k);
        default: every snapshot in the folder. A requested one that is missing is
        an error naming the file.
    branches : sequence of str
        ``("embedding", "affinity")`` (paper: both branches) or ``("embedding",)``
        (release).
    max_dropout : float
        Each draw sets dropout on the last two layers to a rate in [0, max_dropout].
    """

    def __init__(self, run_dir, iterations=None, branches=("embedding", "affinity"), max_dropout: float = 0.1,
                 device="cpu"):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise FileNotFoundError(f"snapshot folder not found: {self.run_dir}")
        if iterations is None:
            files = sorted(self.run_dir.glob("snapshot_*.pt"))
            if not files:
                raise FileNotFoundError(f"{self.run_dir}: no snapshot_*.pt files (train with snapshot_iters=...)")
        else:
            files = [self.run_dir / f"snapshot_{int(t):07d}.pt" for t in iterations]
            for f in files:
                if not f.is_file():
                    raise FileNotFoundError(f"snapshot not found: {f}")
        self.files, self.branches, self.device = files, tuple(branches), device
        if not 0 <= max_dropout < 1:
            raise ValueError(f"max_dropout: expected a rate in [0, 1), got {max_dropout}")
        self.max_dropout = max_dropout
        self._cache: dict = {}
        self.entries = [(f, b) for f in files for b in self.branches]

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, path: Path):
        if path not in self._cache:
            if len(self._cache) >= 4:  # a few in memory at a time
                self._cache.pop(next(iter(self._cache)))
            self._cache[path] = checkpoint.load_checkpoint(path, self.device)[0]  # networks in eval mode
        return self._cache[path]

    def draw(self, rng: np.random.Generator):
        """One snapshot network, with dropout of a random rate that stays active in
        eval mode; deterministic given ``rng``. Returns (network, description)."""
        path, branch = self.entries[int(rng.integers(len(self.entries)))]
        nets = self._load(path)
        if branch not in nets:
            raise ValueError(f"{path}: holds {sorted(nets)}, not the {branch!r} branch (train with method=crac)")
        net = nets[branch]
        rate = float(rng.uniform(0, self.max_dropout))
        net.set_dropout(rate, always_on=True)
        theta = "f(θ2)" if branch == "embedding" else "f(θ1)"
        iteration = int(path.stem.split("_")[-1]) if path.stem.startswith("snapshot_") else path.stem
        return net, f"{theta} after {iteration} iterations, dropout {rate:.3f}"


def snapshot_affinities(snapshot: torch.nn.Module, image: torch.Tensor, offsets) -> torch.Tensor:
    """Affinities (N, C, *S) of a snapshot network drawn from a :class:`SnapshotBank`,
    whichever branch it is (embeddings become affinities by cosine similarity);
    no gradient."""
    with torch.no_grad():
        out = snapshot(image)
        return affinity.affinities_from_embeddings(out, offsets) if snapshot.kind == "embedding" else out


def error_target(aff: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """m = |1[a >= 0.5] - A_gt| on the annotated region, 0 elsewhere (float)."""
    return affinity.wrong_side(aff, target).float() * mask.float()


def cpsn_input(image: torch.Tensor, aff: torch.Tensor) -> torch.Tensor:
    """Stack I ⊕ A_c ⊕ H_c for every affinity channel c.

    image (N, 1, *S), aff (N, C, *S) -> (N*C, 3, *S): channel c of sample n is row
    n*C + c.
    """
    n, c = aff.shape[:2]
    img = image.expand(n, c, *image.shape[2:])
    x = torch.stack([img, aff, affinity.affinity_entropy(aff)], dim=2)  # N, C, 3, *S
    return x.reshape(n * c, 3, *aff.shape[2:])


def cpsn_loss(pred: torch.Tensor, error: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the annotated region; error pixels weighted by
    (#correct / #error) so both classes count alike. Pixels outside ``mask``
    contribute nothing."""
    m = mask.float()
    # class counts and the mean over the global batch under torchrun
    n_err, n_ok = distributed.global_sum(torch.stack([(error * m).sum(), ((1 - error) * m).sum()]))
    w_err = (n_ok / n_err.clamp_min(1.0)).clamp_min(1.0)
    weight = m * torch.where(error > 0.5, w_err, torch.ones_like(error))
    bce = F.binary_cross_entropy(pred.clamp(1e-6, 1 - 1e-6), error, reduction="none")
    return distributed.global_mean((weight * bce).sum(), m.sum())


@dataclass
class CPSNConfig:
    """A CPSN training run. Data, patches and offsets follow the segmentation run
    in ``snapshot_dir`` (its saved config)."""

    snapshot_dir: str = "runs/train"
    snapshot_iters: tuple | None = None  # None: every snapshot in the folder
    branches: tuple = ("embedding", "affinity")
    max_dropout: float = 0.1
    channels_per_step: int = 0  # affinity channels the CPSN learns from per step (0: all); fewer = faster steps
    widths: tuple = (8, 16, 32)
    iterations: int = 200
    batch: int = 2
    lr: float = 1e-4
    seed: int = 0
    out_dir: str = "runs/cpsn"
    checkpoint_every: int = 50
    log_every: int = 10
    resume: bool = False
    device: str = "auto"
    progress: bool = False

    def __post_init__(self):
        for name in ("snapshot_iters", "branches", "widths"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))


def _seg_config(snapshot_dir: Path) -> TrainConfig:
    files = sorted(Path(snapshot_dir).glob("snapshot_*.pt")) or sorted(Path(snapshot_dir).glob("last.pt"))
    if not files:
        raise FileNotFoundError(f"{snapshot_dir}: no snapshot_*.pt or last.pt")
    return TrainConfig.from_saved(checkpoint.read_checkpoint(files[0])["config"])


def train_cpsn(cfg: CPSNConfig, prepared: PreparedData | None = None) -> dict:
    """Train a CPSN on errors simulated by the snapshot bank; atomic checkpoints,
    ``losses.csv`` and exact resume by :class:`~affcons_lib.training.loop.TrainingLoop`,
    as :func:`affcons_lib.training.train.train` has them."""
    seg_cfg = _seg_config(Path(cfg.snapshot_dir))
    loop = TrainingLoop(cfg, "cpsn")
    device = loop.device
    prepared = prepared or prepare_data(seg_cfg)
    offsets = prepared.offsets
    bank = SnapshotBank(cfg.snapshot_dir, cfg.snapshot_iters, cfg.branches, cfg.max_dropout, device)
    sampler = PatchSampler(prepared.raw_train, prepared.sparse_train, offsets, patch=seg_cfg.patch,
                           sparse=True, background_is_instance=False, widen=seg_cfg.dim == 3,
                           n_nearest=prepared.n_nearest, min_labeled=seg_cfg.min_labeled)
    loop.open()
    torch.manual_seed(cfg.seed)
    net = distributed.wrap(models.build("cpsn3d" if seg_cfg.dim == 3 else "cpsn2d", widths=cfg.widths)
                           .to(device).train(), device)
    plain = {"cpsn": distributed.unwrap(net)}
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    start, _ = loop.resume(plain, opt)
    for t in loop.iterations(start):
        # samples: this rank's share of the global batch; snapshot and channels: one
        # draw per iteration, shared by all ranks
        first = distributed.rank() * cfg.batch
        raw, target, mask, _ = (x.to(device) for x in sampler.sample(cfg.seed, t, first, cfg.batch))
        rng = np.random.default_rng([cfg.seed, t])
        image = raw.unsqueeze(1)
        snapshot, _ = bank.draw(rng)
        aff = snapshot_affinities(snapshot, image, offsets)
        if 0 < cfg.channels_per_step < aff.shape[1]:
            pick = torch.from_numpy(np.sort(rng.choice(aff.shape[1], cfg.channels_per_step, replace=False)))
            aff, target, mask = aff[:, pick], target[:, pick], mask[:, pick]
        err = error_target(aff, target, mask)
        loss = cpsn_loss(net(cpsn_input(image, aff)).reshape(aff.shape), err, mask)
        wrong, edges = distributed.global_sum(torch.stack([err.sum(), mask.sum().to(err.dtype)]))  # all ranks
        loop.step(t, loss, {"loss": loss.item(), "error_rate": (wrong / edges.clamp_min(1)).item()}, opt)
        loop.checkpoint(t, plain, opt, widths=cfg.widths, dim=seg_cfg.dim)
    summary = loop.finish({"iterations": cfg.iterations})
    return {**summary, "last": summary["last_losses"]}


def load_cpsn(path, device="cpu") -> torch.nn.Module:
    """A trained CPSN (eval mode, dropout off) from :func:`train_cpsn`'s checkpoint."""
    ckpt = checkpoint.read_checkpoint(path, device, keys=("dim", "widths"))
    net = models.build("cpsn3d" if ckpt["dim"] == 3 else "cpsn2d", widths=tuple(ckpt["widths"]))
    if "models" not in ckpt and "model" not in ckpt:
        raise ValueError(f"{path}: not a CPSN checkpoint (no weights)")
    net.load_state_dict(ckpt["models"]["cpsn"] if "models" in ckpt else ckpt["model"])  # "model": schema 0
    return net.to(device).eval()


@torch.no_grad()
def predict_errors(cpsn: torch.nn.Module, image: torch.Tensor, aff: torch.Tensor) -> torch.Tensor:
    """E, the predicted probability that each affinity is wrong: (N, C, *S)."""
    return cpsn(cpsn_input(image, aff)).reshape(aff.shape)


def cpsn_confidence(cpsn: torch.nn.Module, image: torch.Tensor, aff: torch.Tensor) -> torch.Tensor:
    """Bool mask of the affinities the CPSN calls correct (E < 0.5), every channel."""
    return predict_errors(cpsn, image, aff) < 0.5


@dataclass
class HeldoutPatches:
    """Patches of the training part for measuring the filters (:func:`heldout_patches`).

    Attributes
    ----------
    raw : float tensor (N, *patch)
    target : float tensor (N, C, *patch)
        The dense affinity targets, the truth of every edge (borders widened in 3D).
    labeled : bool tensor (N, C, *patch)
        The labeled region M of the sparse annotation (what the CPSN and the
        supervised losses see).
    unlabeled : bool tensor (N, C, *patch)
        The valid edges outside M, where ``crac``'s cross-consistency acts.
    """

    raw: torch.Tensor
    target: torch.Tensor
    labeled: torch.Tensor
    unlabeled: torch.Tensor


def heldout_patches(prepared: PreparedData, patch, count: int, seed: int, *, min_labeled: float = 0.0,
                    max_tries: int = 200) -> HeldoutPatches:
    """``count`` patches of the training part for measuring the filters, drawn as
    :class:`~affcons_lib.training.sampling.PatchSampler` draws them but from their own
    generator (``seed``), not from a training run's sample stream, and not
    augmented. As in training, a patch whose labeled region holds less than
    ``min_labeled`` of its edges is drawn again: training's filters act on such
    patches. Targets are computed as training computes them
    (:func:`affcons_lib.method.affinity.training_targets`)."""
    if prepared.collection or prepared.in_channels != 1:
        raise ValueError("heldout_patches: expected one grey-value volume or image as the training part, "
                         "not an image collection or RGB")
    raw, dense, sparse = prepared.raw_train[0], prepared.labels_train[0], prepared.sparse_train[0]
    patch = tuple(int(p) for p in patch)
    if len(patch) != dense.ndim or any(p > n for p, n in zip(patch, dense.shape)):
        raise ValueError(f"patch: expected {dense.ndim} sizes within the training part {dense.shape}, got {patch}")
    if count < 1:
        raise ValueError(f"count: expected at least one patch, got {count}")
    sampler = PatchSampler(raw, dense, prepared.offsets, patch=patch, sparse=False, background_is_instance=False,
                           widen=dense.ndim == 3, n_nearest=prepared.n_nearest, augment=False)
    rng = np.random.default_rng([seed, 7919])  # a stream no training run draws from
    items = []
    for _ in range(count * max_tries):
        _, box = sampler.draw_region(rng)
        target, valid, labeled = affinity.training_targets(dense[box], prepared.offsets, widen=sampler.widen,
                                                           annotated=sparse[box])
        if labeled.mean() < min_labeled:
            continue
        items.append((raw[box].astype(np.float32), target, labeled, valid & ~labeled))
        if len(items) == count:
            break
    else:
        raise RuntimeError(f"heldout_patches: {len(items)} of {count} patches with at least {min_labeled:.1%} "
                           f"labeled edges in {count * max_tries} draws: lower min_labeled")
    return HeldoutPatches(*(torch.from_numpy(np.stack(x)) for x in zip(*items)))


def _lowest(values: torch.Tensor, region: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per channel c, the ``counts[c]`` edges of ``region`` with the lowest
    ``values`` (ties in index order); (1, C, *S) tensors."""
    keep = torch.zeros_like(region)
    for c in range(region.shape[1]):
        idx = region[0, c].flatten().nonzero().squeeze(1)
        order = torch.argsort(values[0, c].flatten()[idx], stable=True)[:int(counts[c])]
        keep[0, c].view(-1)[idx[order]] = True
    return keep


def _ap(scores: torch.Tensor, errors: torch.Tensor) -> float:
    """Average precision of ranking ``errors`` by ``scores``; NaN when there is nothing to rank."""
    e = errors.numpy().astype(bool)
    return metrics.precision_recall(scores.numpy(), e)[2] if 0 < e.sum() < e.size else float("nan")


@dataclass
class OwnTaskScores:
    """The CPSN on its own task (:func:`own_task_scores`): finding the errors of
    bank snapshots (with dropout, as in its training) on the labeled region.

    Attributes
    ----------
    per_patch : list of dict
        ``patch``, ``snapshot``, ``error_rate``, ``ap_cpsn``, ``ap_entropy`` for
        each patch holding both right and wrong edges.
    errors, cpsn, entropy : ndarray
        Pooled over the labeled edges of all patches: wrong (1) or right (0), the
        CPSN's error probability E, the snapshot's entropy.
    """

    per_patch: list
    errors: np.ndarray
    cpsn: np.ndarray
    entropy: np.ndarray


@torch.no_grad()
def own_task_scores(net: torch.nn.Module, bank: SnapshotBank, patches: HeldoutPatches, offsets,
                    seed: int) -> OwnTaskScores:
    """Each held-out patch through one snapshot of ``bank`` (drawn from ``seed``),
    the CPSN ``net`` and the entropy asked to find the snapshot's wrong affinities
    on the labeled region, where the CPSN was trained to."""
    image = patches.raw.unsqueeze(1)
    rng = np.random.default_rng(seed)
    per_patch, pooled = [], []
    for k in range(image.shape[0]):
        snap, name = bank.draw(rng)
        aff = snapshot_affinities(snap, image[k:k + 1], offsets)
        m = patches.labeled[k:k + 1]
        err = error_target(aff, patches.target[k:k + 1], m)[m].numpy()
        e, h = predict_errors(net, image[k:k + 1], aff)[m].numpy(), affinity.affinity_entropy(aff)[m].numpy()
        pooled.append((err, e, h))
        if 0 < err.sum() < err.size:
            per_patch.append(dict(patch=k, snapshot=name, error_rate=err.mean(),
                                  ap_cpsn=precision_recall(e, err)[2], ap_entropy=precision_recall(h, err)[2]))
    errors, e_all, h_all = map(np.concatenate, zip(*pooled))
    return OwnTaskScores(per_patch, errors, e_all, h_all)


@torch.no_grad()
def compare_filters(cpsn: torch.nn.Module, networks: dict, patches: HeldoutPatches, offsets,
                    alpha: float) -> list[dict]:
    """Entropy + CPSN against entropy alone, where ``crac``'s filter acts.

    For each patch of :func:`heldout_patches` and each trained network (dropout
    off; ``{"f(θ1)": net, "f(θ2)": net}``, the branches whose affinities become the
    other's targets), on the unlabeled region:

    * ``kept``: the share of edges the training filter keeps, entropy not among
      the top ``alpha`` per channel and CPSN error probability E < 0.5;
    * ``error_cpsn``: the share of wrong affinities (thresholded at 0.5, against
      the dense truth) among those kept edges;
    * ``error_entropy``: the same for entropy alone keeping as many edges, per
      channel (the lowest entropies): a matched share, so the two differ only in
      *which* edges they keep;
    * ``error_all``: the share of wrong affinities on the whole unlabeled region;
    * ``ap_cpsn_unlabeled`` / ``ap_entropy_unlabeled`` and ``..._labeled``: the
      average precision of finding the wrong affinities by ranking E or the
      entropy, on the unlabeled region and on the labeled region M (where the
      CPSN was trained); NaN where a region holds no edge, no wrong edge or
      only wrong ones (a ranking has nothing to find).

    Returns one record per (patch, network).
    """
    image, target = patches.raw.unsqueeze(1), patches.target
    records = []
    for name, net in networks.items():
        was_training = net.training
        net.eval()
        try:
            aff = torch.cat([snapshot_affinities(net, image[k:k + 2], offsets) for k in range(0, len(image), 2)])
            errors_prob = torch.cat([predict_errors(cpsn, image[k:k + 2], aff[k:k + 2])
                                     for k in range(0, len(image), 2)])
        finally:
            net.train(was_training)
        entropy = affinity.affinity_entropy(aff)
        wrong = affinity.wrong_side(aff, target)
        for k in range(len(image)):
            one = slice(k, k + 1)
            unl, lab = patches.unlabeled[one], patches.labeled[one]
            both = losses.confident_mask(entropy[one], unl, alpha) & (errors_prob[one] < 0.5)
            alone = _lowest(entropy[one], unl, both.sum(dim=tuple(d for d in range(both.ndim) if d != 1)))
            w = wrong[one]
            records.append({
                "patch": k, "network": name, "unlabeled_edges": int(unl.sum()),
                "kept": float(both.sum() / unl.sum().clamp_min(1)),
                "error_cpsn": float(w[both].float().mean()) if both.any() else float("nan"),
                "error_entropy": float(w[alone].float().mean()) if alone.any() else float("nan"),
                "error_all": float(w[unl].float().mean()) if unl.any() else float("nan"),
                "ap_cpsn_unlabeled": _ap(errors_prob[one][unl], w[unl]),
                "ap_entropy_unlabeled": _ap(entropy[one][unl], w[unl]),
                "ap_cpsn_labeled": _ap(errors_prob[one][lab], w[lab]),
                "ap_entropy_labeled": _ap(entropy[one][lab], w[lab]),
            })
    return records


def precision_recall(scores: np.ndarray, errors: np.ndarray):
    """Precision and recall of flagging the highest-scoring pixels as errors, at
    every cut-off, and the average precision (:func:`affcons_lib.evaluation.metrics.precision_recall`).
    ``scores``: higher = more likely wrong."""
    if np.asarray(errors).sum() == 0:
        raise ValueError("errors: no error pixel, precision and recall are undefined")
    return metrics.precision_recall(scores, errors)
