"""Crop-invariant fragments: an over-segmentation whose every step looks only a
bounded distance away, so that a block read with :func:`context` voxels around
it gives, inside the block, exactly the fragments of the whole volume.

The fragments are the trees of a forest of *pointers*, one per voxel:

1. An edge is *strong* when its nearest-neighbour affinity exceeds ``threshold``;
   a voxel is *linked* when one of its edges is strong, *inside* when all are.
2. Height: the Euclidean distance from an inside voxel to the nearest other
   voxel, capped at ``max_distance`` (0 off the inside). The cap bounds how far
   the distance transform looks.
3. A linked voxel points to the highest voxel it reaches in at most ``radius``
   steps along strong edges (the smaller raster index among equals): a
   distance-transform watershed by steepest ascent, which never crosses a weak
   edge. A voxel that is its own highest is a root.
4. An unlinked voxel (every edge weak: a boundary) points to its highest linked
   neighbour, or else one step towards the nearest linked voxel.

A fragment is the set of voxels whose pointer chains end at one root; its id is
1 + the root's raster index in the volume, so the same wherever it is computed.
The pointers are local; chains are not, and blockwise they are followed across
blocks by :func:`block_endpoints` and :func:`resolve_exits`.

In memory: :func:`fragments`; ``tests/test_fragments.py`` checks the invariance
block by block.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage
from .labels import relabel_consecutive

__all__ = ["MODES", "context", "pointers", "fragments", "block_endpoints", "resolve_exits", "look_up"]

MODES = ("volume", "slice")


def context(*, mode: str = "volume", radius: int = 3, max_distance: int = 16, **_) -> tuple[int, int, int]:
    """Voxels of context a block needs on each side (Z, Y, X) for its pointers to
    equal the whole volume's: the ascent's ``radius``, the distance cap, one voxel
    for *inside* (it looks at the upper neighbours' edges) and one for the
    unlinked voxels' neighbourhood. In-plane only for ``mode='slice'``."""
    c = int(radius) + int(max_distance) + 2
    return (c if mode == "volume" else 0, c, c)


def _check(mode, threshold, radius, max_distance):
    if mode not in MODES:
        raise ValueError(f"mode: expected 'volume' (isotropic data) or 'slice' (anisotropic), got {mode!r}")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold: expected a value in [0, 1), got {threshold}")
    if int(radius) < 1 or int(max_distance) < 1:
        raise ValueError(f"radius and max_distance: expected >= 1, got {radius}, {max_distance}")


def pointers(affs: np.ndarray, *, mode: str = "volume", threshold: float = 0.5, radius: int = 3,
             max_distance: int = 16) -> np.ndarray:
    """Every voxel's pointer (module docstring, steps 1-4).

    Parameters
    ----------
    affs : ndarray of float, shape (C >= 3, Z, Y, X), values in [0, 1]
        Channels 0, 1, 2: the z, y, x nearest-neighbour affinities (channel ``c``
        at ``v`` is the edge between ``v - e_c`` and ``v``).
    mode : 'volume' (3D, isotropic data) or 'slice' (in-plane edges only, for
        anisotropic sections; z is left to the agglomeration).
    threshold, radius, max_distance : see the module docstring.

    Returns
    -------
    ndarray of int64, shape (Z, Y, X): the raster index (into this array) each
    voxel points to; roots point to themselves.
    """
    from ._fragments import ascent_pointers
    from ..method.affinity import check_affs

    affs = check_affs(affs, 3, spatial_ndim=3)
    _check(mode, threshold, radius, max_distance)
    nn = np.ascontiguousarray(affs[:3], dtype=np.float32)
    strong = nn > threshold
    for c in range(3):  # the edge stored at index 0 of its axis leads out of the array
        index = [slice(None)] * 3
        index[c] = 0
        strong[c][tuple(index)] = False
    if mode == "slice":
        strong[0] = False
    shape = nn.shape[1:]
    inside, linked = np.ones(shape, bool), np.zeros(shape, bool)
    for c in (0, 1, 2) if mode == "volume" else (1, 2):
        at_v, at_lower = [slice(None)] * 3, [slice(None)] * 3
        at_v[c], at_lower[c] = slice(1, None), slice(0, -1)
        s = strong[c][tuple(at_v)]
        inside[tuple(at_v)] &= s  # the edge to the lower neighbour
        inside[tuple(at_lower)] &= s  # the same edge seen from below
        linked[tuple(at_v)] |= s
        linked[tuple(at_lower)] |= s
    inside &= linked  # a voxel in a one-voxel-wide axis has no edges to be strong

    def distance(mask):
        if mode == "volume":
            d = ndimage.distance_transform_edt(mask)
        else:
            d = np.stack([ndimage.distance_transform_edt(m) for m in mask])
        return np.minimum(d, max_distance).astype(np.float32)

    # among voxels of one distance (all 0 off the inside), the one with more strong
    # edges is higher: a boundary voxel that one spurious strong edge links to an
    # instance attracts nothing (1e-3 keeps distances in order: they differ by more)
    n_strong = np.zeros(shape, np.float32)
    for c in range(3):
        at_v, at_lower = [slice(None)] * 3, [slice(None)] * 3
        at_v[c], at_lower[c] = slice(1, None), slice(0, -1)
        n_strong[tuple(at_v)] += strong[c][tuple(at_v)]
        n_strong[tuple(at_lower)] += strong[c][tuple(at_v)]
    height, to_linked = distance(inside) + np.float32(1e-3) * n_strong, distance(~linked)
    flat = ascent_pointers(strong, linked, height, to_linked, int(radius), mode == "volume")
    return flat.reshape(shape)


def _jump(nxt: np.ndarray) -> np.ndarray:
    """Follow flat pointers to their fixed points (pointer doubling)."""
    end = nxt
    while True:
        further = end[end]
        if np.array_equal(further, end):
            return end
        end = further


def fragments(affs: np.ndarray, *, sequential: bool = True, **options) -> np.ndarray:
    """Crop-invariant fragments of a volume in memory (module docstring).

    Parameters
    ----------
    affs : ndarray of float, shape (C >= 3, Z, Y, X), values in [0, 1]
    sequential : ids 1, 2, ... (default), or 1 + the root's raster index
        (``False``, the ids :func:`block_endpoints` gives).
    **options : ``mode``, ``threshold``, ``radius``, ``max_distance`` of :func:`pointers`.

    Returns
    -------
    ndarray of uint64, shape (Z, Y, X), no 0.
    """
    ptr = pointers(affs, **options)
    roots = _jump(ptr.ravel())
    if not sequential:
        return (roots + 1).astype(np.uint64).reshape(ptr.shape)
    # the roots' ranks (roots are voxel indices: counted, not sorted)
    return relabel_consecutive(roots, keep_zero=False).reshape(ptr.shape)


def block_endpoints(affs: np.ndarray, block: Sequence[slice], origin: Sequence[int], volume_shape: Sequence[int],
                    **options) -> tuple[np.ndarray, np.ndarray]:
    """Where the pointer chains of a block's voxels end, from the block plus its context.

    Parameters
    ----------
    affs : ndarray of float, (C >= 3, *crop): the affinities of the block with
        (at least) :func:`context` voxels around it, clipped at the volume.
    block : three slices, the block inside the crop.
    origin : position of the crop's first voxel in the volume.
    volume_shape : the volume's shape (Z, Y, X).
    **options : of :func:`pointers`.

    Returns
    -------
    ends : ndarray of uint64, the block's shape: 1 + the volume raster index of
        where each voxel's chain ends, at a root inside the block or at the first
        voxel outside it (an *exit*, followed further by :func:`resolve_exits`).
    exits : ndarray of uint64, the distinct exit ids among ``ends``.
    """
    ptr = pointers(affs, **options)
    crop_shape = ptr.shape
    block = tuple(slice(*s.indices(n)[:2]) for s, n in zip(block, crop_shape))
    bshape = tuple(s.stop - s.start for s in block)
    target = np.unravel_index(ptr[block].ravel(), crop_shape)
    inside = np.ones(len(target[0]), bool)
    for t, s in zip(target, block):
        inside &= (t >= s.start) & (t < s.stop)
    local = np.arange(int(np.prod(bshape)))
    nxt = local.copy()  # an exit is a fixed point here; followed in the volume later
    nxt[inside] = np.ravel_multi_index(tuple(t[inside] - s.start for t, s in zip(target, block)), bshape)
    end = _jump(nxt)
    leaves = ~inside[end]
    gpos = [np.where(leaves, t[end], np.unravel_index(end, bshape)[k] + s.start) + o
            for k, (t, s, o) in enumerate(zip(target, block, origin))]
    ends = (np.ravel_multi_index(tuple(gpos), tuple(volume_shape)) + 1).astype(np.uint64)
    return ends.reshape(bshape), np.unique(ends[leaves])


def resolve_exits(exits: np.ndarray, ends_at) -> tuple[np.ndarray, np.ndarray]:
    """Follow exits to the roots of their chains.

    Parameters
    ----------
    exits : ndarray of uint64, exit ids (1 + raster index).
    ends_at : callable, ids -> the ``ends`` stored at those voxels (a reader of
        the blockwise fragments array).

    Returns
    -------
    (ids, roots) : sorted exit ids and the root id each chain ends at.
    """
    ids = np.unique(np.asarray(exits, np.uint64))
    current = ids.copy()
    for _ in range(len(ids) + 1):  # each round moves every unfinished chain on to another exit
        further = np.asarray(ends_at(current), np.uint64)
        if np.array_equal(further, current):
            return ids, current
        current = further
    raise RuntimeError("resolve_exits: pointer chains run in a cycle: the blocks were computed with less context "
                       "than the fragments need (fragments.context) or with other options")


def look_up(values: np.ndarray, keys: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """``values`` through a table: those found among the sorted ``keys`` become
    their ``mapped`` value, the rest stay (chain ends -> roots with the exit
    table, fragments -> segments with a threshold's table)."""
    if not len(keys):
        return values
    pos = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return np.where(keys[pos] == values, mapped[pos], values)
