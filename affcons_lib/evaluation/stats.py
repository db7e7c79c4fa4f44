"""Comparisons over paired runs: is method A better than method B, or can these
few seeds not tell?

A comparison pairs runs that share everything but the method (the training seed
*and* the annotation draw), takes the differences ``a - b`` and asks whether
their mean is away from 0:

    d = stats.paired_difference(voi_crac, voi_sparse_only)
    print(d)                      # mean, 95 % interval, verdict
    d.claim("a lower")            # "holds" / "does not hold" / "inconclusive"

Why a t-interval. With 3-10 pairs there is little to lean on: a percentile
bootstrap of so few differences gives intervals that are too narrow (it cannot
see spread it has not sampled), and an exact sign-flip test cannot reach 95 %
below 6 pairs (its smallest two-sided p is 2 / 2^n). Student's t interval of the
mean difference is exact when the differences are roughly normal and widens
honestly as n shrinks (t_0.975 = 4.30 for 3 pairs, 2.26 for 10).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedDifference", "paired_difference", "VERDICTS", "Claim", "paired_claims", "claim_summary",
           "AFFINITY_MEASURES", "HIGHER_IS_BETTER", "affinity_floors", "beyond_floors", "stable_verdicts",
           "markdown_row"]

VERDICTS = ("a lower", "b lower", "inconclusive")


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the paired differences ``a - b``, its interval and what it says."""

    mean: float
    low: float
    high: float
    verdict: str  # "a lower" (high < 0), "b lower" (low > 0) or "inconclusive"
    n: int
    confidence: float
    method: str = "Student t interval of the mean paired difference"

    def claim(self, expected: str) -> str:
        """How a claim that ``expected`` ("a lower" or "b lower") fares: "holds",
        "does not hold" (the interval lies on the other side of 0) or
        "inconclusive" (it contains 0)."""
        if expected not in VERDICTS[:2]:
            raise ValueError(f"expected: 'a lower' or 'b lower', got {expected!r}")
        if self.verdict == "inconclusive":
            return "inconclusive"
        return "holds" if self.verdict == expected else "does not hold"

    def __str__(self) -> str:
        return (f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] ({self.confidence:.0%}, {self.n} pairs): "
                f"{self.verdict}")


