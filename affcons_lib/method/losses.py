"""Losses of the paper: supervised weighted MSE on the labeled region, affinity
entropy, the dynamic entropy filter and the cross-representation consistency.

All tensors are channel-first, ``(N, C, *spatial)``, one channel per offset.
Masks are bool tensors of the same shape.

Where the authors' release departs from the text (METHOD §10) an option says so;
the defaults follow the text.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .. import distributed
from .affinity import affinity_entropy

__all__ = ["channel_weights", "balance_weights", "weighted_mse", "alpha_schedule", "confident_mask", "CrossTerms", "cross_consistency_terms", "confident_shares", "cross_consistency_loss"]


def channel_weights(n_channels: int, n_nearest: int, nearest_weight: float = 10.0, device=None) -> torch.Tensor:
    """Per-channel loss weights: ``nearest_weight`` (×10 in the paper) on the
    nearest-neighbour channels, which waterz and the mutex watershed rely on most,
    1 elsewhere. Shape (C,)."""
    w = torch.ones(n_channels, device=device)
    w[:n_nearest] = nearest_weight
    return w


def balance_weights(target: torch.Tensor, mask: torch.Tensor, clip=(0.05, 0.99)) -> torch.Tensor:
    """Class-balancing weights per sample and channel.

    For each (sample, channel) the fraction ``r`` of positive targets inside the
    mask is clipped to ``clip``; the minority class gets weight
    ``max(r, 1-r) / min(r, 1-r)``, the majority class 1. Affinities are mostly 1,
    so boundary edges are up-weighted.

    Returns a tensor shaped like ``target``.
    """
    spatial = tuple(range(2, target.ndim))
    m = mask.to(target.dtype)
    n = m.sum(spatial, keepdim=True).clamp_min(1.0)
    r = ((target > 0.5).to(target.dtype) * m).sum(spatial, keepdim=True) / n
    r = r.clamp(*clip)
    factor = torch.maximum(r, 1 - r) / torch.minimum(r, 1 - r)
    pos = (target > 0.5).to(target.dtype)
    # up-weight whichever class is the minority in this sample and channel
    w_pos = torch.where(r < 0.5, factor, torch.ones_like(factor))
    w_neg = torch.where(r >= 0.5, factor, torch.ones_like(factor))
    return pos * w_pos + (1 - pos) * w_neg


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, n_nearest: int,
                 nearest_weight: float = 10.0, balance: bool = True) -> torch.Tensor:
    """Supervised loss on the labeled region M: class-balanced, channel-weighted
    mean squared error, averaged over the voxels of M.

    Parameters
    ----------
    pred, target : float tensors (N, C, *spatial)
    mask : bool tensor (N, C, *spatial)
        The labeled region; voxels outside it contribute nothing.
    n_nearest : int
        Number of leading nearest-neighbour channels weighted by ``nearest_weight``.
    balance : bool
        Apply :func:`balance_weights`.

    Returns
    -------
    scalar tensor; 0 (with a gradient) when the mask is empty. Under torchrun
    the mean is over the voxels of all ranks (see :mod:`affcons_lib.distributed`).
    """
    if pred.shape != target.shape or pred.shape != mask.shape:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} "
                         "must have the same shape")
    target = target.to(pred.dtype)
    w = balance_weights(target, mask) if balance else torch.ones_like(target)
    cw = channel_weights(pred.shape[1], n_nearest, nearest_weight, pred.device)
    w = w * cw.view(1, -1, *([1] * (pred.ndim - 2)))
    m = mask.to(pred.dtype)
    return distributed.global_mean((w * m * (pred - target) ** 2).sum(), m.sum())


def alpha_schedule(iteration: int, total: int, alpha0: float = 0.005, power: float = 1.5) -> float:
    """α_t = α0 (1 - t/T)^power: the share of most-uncertain pixels excluded from
    the cross-consistency loss, shrinking to 0 as training ends."""
    if total <= 0:
        raise ValueError(f"total: expected a positive number of iterations, got {total}")
    t = min(max(iteration, 0), total)
    return float(alpha0 * (1.0 - t / total) ** power)


def confident_mask(entropy: torch.Tensor, region: torch.Tensor, alpha: float) -> torch.Tensor:
    """Pixels of ``region`` whose entropy is not among the top ``alpha`` share of
    the entropies inside the region (per channel, over the batch; under torchrun
    over the batches of all ranks): the dynamic percentile filter. ``alpha = 0``
    keeps the whole region."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1), got {alpha}")
    keep = region.clone()
    if alpha == 0.0:
        return keep
    if not distributed.is_distributed():
        return keep & (entropy <= _channel_upper_quantiles(entropy, region, 1.0 - alpha))
    for c in range(entropy.shape[1]):
        values = distributed.gather_values(entropy[:, c][region[:, c]])
        if values.numel() == 0:
            continue
        keep[:, c] &= entropy[:, c] <= upper_quantile(values.float(), 1.0 - alpha)
    return keep


