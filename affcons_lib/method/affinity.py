"""Affinities: from labels (targets), from embeddings (f(θ2)), and where they are known.

An *affinity* for offset ``o`` at voxel ``v`` says whether ``v`` and ``v + o`` belong
to the same instance. Offsets follow the field's convention (torch-em, waterz,
pytorch_connectomics): ``o = (dz, dy, dx)`` in 3D or ``(dy, dx)`` in 2D, all entries
non-positive, so channel ``c`` at ``v`` links ``v`` to a neighbour *before* it. An
edge whose neighbour falls outside the array is undefined and masked out.

All arrays are channel-first: affinities have shape ``(C, *spatial)``, one channel
per offset, in the order of the offsets.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "edge_slices",
    "check_affs",
    "OFFSETS_3D",
    "OFFSETS_2D",
    "N_NEAREST_3D",
    "N_NEAREST_2D",
    "check_offsets",
    "widen_borders",
    "affinities_from_labels",
    "labeled_region_mask",
    "training_targets",
    "noisy_targets",
    "wrong_side",
    "affinities_from_embeddings",
    "affinity_entropy",
]

#: The paper's 3D offsets (AC3, CREMI-C): nearest neighbours first (what waterz
#: consumes), then z at 2, 3, 4 and in-plane at 3, 9, 27 -- 12 channels.
OFFSETS_3D: tuple[tuple[int, int, int], ...] = (
    (-1, 0, 0), (0, -1, 0), (0, 0, -1),
    (-2, 0, 0), (0, -3, 0), (0, 0, -3),
    (-3, 0, 0), (0, -9, 0), (0, 0, -9),
    (-4, 0, 0), (0, -27, 0), (0, 0, -27),
)
#: Number of leading nearest-neighbour channels in :data:`OFFSETS_3D`.
N_NEAREST_3D = 3

#: The paper's 2D offsets (CVPPP, BBBC039): (-s, 0) and (0, -s) for s in 1, 3, 5,
#: 9, 27 -- 10 channels; the first two are the attractive edges of the mutex
#: watershed, the rest repulsive.
OFFSETS_2D: tuple[tuple[int, int], ...] = tuple(
    o for s in (1, 3, 5, 9, 27) for o in ((-s, 0), (0, -s))
)
#: Number of leading nearest-neighbour channels in :data:`OFFSETS_2D`.
N_NEAREST_2D = 2


def check_offsets(offsets: Sequence[Sequence[int]], ndim: int, name: str = "offsets") -> tuple:
    """Validate offsets for arrays with ``ndim`` spatial axes; return them as tuples.

    Raises
    ------
    ValueError
        If ``offsets`` is empty, an offset has the wrong length, is not integral, or
        is all zeros (an edge from a voxel to itself).
    """
    try:
        offs = tuple(tuple(int(d) for d in o) for o in offsets)
        integral = all(float(d) == int(d) for o in offsets for d in o)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected a sequence of integer tuples, got {offsets!r}") from err
    if not offs:
        raise ValueError(f"{name}: expected at least one offset, got none")
    if not integral:
        raise ValueError(f"{name}: offsets must be integers, got {offsets!r}")
    for o in offs:
        if len(o) != ndim:
            raise ValueError(
                f"{name}: offset {o} has {len(o)} entries but the array has {ndim} spatial axes"
            )
        if all(d == 0 for d in o):
            raise ValueError(f"{name}: the zero offset {o} links a voxel to itself")
    return offs


def edge_slices(offset: Sequence[int], shape: Sequence[int]) -> tuple[tuple, tuple]:
    """Slices ``(at_v, at_v_plus_o)`` selecting every voxel ``v`` whose neighbour
    ``v + o`` lies inside an array of ``shape``. Empty when |o| exceeds the shape."""
    at_v, at_nb = [], []
    for d, n in zip(offset, shape):
        d = int(d)
        if abs(d) >= n:
            return (slice(0, 0),) * len(shape), (slice(0, 0),) * len(shape)
        if d <= 0:
            at_v.append(slice(-d, n))
            at_nb.append(slice(0, n + d))
        else:
            at_v.append(slice(0, n - d))
            at_nb.append(slice(d, n))
    return tuple(at_v), tuple(at_nb)


def _check_labels(labels, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise TypeError(f"{name}: expected an integer label array, got dtype {labels.dtype}")
    if labels.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2D (Y, X) or 3D (Z, Y, X) array, got shape {labels.shape}")
    return labels


def widen_borders(labels: np.ndarray) -> np.ndarray:
    """Mark instance borders as boundary (label 0), in-plane.

    A voxel becomes boundary when its 3×3 in-plane window (per z-slice in 3D) holds
    more than one id, label 0 counted as an id. This thickens membranes so that
    affinities across a border are 0 on both of its sides, as the superhuman /
    PEA pipelines do.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)

    Returns
    -------
    ndarray, same shape and dtype as ``labels``
    """
    labels = _check_labels(labels)
    size = (3, 3) if labels.ndim == 2 else (1, 3, 3)
    hi = ndimage.maximum_filter(labels, size=size, mode="nearest")
    lo = ndimage.minimum_filter(labels, size=size, mode="nearest")
    out = labels.copy()
    out[hi != lo] = 0
    return out


def affinities_from_labels(
    labels: np.ndarray,
    offsets: Sequence[Sequence[int]],
    *,
    background_is_instance: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Affinity targets of a label array.

    ``affs[c, v] = 1`` if ``labels[v] == labels[v + offsets[c]]``, else 0.

    Parameters
    ----------
    labels : ndarray of int, shape (Y, X) or (Z, Y, X)
        Instance labels; 0 is background / boundary.
    offsets : sequence of C int tuples, each of length ``labels.ndim``
    background_is_instance : bool, default False
        False (EM convention, waterz): an edge touching label 0 has target 0, so
        boundary voxels cut every edge. True (nuclei on dark background): two
        background pixels are linked (target 1), a background–nucleus edge is 0.

    Returns
    -------
    affs : ndarray of float32, shape (C, *labels.shape)
        Targets in {0, 1}; 0 where undefined.
    valid : ndarray of bool, shape (C, *labels.shape)
        True where ``v + offsets[c]`` lies inside the array.
    """
    labels = _check_labels(labels)
    offsets = check_offsets(offsets, labels.ndim)
    affs = np.zeros((len(offsets),) + labels.shape, dtype=np.float32)
    valid = np.zeros((len(offsets),) + labels.shape, dtype=bool)
    for c, o in enumerate(offsets):
        at_v, at_nb = edge_slices(o, labels.shape)
        a, b = labels[at_v], labels[at_nb]
        same = a == b
        if not background_is_instance:
            same &= a != 0
        affs[c][at_v] = same
        valid[c][at_v] = True
    return affs, valid


