"""A result to look at: raw, affinities, fragments and segmentation of a volume or
image without ground truth, in one zarr container that the field's viewers open.

    python -m affcons_lib predict CHECKPOINT --raw RAW.h5:KEY --layers OUT.zarr [--threshold 0.5] [--napari]

:func:`segment_raw` predicts the whole array with f(θ2) (the tiling of
:func:`~affcons_lib.training.predict.predict_part`), cuts it into fragments and
agglomerates them at one threshold (3D: the instrument's recipe; 2D: the mutex
watershed). :func:`write_layers` writes each layer as an array of one zarr group,
``raw``, ``affinities`` (channels first), ``fragments`` and ``segmentation``, with
the attributes daisy / funlib containers carry (``resolution``, ``offset``,
``axis_names``), so napari opens each array as a layer
(``napari OUT.zarr/raw OUT.zarr/segmentation``, or :func:`open_in_napari`, which
knows which is an image and which labels) and neuroglancer through funlib.show.
The container is written beside its place and renamed when complete: nothing
half-written is left.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from ..segmentation.labels import relabel_consecutive

__all__ = ["LAYERS", "segment_raw", "write_layers", "read_layers", "open_in_napari"]

#: The arrays of a layers container, in the order a viewer stacks them, and their kind.
LAYERS = {"raw": "image", "affinities": "image", "fragments": "labels", "segmentation": "labels"}


def segment_raw(checkpoint, raw: np.ndarray, *, threshold: float = 0.5, device="cpu") -> dict:
    """Predict and segment one raw array (already scaled to [0, 1]) with a trained run.

    Parameters
    ----------
    checkpoint : path of ``last.pt`` (or a snapshot / exported weights)
    raw : ndarray of float, (Z, Y, X) for a 3D run; (Y, X) or a stack of sections
        (Z, Y, X) for a 2D one (each section segmented on its own, ids unique)
    threshold : the agglomeration threshold (3D; the mutex watershed has none)

    Returns
    -------
    dict with ``affinities`` (C, *raw.shape), ``fragments`` and ``segmentation``
    (uint32, raw's shape).
    """
    from ..method import affinity
    from ..training.checkpoint import load_checkpoint
    from ..evaluation.evaluate import fragments_2d, segment_2d
    from ..training.inference import part_tiling, predict_affinities
    from ..segmentation.recipe import Recipe, recipe_fragments, recipe_segmentations

    nets, cfg, _ = load_checkpoint(checkpoint, device)  # once, for every section of a stack
    raw = np.asarray(raw, np.float32)
    if raw.ndim != cfg.dim and not (cfg.dim == 2 and raw.ndim == 3):
        raise ValueError(f"raw: the run {checkpoint} is {cfg.dim}D and expects a {cfg.dim}D array (or, 2D, a stack "
                         f"of sections), got shape {raw.shape}")
    offsets = affinity.OFFSETS_3D if cfg.dim == 3 else affinity.OFFSETS_2D
    net = nets["embedding"]

    def one(array):
        tile, stride = part_tiling(array.shape, cfg.patch, net.divisor)
        affs = predict_affinities(net, array, offsets, tile=tile, stride=stride, with_entropy=False)
        if cfg.dim == 3:
            recipe = Recipe()
            frags = recipe_fragments(affs, recipe)
            return affs, frags, recipe_segmentations(affs, frags, recipe, [threshold])[0]
        return affs, fragments_2d(affs), segment_2d(affs, offsets, largest_is_background=False)

    if raw.ndim == cfg.dim:
        affs, frags, seg = one(raw)
        return dict(affinities=affs, fragments=_consecutive(frags), segmentation=_consecutive(seg))
    # a stack of sections, each segmented on its own; ids made unique over the stack
    parts = [one(section) for section in raw]
    out = {"affinities": np.stack([p[0] for p in parts], axis=1)}
    for k, name in ((1, "fragments"), (2, "segmentation")):
        labels = [_consecutive(p[k]) for p in parts]
        tops = np.cumsum([0] + [int(lab.max()) for lab in labels[:-1]])
        out[name] = np.stack([np.where(lab > 0, lab + top, 0) for lab, top in zip(labels, tops)]).astype(np.uint32)
    return out


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Ids 1..n (0 kept) as uint32: viewers colour small ids, and uint64 ids of
    raster positions are wasteful."""
    return relabel_consecutive(labels, dtype=np.uint32)


def write_layers(path, *, raw: np.ndarray, affinities=None, fragments=None, segmentation=None, resolution=None,
                 overwrite: bool = False) -> Path:
    """Write the given layers to one zarr group at ``path`` (atomically).

    Parameters
    ----------
    path : a folder name ending in ``.zarr``
    raw : ndarray, (Z, Y, X) or (Y, X)
    affinities : ndarray (C, *raw.shape), optional
    fragments, segmentation : integer ndarrays of raw's shape, optional
    resolution : voxel size per spatial axis (default 1 each)
    overwrite : replace an existing container (otherwise it is refused)
    """
    import zarr

    path = Path(path)
    raw = np.asarray(raw)
    spatial = raw.shape
    resolution = tuple(int(r) for r in (resolution or (1,) * raw.ndim))
    if len(resolution) != raw.ndim:
        raise ValueError(f"resolution: expected {raw.ndim} values (one per axis of raw {spatial}), got {resolution}")
    layers = dict(raw=raw, affinities=affinities, fragments=fragments, segmentation=segmentation)
    for name, array in layers.items():
        if array is None:
            continue
        shape = np.shape(array)
        expected = spatial if name != "affinities" else (shape[0],) + spatial
        if shape != expected:
            raise ValueError(f"{name}: expected shape {expected} (raw's {spatial}"
                             f"{', channels first' if name == 'affinities' else ''}), got {shape}")
        if LAYERS[name] == "labels" and not np.issubdtype(np.asarray(array).dtype, np.integer):
            raise ValueError(f"{name}: expected integer ids, got dtype {np.asarray(array).dtype}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: exists; give overwrite=True (--overwrite) to replace it")
    tmp = path.with_name(path.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        root = zarr.open_group(str(tmp), mode="w")
        axes = ["z", "y", "x"][-raw.ndim:]
        for name, array in layers.items():
            if array is None:
                continue
            array = np.asarray(array)
            a = root.create_array(name, shape=array.shape, dtype=array.dtype,
                                  chunks=tuple(min(n, 64) for n in array.shape))
            a[...] = array
            a.attrs.update(resolution=list(resolution), offset=[0] * raw.ndim, kind=LAYERS[name],
                           axis_names=(["c^"] if name == "affinities" else []) + axes)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_layers(path) -> dict:
    """The arrays of a layers container (as napari's zarr reader sees each one), by name."""
    import zarr

    root = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(root[name]) for name in LAYERS if name in root}


def open_in_napari(path):
    """Open a layers container in napari (images as images, ids as labels). napari
    is an optional extra: ``pip install 'napari[all]'``."""
    try:
        import napari
    except ImportError as err:
        raise ImportError("napari is not installed: pip install 'napari[all]' (an optional extra of this "
                          f"project), or open {path}/raw and {path}/segmentation in any zarr viewer") from err
    import zarr

    root = zarr.open_group(str(path), mode="r")
    viewer = napari.Viewer()
    for name, kind in LAYERS.items():
        if name not in root:
            continue
        a = root[name]
        scale = a.attrs.get("resolution")
        if kind == "labels":
            viewer.add_labels(np.asarray(a), name=name, scale=scale)
        elif name == "affinities":
            viewer.add_image(np.asarray(a)[:len(scale)], name=name, channel_axis=0, scale=scale, visible=False)
        else:
            viewer.add_image(np.asarray(a), name=name, scale=scale)
    return viewer
