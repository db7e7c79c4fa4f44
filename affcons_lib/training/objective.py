"""The objective of one training step, term by term.

For a batch x with affinity targets y on the labeled region M (``mask``) and the
valid edges outside it U = valid \\ M (the unlabeled region):

    f(θ2):  a2 = max(0, cos(e_i, e_j)),  e = f(θ2)(x)       embeddings -> affinities
    L_sup2 = weighted MSE(a2, y) on M                       every method
    f(θ1):  a1 = f(θ1)(x)                                   crac only
    L_sup1 = weighted MSE(a1, y) on M
    H(a)   = -a log a - (1 - a) log(1 - a)                  affinity entropy
    C_k    = U minus the top α_t share of H(a_k)            where branch k may teach
    L_cross = MSE(a2, sg(a1)) on C_1 + MSE(a1, sg(a2)) on C_2
    L      = L_sup2 + L_sup1 + λ L_cross

:func:`step_objective` computes it all from the networks and one batch and keeps
every intermediate map (:class:`StepObjective`): the training loop
(:func:`affcons_lib.training.train.train`) takes ``.total`` and ``.log_terms()``, notebook
``00b_crac_step`` shows each map beside its equation.
"""

from __future__ import annotations

import dataclasses

import torch

from ..method import affinity, losses
from .config import TrainConfig
from .cpsn import cpsn_confidence
from ..method.models import autocast

__all__ = ["StepObjective", "step_objective"]


@dataclasses.dataclass
class StepObjective:
    """Everything one step computes (tensors shaped (N, C, *spatial) unless said).

    Attributes
    ----------
    total : scalar tensor
        L, what the optimiser minimises.
    supervised2 : scalar tensor
        L_sup2, f(θ2) against the targets on the labeled region M.
    cosine2, affinity2 : float tensors
        f(θ2)'s cosine similarities (clipped at 0 unless ``cosine="raw"``) and its
        affinities (always clipped).
    supervised1 : scalar tensor or None
        L_sup1 (``crac`` only), like every field below.
    affinity1 : float tensor or None
        f(θ1)'s affinities.
    alpha : float or None
        α_t of :func:`~affcons_lib.method.losses.alpha_schedule` at this iteration.
    cross : :class:`~affcons_lib.method.losses.CrossTerms` or None
        The two cross terms, both entropy maps and both masks of confident pixels.
    cpsn1, cpsn2 : bool tensors or None
        The CPSN's "correct" masks for each branch, where a CPSN filter is on.
    unlabeled : bool tensor or None
        U, the valid edges outside M, where the cross terms act.
    """

    total: torch.Tensor
    supervised2: torch.Tensor
    cosine2: torch.Tensor
    affinity2: torch.Tensor
    supervised1: torch.Tensor | None = None
    affinity1: torch.Tensor | None = None
    alpha: float | None = None
    cross: losses.CrossTerms | None = None
    cpsn1: torch.Tensor | None = None
    cpsn2: torch.Tensor | None = None
    unlabeled: torch.Tensor | None = None

    def log_terms(self) -> dict[str, float]:
        """The numbers a training log keeps: ``sup2`` (and for ``crac`` ``sup1``,
        ``cross``, ``confident1``, ``confident2``), then ``total``."""
        terms = {"sup2": self.supervised2.item()}
        if self.cross is not None:
            terms.update(sup1=self.supervised1.item(), cross=self.cross.loss.item(),
                         **losses.confident_shares(self.cross, self.unlabeled))
        terms["total"] = self.total.item()
        return terms


def step_objective(cfg: TrainConfig, nets: dict, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                   valid: torch.Tensor, offsets, n_nearest: int, iteration: int, *, precision: str = "fp32",
                   cpsn: torch.nn.Module | None = None) -> StepObjective:
    """The loss of one step of ``cfg.method`` and its parts.

    Parameters
    ----------
    cfg : TrainConfig
        Method, weights (``nearest_weight``, ``lambda_cross``, ``alpha0``,
        ``iterations``) and the options of METHOD §10 (``cosine``,
        ``detach_targets``, ``release_double_weight``).
    nets : dict
        ``"embedding"`` (f(θ2)) and, for ``crac``, ``"affinity"`` (f(θ1)).
    x : float tensor (N, C_in, *spatial)
        The batch, channel axis included.
    target, mask, valid : tensors (N, C, *spatial)
        Affinity targets (float), the labeled region M and the valid edges (bool),
        one channel per offset.
    offsets : sequence of offsets
        The offsets of the channels.
    n_nearest : int
        How many leading channels are nearest-neighbour ones (weighted by
        ``cfg.nearest_weight``).
    iteration : int
        t, for α_t.
    precision : "fp32" or "bf16"
        The networks run at it (:func:`~affcons_lib.method.models.autocast`); every loss
        is computed in float32.
    cpsn : module, optional
        A trained CPSN whose filter is on at this iteration.
    """
    with autocast(precision, x.device):
        emb = nets["embedding"](x)
        aff1 = nets["affinity"](x) if cfg.method == "crac" else None
    # with cosine="raw" the losses of f(θ2) see the cosine below 0 too (a negative
    # cosine with target 1 gets a gradient); its affinities stay clipped
    cos2 = affinity.affinities_from_embeddings(emb.float(), offsets, clip_negative=cfg.cosine == "clipped")
    aff2 = cos2 if cfg.cosine == "clipped" else cos2.clamp_min(0)
    sup2 = losses.weighted_mse(cos2, target, mask, n_nearest=n_nearest, nearest_weight=cfg.nearest_weight)
    if cfg.method != "crac":
        return StepObjective(sup2, sup2, cos2, aff2)
    aff1 = aff1.float()
    sup1 = losses.weighted_mse(aff1, target, mask, n_nearest=n_nearest, nearest_weight=cfg.nearest_weight)
    c1 = c2 = None
    if cpsn is not None:
        c1, c2 = cpsn_confidence(cpsn, x, aff1.detach()), cpsn_confidence(cpsn, x, aff2.detach())
    alpha = losses.alpha_schedule(iteration, cfg.iterations, cfg.alpha0)
    unlabeled = valid & ~mask
    cross = losses.cross_consistency_terms(
        aff1, aff2, unlabeled, alpha=alpha, n_nearest=n_nearest, nearest_weight=cfg.nearest_weight,
        detach_targets=cfg.detach_targets, release_double_weight=cfg.release_double_weight,
        extra_confidence1=c1, extra_confidence2=c2, pred2=cos2, directions=cfg.cross_terms)
    total = sup2 + sup1 + cfg.lambda_cross * cross.loss
    return StepObjective(total, sup2, cos2, aff2, sup1, aff1, alpha, cross, c1, c2, unlabeled)