def labeled_region_mask(annotated: np.ndarray, offsets: Sequence[Sequence[int]]) -> np.ndarray:
    """Edges whose affinity target is known under sparse instance annotation.

    Annotated instances are complete, so an edge is known when both endpoints are
    annotated (same or different instance) or when it crosses the boundary of an
    annotated instance: the endpoint outside it belongs to another instance, so the
    target is 0. Only edges with *neither* endpoint annotated are unknown.

    Parameters
    ----------
    annotated : ndarray, shape (Y, X) or (Z, Y, X)
        Bool mask of annotated voxels, or a sparse label array (non-zero =
        annotated) such as :func:`affcons_lib.data.annotate_instances` returns.
    offsets : sequence of C int tuples

    Returns
    -------
    ndarray of bool, shape (C, *annotated.shape)
        The labeled region M; False also where the edge leaves the array.
    """
    annotated = _check_labels(annotated, "annotated") != 0
    offsets = check_offsets(offsets, annotated.ndim)
    mask = np.zeros((len(offsets),) + annotated.shape, dtype=bool)
    for c, o in enumerate(offsets):
        at_v, at_nb = edge_slices(o, annotated.shape)
        mask[c][at_v] = annotated[at_v] | annotated[at_nb]
    return mask


def training_targets(labels: np.ndarray, offsets: Sequence[Sequence[int]], *, widen: bool,
                     background_is_instance: bool = False, annotated: np.ndarray | None = None):
    """The affinity targets training computes, and where they are known: one
    recipe for the sampler, the held-out patches and the scores.

    Parameters
    ----------
    labels : ndarray of int, (Z, Y, X) or (Y, X)
        The labels the targets come from (dense, or a sparse annotation).
    offsets : sequence of C int tuples
    widen : bool
        Widen borders first (:func:`widen_borders`; 3D training does).
    background_is_instance : bool
        As :func:`affinities_from_labels` (2D dense labels).
    annotated : ndarray, optional
        A sparse annotation: the labeled region M is its
        :func:`labeled_region_mask` within the valid edges.

    Returns
    -------
    (target, valid, labeled) : float32 (C, *spatial) and two bool (C, *spatial);
    ``labeled`` is M, or every valid edge when ``annotated`` is None.
    """
    target, valid = affinities_from_labels(widen_borders(labels) if widen else labels, offsets,
                                           background_is_instance=background_is_instance)
    labeled = labeled_region_mask(annotated, offsets) & valid if annotated is not None else valid
    return target, valid, labeled


