"""The protocol every comparison of the companion follows, declared before the runs.

A comparison of two methods is judged on paired runs: the runs of one *draw* share
the training seed and the annotation draw, so they differ only in the method. The
protocol fixes, before anything is trained,

- the draws (:attr:`Protocol.draws`: ten, 0–9);
- the measures (:attr:`Protocol.measures`: the four affinity-level ones, which need
  no segmentation and no threshold chosen on the ground truth, then VOI);
- the interval (Student's t interval of the mean paired difference, 95 %) and the
  verdict rule (:mod:`affcons_lib.evaluation.stats`: *holds* when the interval lies on the
  claim's side of 0, *does not hold* on the other, *inconclusive* when it contains
  0; a measure where either method is no better than its floor is not counted);
- the share of the gap closed, (``sparse_only`` − ``crac``) / (``sparse_only`` −
  ``full_supervision``), with Fieller's interval for a ratio of paired means
  (:func:`gap_share`): how much of what dense labels add the method recovers.

Every verdict uses all the draws of its setting: :meth:`Protocol.claims` refuses a
setting whose runs miss a draw. The grids run under it (annotation budgets, 2D and
3D, the method's parts) are declared in ``data/reference/breadth/config.yaml`` and
run by :mod:`affcons_lib.companion.breadth`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import stats

__all__ = ["Protocol", "PROTOCOL", "GapShare", "gap_share"]


@dataclass(frozen=True)
class GapShare:
    """The share of the gap between ``sparse_only`` and ``full_supervision`` that a
    method closes, on one measure: 0 = no better than ``sparse_only``, 1 = as good
    as dense labels. ``low`` / ``high`` are Fieller's interval (``-inf`` / ``inf``
    when the gap itself is not distinguishable from 0: then no share can be said)."""

    measure: str
    share: float
    low: float
    high: float
    pairs: int
    confidence: float

    def as_record(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        if math.isinf(self.low) or math.isinf(self.high):
            return f"{self.share:.0%} of the gap (interval unbounded: the gap itself is not resolved)"
        return f"{self.share:.0%} of the gap [{self.low:.0%}, {self.high:.0%}]"


def gap_share(closed, gap, measure: str = "", confidence: float = 0.95) -> GapShare:
    """Fieller's interval for the ratio of two paired means, mean(closed) / mean(gap).

    Parameters
    ----------
    closed : sequence of float, one per draw
        ``sparse_only`` − method, on a lower-is-better scale (positive: the method
        is better).
    gap : sequence of float, same draws
        ``sparse_only`` − ``full_supervision`` on the same scale.
    measure : its name, kept in the record.
    confidence : float in (0, 1)

    Returns
    -------
    GapShare
        The ratio of means and the set of ratios ρ for which mean(closed) − ρ
        mean(gap) is not distinguishable from 0 by a t test (Fieller 1954). When
        the gap's own t statistic is below the critical value the set is not a
        bounded interval and ``low`` / ``high`` are infinite.
    """
    from scipy.stats import t as student_t

    a, b = np.asarray(closed, np.float64).ravel(), np.asarray(gap, np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"closed and gap: expected paired values of equal length >= 2, got {a.size} and {b.size}")
    n = a.size
    ma, mb = float(a.mean()), float(b.mean())
    cov = np.cov(a, b, ddof=1) / n  # variances and covariance of the two means
    saa, sbb, sab = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    t = float(student_t.ppf(0.5 + confidence / 2, n - 1))
    share = ma / mb if mb != 0 else math.nan
    # (ma - r mb)^2 <= t^2 (saa - 2 r sab + r^2 sbb): a quadratic A r^2 + B r + C <= 0
    qa, qb, qc = mb * mb - t * t * sbb, -2 * (ma * mb - t * t * sab), ma * ma - t * t * saa
    disc = qb * qb - 4 * qa * qc
    if qa <= 0 or disc < 0:  # the gap is not resolved: no bounded interval
        low, high = -math.inf, math.inf
    else:
        root = math.sqrt(disc)
        low, high = (-qb - root) / (2 * qa), (-qb + root) / (2 * qa)
    return GapShare(measure, share, low, high, n, confidence)


@dataclass(frozen=True)
class Protocol:
    """What a comparison uses, fixed before the runs (see the module docstring).

    Rows are score records of runs (:class:`~affcons_lib.training.predict.ScoredRun`
    ``.scores`` with ``method`` and ``seed``, the draw)."""

    draws: tuple = tuple(range(10))
    measures: tuple = stats.AFFINITY_MEASURES + ("voi",)
    confidence: float = 0.95
    comparisons: tuple = (("crac", "sparse_only"), ("full_supervision", "sparse_only"),
                          ("full_supervision", "crac"))

    def rule(self) -> str:
        """The verdict rule in words (the README and the book quote it)."""
        return (f"{len(self.draws)} paired draws (training seed and annotation draw {self.draws[0]}–"
                f"{self.draws[-1]}); the mean paired difference with its {self.confidence:.0%} Student t interval; "
                "holds when the interval lies on the claim's side of 0, does not hold on the other side, "
                "inconclusive when it contains 0; a measure where either method is no better than its floor "
                "is not counted")

    def check_complete(self, rows, methods, where: str = "rows") -> None:
        """Raise ValueError naming the missing runs if some method lacks a draw."""
        have = {(r["method"], int(r["seed"])) for r in rows}
        missing = [(m, d) for m in methods for d in self.draws if (m, d) not in have]
        if missing:
            shown = ", ".join(f"{m} draw {d}" for m, d in missing[:6]) + (" ..." if len(missing) > 6 else "")
            raise ValueError(f"{where}: {len(missing)} runs of the protocol's draws are missing ({shown}); "
                             "a verdict uses all of its draws")

    def claims(self, rows, source: str = "reference", comparisons=None) -> list[stats.Claim]:
        """Every comparison on every measure the rows hold, over all the draws."""
        rows = [r for r in rows if int(r["seed"]) in self.draws]
        comparisons = comparisons or self.comparisons
        methods = sorted({m for pair in comparisons for m in pair} & {r["method"] for r in rows})
        self.check_complete(rows, methods)
        measures = [m for m in self.measures if all(m in r for r in rows)]
        return stats.paired_claims(rows, comparisons, measures, source)

    def gap_shares(self, rows, method: str = "crac", lower: str = "sparse_only",
                   upper: str = "full_supervision") -> list[GapShare]:
        """The share of the gap ``lower`` → ``upper`` that ``method`` closes, per measure."""
        by = {(r["method"], int(r["seed"])): r for r in rows if int(r["seed"]) in self.draws}
        self.check_complete(by.values(), (method, lower, upper))
        out = []
        for measure in self.measures:
            if not all(measure in by[(m, d)] for m in (method, lower, upper) for d in self.draws):
                continue
            sign = -1.0 if measure in stats.HIGHER_IS_BETTER else 1.0
            v = {m: np.array([sign * float(by[(m, d)][measure]) for d in self.draws]) for m in (method, lower, upper)}
            out.append(gap_share(v[lower] - v[method], v[lower] - v[upper], measure, self.confidence))
        return out


#: The protocol of every reported comparison.
PROTOCOL = Protocol()
