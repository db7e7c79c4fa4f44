"""Scoring against a ground truth, and comparing runs.

- :mod:`.metrics`: VOI, ARAND, SBD, |DiC|, AJI, Dice, F1, PQ and the affinity-level
  scores (error, boundary AP), on one contingency table;
- :mod:`.evaluate`: the instrument: a prediction segmented by the recipe at every
  threshold and scored, its floors and its ceiling;
- :mod:`.stats`: paired differences, their intervals and verdicts;
- :mod:`.protocol`: the comparisons a notebook states, fixed before its runs.

Imports: :mod:`affcons_lib.data`, :mod:`affcons_lib.method`,
:mod:`affcons_lib.segmentation` and the top-level helpers.
"""
