"""From affinities to instances, in memory and blockwise alike.

- :mod:`.fragments`: fragments by steepest ascent of the strong-edge distance
  (the recipe's fragments);
- :mod:`.agglomeration`: the region graph of fragments and its waterz-style
  agglomeration (mean or quantile scores);
- :mod:`.postprocess`: waterz itself (the oracle the agglomeration is tested
  against), the mutex watershed and small-object merging;
- :mod:`.labels`: distinct ids and consecutive relabelling (the one relabelling);
- :mod:`.recipe`: one settings object, :class:`~.recipe.Recipe`, for affinities →
  fragments → segmentations;
- ``_kernels``, ``_keysort``, ``_fragments``, ``_graph``, ``_mws``: the compiled kernels
  (numba) behind them.

Imports: :mod:`affcons_lib.method` (offsets and edges) and the top-level helpers only;
nothing that scores against a ground truth (that is :mod:`affcons_lib.evaluation`).
"""