def _channel_upper_quantiles(entropy: torch.Tensor, region: torch.Tensor, q: float) -> torch.Tensor:
    """:func:`upper_quantile` of each channel's values inside ``region``, all
    channels in one ``topk`` (a loop over the channels took a twentieth of a small
    ``crac`` step). The same numbers: ``topk`` returns the values themselves, and
    the interpolation is the one :func:`upper_quantile` makes. Shape (1, C, 1, ...),
    ``inf`` for a channel with no value (it keeps its empty region)."""
    n_channels = entropy.shape[1]
    values = entropy.transpose(0, 1).reshape(n_channels, -1)
    inside = region.transpose(0, 1).reshape(n_channels, -1)
    n = inside.sum(1)
    position = q * (n - 1).clamp_min(0).double()
    lo = torch.minimum(position.floor().long(), n - 1)
    count = (n - lo).clamp_min(1)  # the top (n - lo) values hold the lo-th smallest
    top = torch.topk(torch.where(inside, values, -torch.inf), int(count.max()), dim=1, sorted=True).values
    below = top.gather(1, (count - 1)[:, None])[:, 0]
    above = top.gather(1, (count - 2).clamp_min(0)[:, None])[:, 0]
    above = torch.where(count >= 2, above, below)
    # per channel, the weight as upper_quantile makes it: a Python float to the dtype
    weight = (position - lo.double()).to(values.dtype)
    threshold = torch.where(n > 0, torch.lerp(below, above, weight), torch.inf)
    return threshold.view((1, n_channels) + (1,) * (entropy.ndim - 2))