def paired_difference(a, b, confidence: float = 0.95) -> PairedDifference:
    """The mean of ``a - b`` over paired runs with a ``confidence`` interval.

    Parameters
    ----------
    a, b : sequence of float, same length
        Scores of two methods, entry ``i`` of each from the same seed (training
        seed and annotation draw).
    confidence : float in (0, 1)

    Returns
    -------
    PairedDifference
        With one pair, or pairs that are all equal but one another's mirror, the
        interval is unbounded or zero-width as the data say: one pair gives
        (-inf, inf) and "inconclusive"; identical differences give a zero-width
        interval at their value.
    """
    from scipy.stats import t as student_t

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"a and b: expected paired scores of equal length, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("a and b: no pairs")
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        raise ValueError("a and b: scores must be finite")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a value in (0, 1), got {confidence}")
    d = a - b
    n, mean = d.size, float(d.mean())
    if n == 1:
        low, high = -math.inf, math.inf
    else:
        half = float(student_t.ppf(0.5 + confidence / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
        low, high = mean - half, mean + half
    verdict = "a lower" if high < 0 else "b lower" if low > 0 else "inconclusive"
    return PairedDifference(mean, low, high, verdict, n, confidence)


# ------------------------------------------------------------------ claims
#: The affinity-level measures, the primary comparison: they need no segmentation and
#: no threshold chosen on the ground truth (notebook 01; the book, notebooks/book/instrument.md).
AFFINITY_MEASURES = ("test_error", "test_ap", "unlabeled_error", "unlabeled_ap")
#: Measures where higher is better; every other one is compared as it is (lower is better).
HIGHER_IS_BETTER = frozenset({"test_ap", "unlabeled_ap", "aji", "dice", "pq", "f1", "sbd"})


@dataclass(frozen=True)
class Claim:
    """"``a`` beats ``b``" on one measure, judged over paired runs.

    One sign convention throughout: ``mean``, ``low`` and ``high`` are the paired
    difference a - b on a lower-is-better scale, so a negative difference favours
    ``a``; a higher-is-better measure (AP, AJI) is negated first and named with a
    leading "-" (``-test_ap``). ``source`` says where the runs come from:
    ``"reference"`` (the committed runs of data/reference) or ``"train"`` (trained
    by the notebook that reports it)."""

    claim: str
    measure: str
    mean: float
    low: float
    high: float
    pairs: int
    verdict: str  # holds / does not hold / inconclusive
    source: str

    def as_record(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (f"{self.claim}, {self.measure}: {self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] "
                f"({self.pairs} pairs, {self.source}): {self.verdict}")


def paired_claims(rows, comparisons, measures, source: str) -> list[Claim]:
    """Each "``a`` beats ``b``" of ``comparisons`` on each of ``measures``.

    Parameters
    ----------
    rows : iterable of mappings
        One per run, with ``method``, ``seed`` and a value for every measure; runs
        of one seed share the training seed and the annotation draw.
    comparisons : iterable of (a, b) method names
    measures : iterable of measure names (higher-is-better ones per
        :data:`HIGHER_IS_BETTER`)
    source : "reference" or "train"

    Returns
    -------
    list of Claim, in the order of ``comparisons`` then ``measures``; a comparison
    whose methods share no seed is left out.
    """
    if source not in ("reference", "train"):
        raise ValueError(f"source: expected 'reference' or 'train', got {source!r}")
    by_run = {}
    for r in rows:
        by_run[(r["method"], r["seed"])] = r
    out = []
    for a, b in comparisons:
        seeds = sorted({s for m, s in by_run if m == a} & {s for m, s in by_run if m == b})
        if not seeds:
            continue
        for measure in measures:
            sign = -1.0 if measure in HIGHER_IS_BETTER else 1.0
            try:
                va = [sign * float(by_run[(a, s)][measure]) for s in seeds]
                vb = [sign * float(by_run[(b, s)][measure]) for s in seeds]
            except KeyError as err:
                raise ValueError(f"rows: run ({a!r} or {b!r}) has no measure {err.args[0]!r}") from None
            d = paired_difference(va, vb)
            out.append(Claim(f"{a} beats {b}", ("-" if sign < 0 else "") + measure, d.mean, d.low, d.high, d.n,
                             d.claim("a lower"), source))
    return out


def affinity_floors(rows) -> dict:
    """The trivial answers of the affinity-level measures, from scored runs
    (:class:`~affcons_lib.training.predict.ScoredRun` rows with ``test_cut_share`` and
    ``unlabeled_cut_share``): "every affinity 1" errs on exactly the cuts, and a
    random ranking finds them with an AP equal to their share; on each region, the
    mean over the runs. ``{}`` when the rows hold no affinity-level scores."""
    rows = list(rows)
    floors = {}
    for region in ("test", "unlabeled"):
        shares = [r[f"{region}_cut_share"] for r in rows if f"{region}_cut_share" in r]
        if shares:
            share = float(np.mean(shares))
            floors.update({f"{region}_error": share, f"{region}_ap": share})
    return floors


def beyond_floors(rows, floors: dict) -> dict:
    """For each measure of ``floors`` (its trivial answer's score, e.g. the share
    of cuts for the affinity error of "every affinity 1" and for a random
    ranking's AP), the methods whose mean over ``rows`` is better than the floor.

    Returns ``{measure: [method, ...]}``, methods in the order they first appear."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = {}
    for measure, floor in floors.items():
        better = []
        for m in methods:
            mean = float(np.mean([r[measure] for r in rows if r["method"] == m]))
            if (mean > floor) if measure in HIGHER_IS_BETTER else (mean < floor):
                better.append(m)
        out[measure] = better
    return out


def claim_summary(claims, claim: str, primary=AFFINITY_MEASURES, beyond: dict | None = None) -> str:
    """One line on ``claim`` (e.g. "crac beats sparse_only"): on how many of the
    ``primary`` measures it holds, each measure's interval, then the others.

    ``beyond`` (from :func:`beyond_floors`): a measure on which either compared
    method's mean is no better than the trivial answer is marked "at the floor",
    and a verdict there is not counted: a result at the floor is no result."""
    mine = [c for c in claims if c.claim == claim]
    if not mine:
        return f"{claim}: not measured"
    a, b = claim.split(" beats ")

    def at_floor(c):
        return beyond is not None and c.measure.lstrip("-") in beyond and \
            not {a, b} <= set(beyond[c.measure.lstrip("-")])

    first = [c for c in mine if c.measure.lstrip("-") in primary]
    rest = [c for c in mine if c.measure.lstrip("-") not in primary]
    holds = sum(c.verdict == "holds" and not at_floor(c) for c in first)
    floored = sum(at_floor(c) for c in first)
    show = "; ".join(f"{c.measure} {c.mean:+.3f} [{c.low:+.3f}, {c.high:+.3f}] {c.verdict}"
                     + (" (at the floor)" if at_floor(c) else "") for c in first + rest)
    counted = f"{len(first) - floored} affinity-level measures above their floors" if beyond is not None \
        else f"{len(first)} affinity-level measures"
    return f"{claim}: holds on {holds} of {counted} ({mine[0].pairs} paired seeds, {mine[0].source}). {show}"


def stable_verdicts(*runs) -> dict:
    """The verdict of each (claim, measure) over repeated runs of one setting
    (other machines, another precision, identical reruns): the common verdict
    where every run that measured it agrees, ``"unstable"`` where they differ.

    Parameters
    ----------
    *runs : iterables of :class:`Claim`, one per repeated run of the setting.

    Returns
    -------
    dict mapping ``(claim, measure)`` (measure without its leading "-") to a verdict.
    """
    seen: dict = {}
    for claims in runs:
        for c in claims:
            seen.setdefault((c.claim, c.measure.lstrip("-")), set()).add(c.verdict)
    return {k: next(iter(v)) if len(v) == 1 else "unstable" for k, v in seen.items()}


def markdown_row(claims, claim: str, scale: str, measures=AFFINITY_MEASURES + ("voi",),
                 beyond: dict | None = None, verdicts: dict | None = None) -> str:
    """One row of the claims table (front page, book): ``| claim | scale | one cell per measure |``,
    each cell "mean [low, high] verdict", "(at the floor)" where :func:`beyond_floors`
    says either method is no better than the trivial answer, "—" where not measured.
    ``verdicts`` (from :func:`stable_verdicts`) replaces a verdict by the one over
    repeated runs, "unstable" where they disagree."""
    a, b = claim.split(" beats ")
    mine = {c.measure.lstrip("-"): c for c in claims if c.claim == claim}
    cells = []
    for m in measures:
        c = mine.get(m)
        if c is None:
            cells.append("—")
            continue
        floor = beyond is not None and m in beyond and not {a, b} <= set(beyond[m])
        verdict = (verdicts or {}).get((claim, m), c.verdict)
        cells.append(f"{c.mean:+.3f} [{c.low:+.3f}, {c.high:+.3f}] {verdict}" + (" (at the floor)" if floor else ""))
    return f"| {claim} | {scale} | " + " | ".join(cells) + " |"
