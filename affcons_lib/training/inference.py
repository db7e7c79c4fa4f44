"""Whole-volume (or whole-image) prediction with overlapping tiles.

A network sees one tile at a time; affinities of neighbouring tiles are blended
with a weight that falls off towards each tile's border (where the network has
less context) and is zero on edges whose neighbour lies outside the tile (those
affinities are undefined there). Memory is bounded by the tile, not the volume,
except for the output itself; :func:`predict_region` predicts one region of the
same tile grid (blockwise prediction, :mod:`affcons_lib.blockwise.predict`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..method.affinity import affinities_from_embeddings, affinities_from_labels, affinity_entropy, check_offsets

__all__ = ["predict_affinities", "predict_region", "plan_tiles", "TilePlan", "tile_starts", "default_tile", "default_stride", "part_tiling"]


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


@dataclass
class TilePlan:
    """Where the tiles of a whole-volume prediction lie, and how they are weighted.

    The tiles form one grid over the whole (padded) volume, so any region of it
    can be predicted alone from the tiles that touch it, with exactly the values
    the whole-volume prediction has there (:func:`predict_region`): this is how
    blockwise prediction matches in-memory prediction.
    """

    shape: tuple  # spatial shape the grid covers
    tile: tuple
    stride: tuple
    corners: list  # tile corners, in processing order
    tile_weight: np.ndarray  # (C, *tile): blend window x edges inside the tile


def plan_tiles(model: torch.nn.Module, shape: Sequence[int], offsets, *, tile: Sequence[int],
               stride: Sequence[int] | None = None) -> TilePlan:
    """The tile grid of :func:`predict_affinities` over a volume of ``shape``
    (spatial, at least one tile in every axis); checks ``tile`` and ``stride``."""
    dim = len(shape)
    offsets = check_offsets(offsets, dim)
    tile = tuple(int(t) for t in tile)
    if len(tile) != dim:
        raise ValueError(f"tile: expected {dim} sizes, got {tile}")
    divisor = getattr(model, "divisor", 1)
    for t in tile[-2:]:
        if t % divisor:
            raise ValueError(f"tile: in-plane sizes must be multiples of {divisor}, got {tile}")
    if any(t > n for t, n in zip(tile, shape)):
        raise ValueError(f"tile {tile} is larger than the volume {tuple(shape)}")
    if stride is None:
        # half a tile, but never more than tile - longest offset along an axis, so
        # that every edge shorter than a tile lies inside at least one tile
        reach = [max(abs(o[a]) for o in offsets) for a in range(dim)]
        stride = tuple(max(1, min(t // 2, t - r)) for t, r in zip(tile, reach))
    stride = tuple(int(s) for s in stride)
    if len(stride) != dim or min(stride) < 1:
        raise ValueError(f"stride: expected {dim} positive sizes, got {stride}")
    _, tile_valid = affinities_from_labels(np.zeros(tile, np.int32), offsets)
    corners = list(itertools.product(*[tile_starts(n, t, s) for n, t, s in zip(shape, tile, stride)]))
    return TilePlan(tuple(int(n) for n in shape), tile, stride, corners, _blend_window(tile)[None] * tile_valid)


def _lone_tile_is_slow(model: torch.nn.Module, tile: Sequence[int], device: torch.device) -> bool:
    """Whether PyTorch would run ``model`` on a batch of one ``tile`` with its
    reference CPU convolution instead of oneDNN's.

    PyTorch picks the CPU kernel by the input's size: a lone 16x96x96 tile of the
    small networks gets the reference kernel and takes 5x as long as a batch of two
    such tiles (measured on 2 cores); a lone 16x252x252 tile gets oneDNN. Asked of
    PyTorch itself, for the first 3x3(x3) convolution of the network.
    """
    select = getattr(torch._C, "_select_conv_backend", None)  # private: absent -> never pair
    conv = next((m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))
                 and min(m.kernel_size) == 3), None)
    if device.type != "cpu" or select is None or conv is None:
        return False
    x = torch.empty(1, device=device).expand(1, conv.in_channels, *tile)  # the shape alone, no memory
    try:
        backend = select(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, False,
                         (0,) * len(tile), conv.groups, None)
    except (RuntimeError, TypeError):
        return False
    return "Slow" in str(backend)


@torch.no_grad()
def predict_region(model: torch.nn.Module, read: Callable, plan: TilePlan, offsets, start: Sequence[int],
                   stop: Sequence[int], *, batch_size: int = 1, device=None) -> np.ndarray:
    """Affinities of the region ``[start, stop)`` of the volume that ``plan``
    tiles: every tile of the plan touching the region is predicted (its raw read
    with ``read(slices)``, channel axis first for RGB) and blended in, in the
    plan's order. Returns float32 (C, *region shape). Memory: the region and one
    batch of tiles."""
    dim = len(plan.shape)
    start, stop = tuple(int(a) for a in start), tuple(int(b) for b in stop)
    channels = int(getattr(model, "in_channels", 1))
    device = device or next(model.parameters()).device
    n_out = plan.tile_weight.shape[0]
    region = tuple(b - a for a, b in zip(start, stop))
    out = np.zeros((n_out,) + region, np.float32)
    weight = np.zeros((n_out,) + region, np.float32)
    corners = [c for c in plan.corners
               if all(c[a] < stop[a] and c[a] + plan.tile[a] > start[a] for a in range(dim))]
    # tiles that PyTorch would convolve slowly one at a time go in pairs (a lone last
    # tile with a copy of itself): the values are the same, the kernel 5x faster
    pair = _lone_tile_is_slow(model, plan.tile, torch.device(device))
    if pair:
        batch_size = max(batch_size, 2)
    was_training = model.training
    model.eval()
    # Full float32 convolutions: the TF32 default of recent GPUs moved affinities by up to
    # 0.03 against the CPU's on an H200; without it they agree within 3e-5.
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for k in range(0, len(corners), batch_size):
            group = corners[k:k + batch_size]
            x = np.stack([np.asarray(read(tuple(slice(c, c + t) for c, t in zip(corner, plan.tile))), np.float32)
                          for corner in group])
            x = torch.from_numpy(x if channels > 1 else x[:, None]).to(device)
            y = model(torch.cat([x, x]) if pair and len(group) == 1 else x)
            if isinstance(y, tuple):  # foreground head: affinities come first
                y = y[0]
            y = y[:len(group)]
            if getattr(model, "kind", "affinity") == "embedding":
                y = affinities_from_embeddings(y, offsets)
            y = y.float().cpu().contiguous().numpy()  # the networks' layout is channels-last
            for corner, pred in zip(group, y):
                lo = [max(c, a) for c, a in zip(corner, start)]
                hi = [min(c + t, b) for c, t, b in zip(corner, plan.tile, stop)]
                src = (slice(None),) + tuple(slice(l - c, h - c) for l, h, c in zip(lo, hi, corner))
                dst = (slice(None),) + tuple(slice(l - a, h - a) for l, h, a in zip(lo, hi, start))
                out[dst] += pred[src] * plan.tile_weight[src]
                weight[dst] += plan.tile_weight[src]
    finally:
        model.train(was_training)
        torch.backends.cudnn.allow_tf32 = tf32
    return np.divide(out, weight, out=np.zeros_like(out), where=weight > 0)


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
    if len(tuple(tile)) != dim:
        raise ValueError(f"tile: expected {dim} sizes, got {tuple(tile)}")
    # pad by reflection where the input is smaller than a tile
    pad = [(0, max(0, int(t) - n)) for t, n in zip(tile, spatial)]
    if channels > 1:
        pad = [(0, 0)] + pad
    padded = np.pad(raw, pad, mode="reflect") if any(p[1] for p in pad) else raw
    shape = padded.shape[-dim:]
    plan = plan_tiles(model, shape, offsets, tile=tile, stride=stride)
    affs = predict_region(model, lambda region: padded[(Ellipsis,) + region], plan, offsets, (0,) * dim, shape,
                          batch_size=batch_size, device=device)
    crop = (slice(None),) + tuple(slice(0, n) for n in spatial)
    affs = np.ascontiguousarray(affs[crop])
    if with_entropy:
        return affs, affinity_entropy(affs).astype(np.float32)
    return affs


def default_tile(shape, patch, divisor: int, max_inplane: int = 256, cover: bool = False):
    """Inference tiles: twice the training depth in z (3D), and in-plane the largest
    multiple of the network's divisor up to ``max_inplane`` that fits the data --
    few large tiles are much faster than many training-sized ones.

    With ``cover``, an in-plane size up to ``max_inplane`` that is not a multiple
    of the divisor is rounded up instead, so that one tile covers it and
    :func:`predict_affinities` pads the input by reflection (blockwise prediction
    reads past the volume's end mirrored, the same). Rounding down costs a
    second tile that overlaps the first almost entirely: a 250-wide plane with
    tiles of 248 is predicted from two, four per z-slab in 3D, five times the
    voxels of the part.
    """
    tile = []
    for i, (n, p) in enumerate(zip(shape, patch)):
        if i < len(shape) - 2:
            tile.append(min(n, 2 * p))
        elif cover and n <= max_inplane:
            tile.append(-(-n // divisor) * divisor)
        else:
            tile.append(max(divisor, (min(n, max_inplane) // divisor) * divisor))
    return tuple(tile)


def default_stride(tile):
    """Inference stride: three quarters of the tile (tiles overlap by a quarter)."""
    return tuple(max(1, (3 * int(x)) // 4) for x in tile)


def part_tiling(shape, patch, divisor: int):
    """(tile, stride) for predicting a whole part in memory: one tile per plane up
    to 256 (:func:`default_tile` with ``cover``), overlapping by a quarter. Both
    ``predict.predict_part`` and the training loop's validation use it, so that a
    validation score is the one predict + evaluate give."""
    tile = default_tile(shape, patch, divisor, cover=True)
    return tile, default_stride(tile)