def upper_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (linear interpolation) for a 1D tensor and a
    high ``q``, from the top ``(1 - q)`` share alone instead of a full sort: the
    entropy filter asks this of every channel at every step, where the sort took
    a sixth of a small ``crac`` step on the CPU (and ``torch.quantile`` refuses
    more than 2**24 values)."""
    n = values.numel()
    if n == 0 or not 0.0 <= q <= 1.0:
        raise ValueError(f"upper_quantile: expected values and q in [0, 1], got {n} values and q={q}")
    position = q * (n - 1)
    lo = min(int(math.floor(position)), n - 1)
    top = torch.topk(values, n - lo, sorted=True).values  # descending: top[-1] is the lo-th smallest
    below, above = top[-1], top[-2] if n - lo >= 2 else top[-1]
    return torch.lerp(below, above, torch.tensor(position - lo, dtype=values.dtype, device=values.device))


@dataclasses.dataclass
class CrossTerms:
    """The two cross-consistency terms of one step and what made them.

    Attributes
    ----------
    to_embedding, to_affinity : scalar tensors
        f(θ1) teaching f(θ2) where f(θ1) is confident, and f(θ2) teaching f(θ1).
    entropy1, entropy2 : float tensors (N, C, *spatial)
        H(a) of each branch's (detached) affinities.
    confident1, confident2 : bool tensors (N, C, *spatial)
        Where each branch may teach: the unlabeled region minus the top α share of
        its entropies (and minus the CPSN's flags, when given).
    """

    to_embedding: torch.Tensor
    to_affinity: torch.Tensor
    entropy1: torch.Tensor
    entropy2: torch.Tensor
    confident1: torch.Tensor
    confident2: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        return self.to_embedding + self.to_affinity


def cross_consistency_terms(aff1: torch.Tensor, aff2: torch.Tensor, unlabeled: torch.Tensor, *,
                            alpha: float, n_nearest: int, nearest_weight: float = 10.0,
                            detach_targets: bool = True, release_double_weight: bool = False,
                            extra_confidence1: torch.Tensor | None = None,
                            extra_confidence2: torch.Tensor | None = None,
                            pred2: torch.Tensor | None = None, directions: str = "both") -> CrossTerms:
    """Cross-representation affinity consistency on the unlabeled region, term by
    term (:class:`CrossTerms`); :func:`cross_consistency_loss` is their sum.

    f(θ1)'s affinities ``aff1`` are the soft target of f(θ2)'s ``aff2`` where
    ``aff1`` is confident, and vice versa: the target branch's entropy passes the
    dynamic percentile filter (and, when given, a CPSN filter ``extra_confidence``
    for that branch).

    Parameters
    ----------
    aff1, aff2 : float tensors (N, C, *spatial) in [0, 1]
    unlabeled : bool tensor (N, C, *spatial)
        Valid edges outside the labeled region M.
    alpha : float
        Current α_t of :func:`alpha_schedule`.
    detach_targets : bool, default True
        The text treats each branch's prediction as a fixed pseudo-target (no
        gradient through it). The release does not detach (METHOD §10.5): set
        False to let gradients flow into both branches from each term.
    release_double_weight : bool, default False
        The release applies the ×10 nearest-neighbour weight twice in the term
        that supervises the embedding branch (METHOD §10.4).
    pred2 : float tensor like ``aff2``, optional
        What f(θ2) is scored with where f(θ1) teaches it, if not ``aff2``: the
        raw cosine in [-1, 1] (``TrainConfig.cosine="raw"``, as the release
        trains). ``aff2`` stays the clipped affinity whose entropy and values
        teach f(θ1).
    directions : "both", "to_embedding" or "to_affinity"
        Which terms act (the ablation of each direction): the other is 0.
    """
    if directions not in ("both", "to_embedding", "to_affinity"):
        raise ValueError(f"directions: expected 'both', 'to_embedding' or 'to_affinity', got {directions!r}")
    h1, h2 = affinity_entropy(aff1.detach()), affinity_entropy(aff2.detach())
    conf1 = confident_mask(h1, unlabeled, alpha)
    conf2 = confident_mask(h2, unlabeled, alpha)
    if extra_confidence1 is not None:
        conf1 &= extra_confidence1
    if extra_confidence2 is not None:
        conf2 &= extra_confidence2
    t1 = aff1.detach() if detach_targets else aff1
    t2 = aff2.detach() if detach_targets else aff2
    # f(θ2) learns from f(θ1) where f(θ1) is confident; f(θ1) from f(θ2) likewise
    w_emb = nearest_weight ** 2 if release_double_weight else nearest_weight
    to_embedding = weighted_mse(aff2 if pred2 is None else pred2, t1, conf1, n_nearest=n_nearest,
                                nearest_weight=w_emb, balance=False)
    to_affinity = weighted_mse(aff1, t2, conf2, n_nearest=n_nearest, nearest_weight=nearest_weight, balance=False)
    if directions == "to_embedding":
        to_affinity = torch.zeros_like(to_affinity)
    elif directions == "to_affinity":
        to_embedding = torch.zeros_like(to_embedding)
    return CrossTerms(to_embedding, to_affinity, h1, h2, conf1, conf2)


def confident_shares(terms: CrossTerms, unlabeled: torch.Tensor) -> dict:
    """The share of the unlabeled region each branch may teach (over all ranks):
    ``{"confident1": ..., "confident2": ...}``, the numbers the training log keeps."""
    counts = distributed.global_sum(torch.stack([unlabeled.sum(), terms.confident1.sum(), terms.confident2.sum()]))
    n = counts[0].clamp_min(1).item()
    return {"confident1": counts[1].item() / n, "confident2": counts[2].item() / n}


def cross_consistency_loss(aff1: torch.Tensor, aff2: torch.Tensor, unlabeled: torch.Tensor, **options
                           ) -> tuple[torch.Tensor, dict]:
    """The sum of the two terms of :func:`cross_consistency_terms` (same
    arguments) and the share of confident pixels per branch
    (:func:`confident_shares`)."""
    terms = cross_consistency_terms(aff1, aff2, unlabeled, **options)
    return terms.loss, confident_shares(terms, unlabeled)
