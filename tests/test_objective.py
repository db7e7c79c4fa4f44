"""objective.step_objective, the loss the training loop minimises, equals the
paper's equations computed directly (the checks notebook 00b_crac_step makes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affcons_lib.method import affinity
from affcons_lib.training import checkpoint, objective, train
from affcons_lib.training.sampling import training_sampler
from affcons_lib.training.config import TrainConfig, load_config
from affcons_lib.training.sampling import prepare_data


def supervised_direct(a, y, m, n_nearest, nearest_weight):
    axes = tuple(range(2, a.ndim))
    positive = y > 0.5
    r = np.clip((positive & m).sum(axes, keepdims=True) / np.maximum(m.sum(axes, keepdims=True), 1), 0.05, 0.99)
    minority = np.where(r < 0.5, positive, ~positive)
    b = np.where(minority, np.maximum(r, 1 - r) / np.minimum(r, 1 - r), 1.0)
    w = np.where(np.arange(a.shape[1]) < n_nearest, nearest_weight, 1.0).reshape((1, -1) + (1,) * len(axes))
    return (w * b * m * (a - y) ** 2).sum() / m.sum()


def cosine_direct(emb, offsets):
    e = emb / np.maximum(np.sqrt((emb ** 2).sum(1, keepdims=True)), 1e-6)
    out = np.zeros((emb.shape[0], len(offsets)) + emb.shape[2:], np.float32)
    for c, o in enumerate(offsets):
        at_v = tuple(slice(-d, None) if d < 0 else slice(None) for d in o)
        at_nb = tuple(slice(None, d) if d < 0 else slice(None) for d in o)
        out[(slice(None), c) + at_v] = (e[(slice(None), slice(None)) + at_v] * e[(slice(None), slice(None)) + at_nb]).sum(1)
    return out


def entropy_direct(a, eps=1e-6):
    a = np.clip(a, eps, 1 - eps)
    return -(a * np.log(a) + (1 - a) * np.log(1 - a))


def confident_direct(h, region, alpha):
    keep = region.copy()
    for c in range(h.shape[1]):
        values = h[:, c][region[:, c]]
        if alpha > 0 and values.size:
            keep[:, c] &= h[:, c] <= np.quantile(values, 1 - alpha)
    return keep


@pytest.fixture(scope="module")
def batch():
    cfg = load_config(None, dict(dataset="synthetic", method="crac", widths=(4, 8), patch=(4, 32, 32),
                                       iterations=100, alpha0=0.2, min_labeled=0.0, precision="fp32"))
    prepared = prepare_data(cfg)
    raw, target, mask, valid = training_sampler(cfg, prepared).sample(0, 1, 0, 2)
    return cfg, prepared, raw.unsqueeze(1), target, mask, valid


@pytest.mark.parametrize("cosine", ["clipped", "raw"])
def test_step_objective_equals_the_equations(batch, cosine):
    cfg, prepared, x, target, mask, valid = batch
    cfg = TrainConfig(**{**cfg.__dict__, "cosine": cosine})
    torch.manual_seed(0)
    nets = checkpoint.build_models(cfg)
    t = 30  # alpha_t = 0.2 (1 - 0.3)^1.5: the filter drops about a tenth of U
    with torch.no_grad():
        step = objective.step_objective(cfg, nets, x, target, mask, valid, prepared.offsets,
                                        prepared.n_nearest, t)
        emb = nets["embedding"](x).numpy()
    y, m, v = target.numpy(), mask.numpy(), valid.numpy()
    u = v & ~m
    cos = cosine_direct(emb, prepared.offsets)
    a2 = np.maximum(cos, 0)
    pred2 = a2 if cosine == "clipped" else cos
    a1 = step.affinity1.numpy()
    assert np.abs(step.affinity2.numpy() - a2)[v].max() < 1e-5
    assert np.abs(step.cosine2.numpy() - pred2)[v].max() < 1e-5
    n_nearest, wn = prepared.n_nearest, cfg.nearest_weight
    sup2, sup1 = supervised_direct(pred2, y, m, n_nearest, wn), supervised_direct(a1, y, m, n_nearest, wn)
    assert float(step.supervised2) == pytest.approx(sup2, rel=1e-4)
    assert float(step.supervised1) == pytest.approx(sup1, rel=1e-4)
    alpha = cfg.alpha0 * (1 - t / cfg.iterations) ** 1.5
    assert step.alpha == pytest.approx(alpha)
    h1, h2 = entropy_direct(a1), entropy_direct(a2)
    c1, c2 = confident_direct(h1, u, alpha), confident_direct(h2, u, alpha)
    assert np.array_equal(step.cross.confident1.numpy(), c1) and np.array_equal(step.cross.confident2.numpy(), c2)
    assert 0.8 < c1.sum() / u.sum() < 0.95  # the filter acts: the check can see a wrong mask
    w = np.where(np.arange(y.shape[1]) < n_nearest, wn, 1.0).reshape(1, -1, 1, 1, 1)
    to_emb = (w * c1 * (pred2 - a1) ** 2).sum() / c1.sum()
    to_aff = (w * c2 * (a1 - a2) ** 2).sum() / c2.sum()
    assert float(step.cross.to_embedding) == pytest.approx(to_emb, rel=1e-4)
    assert float(step.cross.to_affinity) == pytest.approx(to_aff, rel=1e-4)
    assert float(step.total) == pytest.approx(sup2 + sup1 + cfg.lambda_cross * (to_emb + to_aff), rel=1e-4)
    terms = step.log_terms()
    assert list(terms) == ["sup2", "sup1", "cross", "confident1", "confident2", "total"]
    assert terms["confident1"] == pytest.approx(c1.sum() / u.sum())


def test_sparse_only_objective_is_the_supervised_loss_alone(batch):
    cfg, prepared, x, target, mask, valid = batch
    cfg = TrainConfig(**{**cfg.__dict__, "method": "sparse_only"})
    torch.manual_seed(0)
    nets = checkpoint.build_models(cfg)
    with torch.no_grad():
        step = objective.step_objective(cfg, nets, x, target, mask, valid, prepared.offsets,
                                        prepared.n_nearest, 1)
        a2 = affinity.affinities_from_embeddings(nets["embedding"](x), prepared.offsets).numpy()
    assert step.cross is None and step.affinity1 is None and list(step.log_terms()) == ["sup2", "total"]
    direct = supervised_direct(a2, target.numpy(), mask.numpy(), prepared.n_nearest, cfg.nearest_weight)
    assert float(step.total) == pytest.approx(direct, rel=1e-4)


def test_the_training_loop_logs_the_objective_of_its_first_batch(batch, tmp_path):
    """train.train minimises step_objective: its first logged losses are those of
    the first batch through the freshly initialised networks."""
    cfg, prepared, *_ = batch
    cfg = TrainConfig(**{**cfg.__dict__, "iterations": 1, "log_every": 1, "out_dir": str(tmp_path),
                               "progress": False, "augment": True})
    raw, target, mask, valid = training_sampler(cfg, prepared).sample(cfg.seed, 1, 0, cfg.batch)
    torch.manual_seed(cfg.seed)
    nets = {k: v.train() for k, v in checkpoint.build_models(cfg).items()}
    with torch.no_grad():
        step = objective.step_objective(cfg, nets, raw.unsqueeze(1), target, mask, valid, prepared.offsets,
                                        prepared.n_nearest, 1)
    logged = train.train(cfg, prepared)["last_losses"]
    for k, v in step.log_terms().items():
        assert logged[k] == pytest.approx(v, rel=1e-5), k


def test_cross_terms_one_direction_alone():
    """The ablation's directions: each keeps its own term exactly and zeroes the other."""
    from affcons_lib.method import losses

    g = torch.Generator().manual_seed(0)
    a1, a2 = torch.rand(2, 3, 4, 8, 8, generator=g), torch.rand(2, 3, 4, 8, 8, generator=g)
    unlabeled = torch.rand(2, 3, 4, 8, 8, generator=g) > 0.3
    both = losses.cross_consistency_terms(a1, a2, unlabeled, alpha=0.1, n_nearest=1)
    assert both.to_embedding > 0 and both.to_affinity > 0
    emb = losses.cross_consistency_terms(a1, a2, unlabeled, alpha=0.1, n_nearest=1, directions="to_embedding")
    aff = losses.cross_consistency_terms(a1, a2, unlabeled, alpha=0.1, n_nearest=1, directions="to_affinity")
    assert emb.to_embedding == both.to_embedding and emb.to_affinity == 0
    assert aff.to_affinity == both.to_affinity and aff.to_embedding == 0
    with pytest.raises(ValueError, match="directions"):
        losses.cross_consistency_terms(a1, a2, unlabeled, alpha=0.1, n_nearest=1, directions="none")
    with pytest.raises(ValueError, match="cross_terms"):
        load_config(None, {"cross_terms": "sideways"})
