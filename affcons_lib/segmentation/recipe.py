"""One segmentation recipe for 3D affinities, the same in memory and blockwise.

A :class:`Recipe` names every choice between affinities and a scored
segmentation: the fragments, the agglomeration's scoring, the thresholds swept
and the ground-truth border ignored when scoring. :func:`affcons_lib.evaluation.evaluate.evaluate_3d`,
the threshold slider (:func:`affcons_lib.companion.explore.agglomeration_at_thresholds`)
and :func:`affcons_lib.blockwise.segment.segment_blockwise` take one, so that a number
from a volume too large for memory is the number the in-memory instrument gives.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["THRESHOLDS", "FRAGMENT_METHODS", "AGGLOMERATIONS", "Recipe", "BLOCKWISE", "recipe_fragments",
           "recipe_segmentations"]

#: the agglomeration thresholds swept by default (the best is chosen on the
#: ground truth, as in the paper: an oracle choice)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.1))

#: ``ascent``: crop-invariant (:mod:`affcons_lib.segmentation.fragments`), in memory and
#: blockwise alike. One method: the earlier seeded growth was not crop-invariant and
#: scored no better (the book, notebooks/book/instrument.md).
FRAGMENT_METHODS = ("ascent",)

#: ``graph``: the library's agglomeration (:mod:`affcons_lib.segmentation.agglomeration`), in
#: memory and blockwise alike. waterz itself (:func:`affcons_lib.segmentation.postprocess.agglomerate`)
#: is the oracle the tests hold it to, not an option of the recipe.
AGGLOMERATIONS = ("graph",)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Affinities -> fragments -> agglomeration -> scores.

    Attributes
    ----------
    fragments : one of :data:`FRAGMENT_METHODS` (``ascent``, the crop-invariant
        fragments blockwise segmentation computes too).
    agglomeration : one of :data:`AGGLOMERATIONS` (``graph``, the code blockwise
        segmentation runs too).
    mode : ``volume`` (3D fragments, isotropic data) or ``slice`` (per section,
        anisotropic data).
    threshold : affinity above which an edge is strong (fragments).
    radius, max_distance : the ascent's reach and distance cap
        (:mod:`affcons_lib.segmentation.fragments`; they set the blockwise context).
    scoring : the agglomeration's edge score, a name of
        :data:`affcons_lib.segmentation.postprocess.SCORING`: ``median`` (the field's),
        ``mean`` or ``quantile_Q``.
    thresholds : the agglomeration thresholds swept (higher merges more).
    border_tolerance : ground-truth voxels closer than this to a label border in
        their section are not scored (CREMI's convention; 0 scores all).
    """

    fragments: str = "ascent"
    agglomeration: str = "graph"
    mode: str = "volume"
    threshold: float = 0.5
    radius: int = 3
    max_distance: int = 16
    scoring: str = "median"
    thresholds: tuple = THRESHOLDS
    border_tolerance: int = 1

    def __post_init__(self):
        if self.fragments not in FRAGMENT_METHODS:
            raise ValueError(f"fragments: expected one of {FRAGMENT_METHODS}, got {self.fragments!r}")
        if self.agglomeration not in AGGLOMERATIONS:
            raise ValueError(f"agglomeration: expected one of {AGGLOMERATIONS}, got {self.agglomeration!r}")
        from .agglomeration import scoring_quantile

        scoring_quantile(self.scoring)  # names what the graph agglomeration takes
        if self.mode not in ("volume", "slice"):
            raise ValueError(f"mode (fragment_mode): expected 'volume' (isotropic data) or 'slice' (anisotropic), "
                             f"got {self.mode!r}")
        thresholds = tuple(float(t) for t in np.atleast_1d(self.thresholds))
        if not thresholds or any(not 0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f"thresholds: expected floats in [0, 1], got {self.thresholds}")
        object.__setattr__(self, "thresholds", thresholds)
        if int(self.border_tolerance) < 0:
            raise ValueError(f"border_tolerance: expected >= 0, got {self.border_tolerance}")

    def replace(self, **changes) -> "Recipe":
        """A copy with ``changes`` (None values ignored: "the recipe's")."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def fragment_options(self) -> dict:
        """The options of :func:`affcons_lib.segmentation.fragments.fragments` (ascent)."""
        return dict(mode=self.mode, threshold=self.threshold, radius=self.radius, max_distance=self.max_distance)

    def as_dict(self) -> dict:
        """Plain values (JSON, zarr attributes)."""
        out = dataclasses.asdict(self)
        out["thresholds"] = list(self.thresholds)
        return out


#: the recipe blockwise segmentation runs by default: the in-memory default
BLOCKWISE = Recipe()


def recipe_fragments(affs: np.ndarray, recipe: Recipe | None = None) -> np.ndarray:
    """The recipe's fragments of ``affs`` (C >= 3, Z, Y, X) in memory: uint64,
    (Z, Y, X), ids 1, 2, ..."""
    from .fragments import fragments

    return fragments(affs, **(recipe or Recipe()).fragment_options)


def recipe_segmentations(affs: np.ndarray, fragments: np.ndarray, recipe: Recipe | None = None,
                         thresholds=None) -> list[np.ndarray]:
    """The recipe's agglomeration of ``fragments`` at each threshold (default
    the recipe's): uint64 arrays (Z, Y, X), in the order of the thresholds."""
    recipe = recipe or Recipe()
    thresholds = recipe.thresholds if thresholds is None else [float(t) for t in thresholds]
    from .agglomeration import agglomerate_fragments

    return agglomerate_fragments(affs, fragments, thresholds, scoring=recipe.scoring)

