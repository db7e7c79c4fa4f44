"""The method: what the paper defines, independent of how it is trained or scored.

- :mod:`.affinity`: affinities from labels (the targets), from embeddings (cosine
  similarities, f(θ2)'s affinities), their entropy and the labeled region;
- :mod:`.models`: the residual U-Nets f(θ1), f(θ2) and the CPSN, and their precision;
- :mod:`.losses`: the supervised, cross-consistency and CPSN losses, the entropy filter;
- :mod:`.complexity`: parameters and multiply-accumulates (the paper's Table 6).

Imports: :mod:`affcons_lib.data` and the top-level helpers only.
"""
