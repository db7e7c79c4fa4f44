"""Whole-volume (or whole-image) prediction with overlapping tiles.

A network sees one tile at a time; affinities of neighbouring tiles are blended
with a weight that falls off towards each tile's border (where the network has
less context) and is zero on edges whose neighbour lies outside the tile (those
affinities are undefined there). Memory is bounded by the tile, not the volume,
except for the output itself.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import torch

from .affinity import affinities_from_embeddings, affinities_from_labels, affinity_entropy, check_offsets

__all__ = ["predict_affinities", "tile_starts"]


def tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Start positions covering ``size`` with tiles of ``tile`` every ``stride``;
    the last tile is shifted to end at ``size``."""
    if tile >= size:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def _blend_window(shape: Sequence[int]) -> np.ndarray:
    """Separable window, 1 in the middle and falling linearly to a small positive
    value at the border, so every voxel keeps some weight."""
    w = np.ones(shape, np.float32)
    for axis, n in enumerate(shape):
        if n <= 2:
            continue
        ramp = np.minimum(np.arange(1, n + 1), np.arange(n, 0, -1)).astype(np.float32)
        ramp = np.clip(ramp / max(1.0, n / 4), 0.05, 1.0)
        w *= ramp.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    return w


@torch.no_grad()
def predict_affinities(model: torch.nn.Module, raw: np.ndarray, offsets, *, tile: Sequence[int],
                       stride: Sequence[int] | None = None, batch_size: int = 1, device=None,
                       with_entropy: bool = True):
    """Affinities of a whole volume or image by overlapping tiles.

    Parameters
    ----------
    model : ResidualUNet
        An embedding network (f(θ2), the paper's inference branch) or an affinity
        network (f(θ1)); its ``kind`` decides how the output becomes affinities.
    raw : ndarray of float, shape (Z, Y, X) or (Y, X), values in [0, 1]; with a
        leading channel axis (C, ...) for a model of C > 1 input channels (RGB)
    offsets : sequence of offsets matching the model's affinities
    tile : tile shape, each in-plane size a multiple of the network's divisor
        (and not larger than the input; smaller inputs are padded by reflection).
    stride : step between tiles (default: half the tile, or less so that every
        edge shorter than the tile lies inside some tile). An edge that no tile
        contains whole (possible when stride > tile - offset) is left at 0.
    batch_size : tiles per forward pass.
    device : torch device (default: the model's).
    with_entropy : also return the affinity entropy.

    Returns
    -------
    affs : ndarray of float32, shape (C, *spatial shape of raw)
    entropy : ndarray of float32, same shape (only if ``with_entropy``)
    """
    raw = np.asarray(raw, dtype=np.float32)
    channels = int(getattr(model, "in_channels", 1))
    if channels > 1:  # a leading channel axis (RGB)
        if raw.shape[0] != channels:
            raise ValueError(f"raw: the model takes {channels} channels first, got shape {raw.shape}")
        dim = raw.ndim - 1
    else:
        dim = raw.ndim
    if dim not in (2, 3):
        raise ValueError(f"raw: expected a 2D or 3D array, got shape {raw.shape}")
    spatial = raw.shape[-dim:]
    offsets = check_offsets(offsets, dim)
    tile = tuple(int(t) for t in tile)
    if len(tile) != dim:
        raise ValueError(f"tile: expected {dim} sizes, got {tile}")
    divisor = getattr(model, "divisor", 1)
    for t in tile[-2:]:
        if t % divisor:
            raise ValueError(f"tile: in-plane sizes must be multiples of {divisor}, got {tile}")
    if stride is None:
        # half a tile, but never more than tile - longest offset along an axis, so
        # that every edge shorter than a tile lies inside at least one tile
        reach = [max(abs(o[a]) for o in offsets) for a in range(dim)]
        stride = tuple(max(1, min(t // 2, t - r)) for t, r in zip(tile, reach))
    stride = tuple(int(s) for s in stride)
    if len(stride) != dim or min(stride) < 1:
        raise ValueError(f"stride: expected {dim} positive sizes, got {stride}")
    # pad by reflection where the input is smaller than a tile
    pad = [(0, max(0, t - n)) for t, n in zip(tile, spatial)]
    if channels > 1:
        pad = [(0, 0)] + pad
    padded = np.pad(raw, pad, mode="reflect") if any(p[1] for p in pad) else raw
    shape = padded.shape[-dim:]
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()

    out = np.zeros((len(offsets),) + shape, np.float32)
    weight = np.zeros((len(offsets),) + shape, np.float32)
    window = _blend_window(tile)
    _, tile_valid = affinities_from_labels(np.zeros(tile, np.int32), offsets)
    tile_weight = window[None] * tile_valid
    corners = list(itertools.product(*[tile_starts(n, t, s) for n, t, s in zip(shape, tile, stride)]))
    try:
        for k in range(0, len(corners), batch_size):
            group = corners[k:k + batch_size]
            x = np.stack([padded[(Ellipsis,) + tuple(slice(c, c + t) for c, t in zip(corner, tile))]
                          for corner in group])
            y = model(torch.from_numpy(x if channels > 1 else x[:, None]).to(device))
            if isinstance(y, tuple):  # foreground head: affinities come first
                y = y[0]
            if getattr(model, "kind", "affinity") == "embedding":
                y = affinities_from_embeddings(y, offsets)
            y = y.float().cpu().numpy()
            for corner, pred in zip(group, y):
                region = (slice(None),) + tuple(slice(c, c + t) for c, t in zip(corner, tile))
                out[region] += pred * tile_weight
                weight[region] += tile_weight
    finally:
        model.train(was_training)
    affs = np.divide(out, weight, out=np.zeros_like(out), where=weight > 0)
    crop = (slice(None),) + tuple(slice(0, n) for n in spatial)
    affs = np.ascontiguousarray(affs[crop])
    if with_entropy:
        return affs, affinity_entropy(affs).astype(np.float32)
    return affs