def noisy_targets(labels: np.ndarray, offsets: Sequence[Sequence[int]], *, widen: bool,
                  background_is_instance: bool = False, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    """The targets of ``labels`` as an imperfect network would predict them:
    ``clip(0.9 t + 0.05 + N(0, sigma), 0, 1)``. Through a segmentation pipeline they
    give the ceiling a score table shows beside the exact targets: a pipeline that
    needs exact 0s and 1s would not see a good network."""
    t = training_targets(labels, offsets, widen=widen, background_is_instance=background_is_instance)[0]
    rng = np.random.default_rng(seed)
    return np.clip(0.9 * t + 0.05 + rng.normal(0.0, sigma, t.shape), 0, 1).astype(np.float32)


def wrong_side(pred, target):
    """Edges whose prediction is on the wrong side of 0.5: ``pred >= 0.5`` (one
    instance) where the target says apart, or below where it says together. NumPy
    arrays or torch tensors alike; bool of the same shape."""
    return (pred >= 0.5) != (target >= 0.5)


def affinities_from_embeddings(emb, offsets: Sequence[Sequence[int]], *, clip_negative: bool = True):
    """Affinities of f(θ2): cosine similarity of L2-normalised pixel embeddings.

    ``aff[c, v] = <e(v), e(v + o_c)> / (|e(v)| |e(v + o_c)|)``, differentiable.

    Parameters
    ----------
    emb : torch.Tensor or ndarray, shape (N, E, *spatial) or (E, *spatial)
        Embeddings with E channels; ``len(spatial)`` must equal the offsets' length.
    offsets : sequence of C int tuples
    clip_negative : bool, default True
        Clip similarities at 0 so that the result is an affinity in [0, 1] (PEA /
        the paper); False returns the raw cosine similarity in [-1, 1].

    Returns
    -------
    Same type as ``emb``, float, shape (N, C, *spatial) or (C, *spatial); 0 where
    ``v + o`` leaves the array (use :func:`affinities_from_labels`' ``valid`` to mask).
    """
    import torch

    is_numpy = isinstance(emb, np.ndarray)
    x = torch.from_numpy(emb) if is_numpy else emb
    if not torch.is_tensor(x) or not torch.is_floating_point(x):
        raise TypeError(f"emb: expected a floating-point tensor or array, got {type(emb).__name__}"
                        f" of dtype {getattr(emb, 'dtype', None)}")
    offs = list(offsets)
    if not offs:
        raise ValueError("offsets: expected at least one offset, got none")
    n_spatial = len(offs[0])
    if x.ndim == n_spatial + 1:
        batched, x = False, x.unsqueeze(0)
    elif x.ndim == n_spatial + 2:
        batched = True
    else:
        raise ValueError(
            f"emb: expected shape (N, E, *spatial) or (E, *spatial) with {n_spatial} spatial axes "
            f"to match the offsets, got {tuple(x.shape)}"
        )
    offs = check_offsets(offs, n_spatial)
    # |e| as the root of a sum of squares: the same norm as torch.linalg.vector_norm
    # up to rounding, and 25x faster over the channel axis of a contiguous tensor
    norm = (x * x).sum(1, keepdim=True).sqrt().clamp_min(1e-6)
    out = _pairwise_cosine().apply(x / norm, tuple(map(tuple, offs)), 0.0 if clip_negative else -1.0)
    if not batched:
        out = out[0]
    return out.numpy() if is_numpy else out


#: Voxels (batch × spatial) from which the cosine is accumulated channel by
#: channel on the CPU (:func:`_pairwise_cosine`); the crossover measured with
#: ``benchmarks/bench_models.py`` lies between 64k and 150k voxels.
_BY_CHANNEL_FROM = 2 ** 17


@functools.cache
def _pairwise_cosine():
    """The torch autograd function ``apply(x, offsets, low)`` ->
    ``out[:, c, v] = clamp(<x(v), x(v + o_c)>, low, 1)`` for unit vectors ``x``
    (N, E, *spatial), 0 where ``v + o_c`` leaves the array.

    Its backward adds the two products of each offset into one gradient. Plain
    autograd gives every slice of every offset its own zero-filled gradient of the
    whole input (24 full tensors a step for the 12 offsets of 3D): a fifth of a
    small f(θ2) training step on the CPU, half of it saved (``bench_models``). The gradient is autograd's: zero where the
    clamp is active, passed on where ``low <= s <= 1`` as ``torch.clamp`` does.
    Built on first use, so that importing this module does not import torch."""
    import torch

    every = (slice(None), slice(None))

    class PairwiseCosine(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, offsets, low):
            shape = tuple(x.shape[2:])
            out = x.new_zeros((x.shape[0], len(offsets)) + shape)
            inside = [] if ctx.needs_input_grad[0] else None
            # On the CPU the product of two (N, E, ...) slices is memory-bound: for
            # large tensors (prediction tiles, paper-scale patches) accumulating
            # channel by channel into the output, with no E-fold temporary, is 3-6x
            # faster; for small ones (the CPU-sized training patch) one product and
            # sum makes fewer calls. Equal up to float rounding (summation order).
            by_channel = x.device.type == "cpu" and out[:, 0].numel() >= _BY_CHANNEL_FROM
            if by_channel:  # a channel's slice must be contiguous; the CPU network's output is channels-last
                x = x.contiguous()
            for c, o in enumerate(offsets):
                at_v, at_nb = edge_slices(o, shape)
                if by_channel:
                    sim = out[(slice(None), c) + at_v]
                    for e in range(x.shape[1]):
                        sim.addcmul_(x[(slice(None), e) + at_v], x[(slice(None), e) + at_nb])
                else:
                    sim = (x[every + at_v] * x[every + at_nb]).sum(1)
                if inside is not None:
                    inside.append((sim >= low) & (sim <= 1.0))
                # clamp: rounding can push a cosine of unit vectors just past +-1
                if by_channel:
                    sim.clamp_(low, 1.0)
                else:
                    out[(slice(None), c) + at_v] = sim.clamp(low, 1.0)
            if inside is not None:
                ctx.save_for_backward(x, *inside)
                ctx.offsets = offsets
            return out

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad_out):
            x, *inside = ctx.saved_tensors
            grad = torch.zeros_like(x)
            shape = tuple(x.shape[2:])
            for c, o in enumerate(ctx.offsets):
                at_v, at_nb = edge_slices(o, shape)
                g = (grad_out[(slice(None), c) + at_v] * inside[c]).unsqueeze(1)
                grad[every + at_v] += g * x[every + at_nb]
                grad[every + at_nb] += g * x[every + at_v]
            return grad, None, None

    return PairwiseCosine


