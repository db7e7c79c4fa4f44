"""Paired comparisons and the affinity-level scores, against hand computations."""

import math

import numpy as np
import pytest

from affcons_lib.evaluation import metrics, stats


def test_paired_difference_hand_computed():
    # differences -1, -2, -3: mean -2, sd 1, t_0.975(2) = 4.302653, half = 4.302653 / sqrt(3)
    d = stats.paired_difference([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    half = 4.302652729911275 / math.sqrt(3)
    assert d.mean == pytest.approx(-2.0)
    assert (d.low, d.high) == pytest.approx((-2.0 - half, -2.0 + half))
    assert d.verdict == "inconclusive" and d.claim("a lower") == "inconclusive"  # high = 0.484 > 0
    # ten pairs of the same shape are enough: t_0.975(9) = 2.262157, sd of 1..10 = 3.02765
    a = np.arange(10.0)
    e = stats.paired_difference(a, a + 5.5 + np.arange(10.0) * 0)  # all differences -5.5: zero width
    assert (e.low, e.high, e.verdict) == (-5.5, -5.5, "a lower")
    f = stats.paired_difference(a + np.arange(1.0, 11.0), a)  # differences 1..10
    half = 2.2621571627409915 * np.std(np.arange(1.0, 11.0), ddof=1) / math.sqrt(10)
    assert (f.low, f.high) == pytest.approx((5.5 - half, 5.5 + half))
    assert f.verdict == "b lower" and f.claim("a lower") == "does not hold" and f.claim("b lower") == "holds"
    assert "+5.500 [" in str(f) and "10 pairs): b lower" in str(f)


def test_paired_difference_edges():
    one = stats.paired_difference([1.0], [0.0])
    assert one.low == -math.inf and one.high == math.inf and one.verdict == "inconclusive"
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_difference([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        stats.paired_difference([1, np.nan], [1, 2])
    with pytest.raises(ValueError, match="'a lower' or 'b lower'"):
        one.claim("better")


def test_affinity_error_hand_computed():
    pred = np.array([[0.9, 0.4, 0.5, 0.1]])
    target = np.array([[1, 1, 0, 0]])
    # wrong: 0.4 on a link, 0.5 (>= 0.5, "together") on a cut -> 2 of 4
    assert metrics.affinity_error(pred, target) == 0.5
    assert metrics.affinity_error(pred, target, mask=np.array([[True, False, False, True]])) == 0.0
    with pytest.raises(ValueError, match="selects no edge"):
        metrics.affinity_error(pred, target, mask=np.zeros((1, 4), bool))


def test_boundary_ap_hand_computed():
    # boundary scores 1 - pred = 0.9, 0.8, 0.7, 0.6 for cut, link, cut, link:
    # precision 1/1 at recall 1/2, 2/3 at recall 1 -> AP = 0.5 + 0.5 * 2/3
    pred = np.array([0.1, 0.2, 0.3, 0.4])
    target = np.array([0, 1, 0, 1])
    assert metrics.boundary_ap(pred, target) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics.boundary_ap(target.astype(float), target) == 1.0  # perfect affinities rank every cut first
    # ties are flagged together: all equal -> precision = share of cuts at recall 1
    assert metrics.boundary_ap(np.full(4, 0.5), target) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positives: none"):
        metrics.boundary_ap(pred, np.ones(4))
    # the float32 path (a sort of bit patterns) gives the hand-computed values too
    assert metrics.boundary_ap(pred.astype(np.float32), target) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics.boundary_ap(np.full(4, 0.5, np.float32), target) == pytest.approx(0.5)


@pytest.mark.parametrize("n_values", [3, 50, None])
def test_precision_recall_float32_path_equals_the_comparison_sort(n_values):
    """float32 scores take a sort of their bit patterns; float64 ones a
    stable comparison sort. Same curve and AP, ties (few distinct values),
    negatives and signed zeros included."""
    rng = np.random.default_rng(n_values or 0)
    n = 300_000
    x = rng.normal(size=n).astype(np.float32)
    if n_values:
        x = rng.integers(-n_values // 2, n_values // 2 + 1, n).astype(np.float32) / 4
        x[rng.random(n) < 0.1] = np.float32(-0.0)
    positives = rng.random(n) < 0.3
    p32, r32, ap32 = metrics.precision_recall(x, positives)
    p64, r64, ap64 = metrics.precision_recall(x.astype(np.float64), positives)
    assert len(p32) == len(np.unique(x)) == len(p64)
    np.testing.assert_allclose(p32, p64, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r32, r64, rtol=0, atol=1e-12)
    assert abs(ap32 - ap64) < 1e-12
    with pytest.raises(ValueError, match="finite"):
        metrics.precision_recall(np.array([0.1, np.nan], np.float32), np.array([1, 0]))


def test_paired_claims_signs_verdicts_and_records():
    rows = []
    for seed, (err_a, err_b, ap_a, ap_b) in enumerate([(0.20, 0.30, 0.7, 0.6), (0.22, 0.31, 0.72, 0.6),
                                                       (0.21, 0.33, 0.69, 0.7)]):
        rows += [dict(method="crac", seed=seed, test_error=err_a, test_ap=ap_a),
                 dict(method="sparse_only", seed=seed, test_error=err_b, test_ap=ap_b)]
    rows.append(dict(method="crac", seed=9, test_error=0.0, test_ap=1.0))  # no partner: not paired
    claims = stats.paired_claims(rows, [("crac", "sparse_only")], ["test_error", "test_ap"], "train")
    err, ap = claims
    # lower is better as it is; AP negated and named with "-": negative differences favour crac
    assert err.measure == "test_error" and ap.measure == "-test_ap" and err.pairs == ap.pairs == 3
    assert err.mean == pytest.approx(-0.1033333) and err.verdict == "holds" and err.high < 0
    assert ap.mean == pytest.approx(-(0.1 + 0.12 - 0.01) / 3) and ap.verdict == "inconclusive"
    assert set(err.as_record()) == {"claim", "measure", "mean", "low", "high", "pairs", "verdict", "source"}
    line = stats.claim_summary(claims, "crac beats sparse_only", primary=("test_error", "test_ap"))
    assert line.startswith("crac beats sparse_only: holds on 1 of 2 affinity-level measures (3 paired seeds, train)")
    # the other way round the same data do not hold
    back = stats.paired_claims(rows, [("sparse_only", "crac")], ["test_error"], "reference")[0]
    assert back.verdict == "does not hold" and back.source == "reference"
    with pytest.raises(ValueError, match="source"):
        stats.paired_claims(rows, [("crac", "sparse_only")], ["test_error"], "mine")
    with pytest.raises(ValueError, match="voi"):
        stats.paired_claims(rows, [("crac", "sparse_only")], ["voi"], "train")


def test_a_verdict_at_the_floor_is_not_counted():
    rows = []
    for seed, (e_a, e_b, u_a, u_b) in enumerate([(0.30, 0.32, 0.27, 0.30), (0.31, 0.33, 0.26, 0.29),
                                                 (0.29, 0.32, 0.28, 0.30)]):
        rows += [dict(method="crac", seed=seed, test_error=e_a, unlabeled_error=u_a),
                 dict(method="sparse_only", seed=seed, test_error=e_b, unlabeled_error=u_b)]
    floors = {"test_error": 0.34, "unlabeled_error": 0.28}  # every affinity 1 errs on the cuts
    beyond = stats.beyond_floors(rows, floors)
    assert beyond == {"test_error": ["crac", "sparse_only"], "unlabeled_error": ["crac"]}
    claims = stats.paired_claims(rows, [("crac", "sparse_only")], ["test_error", "unlabeled_error"], "train")
    assert [c.verdict for c in claims] == ["holds", "holds"]
    line = stats.claim_summary(claims, "crac beats sparse_only", primary=("test_error", "unlabeled_error"),
                               beyond=beyond)
    assert "holds on 1 of 1 affinity-level measures above their floors" in line
    assert "unlabeled_error -0.027" in line and "(at the floor)" in line
    higher = stats.beyond_floors([dict(method="m", seed=0, test_ap=0.3)], {"test_ap": 0.34})
    assert higher == {"test_ap": []}  # AP: better means higher than chance


def test_stable_verdicts_mark_a_flip_as_unstable():
    def claim(measure, verdict):
        return stats.Claim("a beats b", measure, -0.1, -0.2, 0.0, 5, verdict, "train")

    first = [claim("voi", "holds"), claim("-test_ap", "holds")]
    second = [claim("voi", "inconclusive"), claim("-test_ap", "holds")]
    verdicts = stats.stable_verdicts(first, second)
    assert verdicts == {("a beats b", "voi"): "unstable", ("a beats b", "test_ap"): "holds"}
    row = stats.markdown_row(first, "a beats b", "s", measures=("test_ap", "voi"), verdicts=verdicts)
    assert row.endswith("holds | -0.100 [-0.200, +0.000] unstable |")
