"""The protocol: complete draws, verdicts over all of them, the gap share's interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from affcons_lib.evaluation.protocol import PROTOCOL, Protocol, gap_share


def test_gap_share_exact_half():
    gap = np.array([0.10, 0.12, 0.08, 0.11, 0.09, 0.10, 0.13, 0.07, 0.10, 0.10])
    g = gap_share(0.5 * gap, gap, "test_error")
    assert g.share == pytest.approx(0.5) and g.low == pytest.approx(0.5) and g.high == pytest.approx(0.5)


def test_gap_share_bounds_invert_the_paired_t_test():
    """Fieller's bounds are the ratios r at which closed - r * gap is exactly at the
    edge of significance: its paired t statistic equals the critical value."""
    rng = np.random.default_rng(3)
    gap = 0.05 + rng.normal(0, 0.01, 10)
    closed = 0.3 * gap + rng.normal(0, 0.01, 10)
    g = gap_share(closed, gap)
    assert g.low < g.share < g.high
    crit = student_t.ppf(0.975, 9)
    for r in (g.low, g.high):
        d = closed - r * gap
        assert abs(d.mean() / (d.std(ddof=1) / math.sqrt(10))) == pytest.approx(crit, rel=1e-6)


def test_gap_share_unresolved_gap_is_unbounded():
    rng = np.random.default_rng(0)
    gap = rng.normal(0, 0.05, 10)  # dense labels no better on average: no share can be said
    g = gap_share(rng.normal(0.01, 0.05, 10), gap)
    assert math.isinf(g.low) and math.isinf(g.high)
    assert "unbounded" in str(g)


def rows(methods, draws, value):
    return [dict(method=m, seed=d, test_error=value(m, d)) for m in methods for d in draws]


def test_claims_need_every_draw():
    effect = {"sparse_only": 0.30, "crac": 0.28, "full_supervision": 0.20}
    ok = rows(effect, range(10), lambda m, d: effect[m] + 0.001 * d * (m == "crac"))
    claims = PROTOCOL.claims(ok)
    first = next(c for c in claims if c.claim == "crac beats sparse_only")
    assert first.pairs == 10 and first.verdict == "holds"
    with pytest.raises(ValueError, match="crac draw 9"):
        PROTOCOL.claims([r for r in ok if not (r["method"] == "crac" and r["seed"] == 9)])
    shares = PROTOCOL.gap_shares(ok)
    assert shares[0].measure == "test_error" and 0.1 < shares[0].share < 0.3
    assert "10 paired draws" in PROTOCOL.rule() and Protocol(draws=(0, 1)).draws == (0, 1)
