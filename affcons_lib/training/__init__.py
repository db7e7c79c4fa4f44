"""Training the two branches (and the CPSN) and predicting with them.

- :mod:`.config`: one dataclass, :class:`~.config.TrainConfig`, for a run;
- :mod:`.sampling`: the prepared data (train / test parts, the sparse annotation)
  and the patch sampler;
- :mod:`.objective`: one step's loss for each method (``sparse_only``, ``crac``,
  ``full_supervision``, the ablations);
- :mod:`.loop`: the shared training loop (steps, snapshots, resume);
- :mod:`.train` and :mod:`.cpsn`: the two trainings built on it;
- :mod:`.checkpoint`: saving, loading, threads;
- :mod:`.inference` and :mod:`.predict`: tiled prediction of a volume or image, and
  a run's prediction scored.

Imports: everything below it (data, method, segmentation, evaluation) and the
top-level helpers; never :mod:`affcons_lib.blockwise` or :mod:`affcons_lib.companion`.
"""