def affinity_entropy(affs, eps: float = 1e-6):
    """Binary entropy of affinities, per channel: H(a) = -a ln a - (1-a) ln(1-a).

    Low entropy (a near 0 or 1) marks a confident prediction; the maximum, ln 2 at
    a = 0.5, an unreliable one.

    Parameters
    ----------
    affs : torch.Tensor or ndarray of float, any shape, values in [0, 1]
    eps : float
        Clamp so that log(0) never occurs.

    Returns
    -------
    Same type and shape as ``affs``, values in [0, ln 2].
    """
    if isinstance(affs, np.ndarray):
        a = np.clip(affs, eps, 1 - eps)
        return -(a * np.log(a) + (1 - a) * np.log1p(-a))
    a = affs.clamp(eps, 1 - eps)
    return -(a * a.log() + (1 - a) * (-a).log1p())


def check_affs(affs, n_channels_min: int, spatial_ndim: int | None = None, name: str = "affs") -> np.ndarray:
    """``affs`` as an array of float affinities (C >= ``n_channels_min``, then
    ``spatial_ndim`` axes), finite, in [0, 1] (rounding past the ends clipped); any
    other input is an error naming ``name`` and what was expected."""
    affs = np.asarray(affs)
    if not np.issubdtype(affs.dtype, np.floating):
        raise TypeError(f"{name}: expected floating-point affinities, got dtype {affs.dtype}")
    if spatial_ndim is not None and affs.ndim != spatial_ndim + 1:
        raise ValueError(f"{name}: expected shape (C, {'Z, ' if spatial_ndim == 3 else ''}Y, X), got {affs.shape}")
    if affs.shape[0] < n_channels_min:
        raise ValueError(f"{name}: expected at least {n_channels_min} channels, got {affs.shape[0]}")
    if not np.isfinite(affs).all():
        bad = int((~np.isfinite(affs)).sum())
        raise ValueError(f"{name}: {bad} NaN or infinite value(s); affinities must be finite, in [0, 1]")
    lo, hi = (float(affs.min()), float(affs.max())) if affs.size else (0.0, 1.0)
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise ValueError(f"{name}: values in [{lo:g}, {hi:g}]; affinities must lie in [0, 1]")
    if lo < 0 or hi > 1:  # float rounding only: clip
        affs = np.clip(affs, 0, 1).astype(affs.dtype, copy=False)
    return affs
