"""Blockwise prediction of volumes larger than memory, scheduled by daisy (the
field's blockwise task scheduler).

    python -m affcons_lib predict --blockwise CHECKPOINT --raw VOL.h5:volumes/raw --out AFFS.zarr
                                  --block 64 256 256 --workers 4
    python -m affcons_lib blockwise segment AFFS.zarr --out SEG --threshold 0.5 --workers 4
    python -m affcons_lib evaluate --segmentation SEG --labels VOL.h5:volumes/labels/neuron_ids

Prediction. The volume is cut into blocks (the write regions, aligned with the
output's zarr chunks). A worker predicts a block from the tiles of the *same*
global tile grid as the in-memory :func:`~affcons_lib.training.inference.predict_affinities`
(:func:`~affcons_lib.training.inference.predict_region`), reading raw only from the tiles
that touch it: the blockwise result equals the in-memory one up to float rounding.
Raw is scaled to [0, 1] by one intensity range for the whole volume (estimated
from a strided sample, or given), as pointwise scaling must be for blocks to agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import open_volume
from .schedule import check_shape, fresh_memory_dir, make_task, note_worker_memory, peak_memory_mb, roi_slices, run_daisy
from .store import create_zarr, digest, prediction_tracking_path, remove


def intensity_range(raw, max_samples: int = 8_000_000) -> tuple[float, float]:
    """The 0.1th and 99.9th percentiles of ``raw`` estimated from a regular
    subsample of at most ``max_samples`` voxels (read slice by slice): the
    contrast stretch of :func:`affcons_lib.data.normalize_raw`, fixed for the
    whole volume."""
    step = max(1, int(np.ceil((np.prod(raw.shape) / max_samples) ** (1 / 3))))
    sample = np.concatenate([np.asarray(raw[z, ::step, ::step], np.float32).ravel()
                             for z in range(0, raw.shape[0], step)])
    lo, hi = np.percentile(sample, [0.1, 99.9])
    return float(lo), float(hi)


@dataclass
class PredictSpec:
    checkpoint: str
    branch: str
    raw_path: str
    raw_key: str | None
    out_path: str
    lo: float
    hi: float
    tile: tuple
    stride: tuple | None
    device: str
    threads: int
    memory_dir: str


_WORKER_CACHE: dict = {}


def predict_block(spec: PredictSpec, block) -> None:
    """Worker: predict one block from the global tile grid and write it."""
    import torch

    from ..data import normalize_raw
    from ..training.inference import plan_tiles, predict_region
    from ..training.checkpoint import load_checkpoint

    if _WORKER_CACHE.get("spec") != spec:  # once per worker process (and run)
        torch.set_num_threads(spec.threads)
        nets, cfg, _ = load_checkpoint(spec.checkpoint, spec.device)
        raw = open_volume(spec.raw_path, spec.raw_key)
        offsets = _offsets(cfg)
        # the grid of predict_affinities: over the volume padded up to one tile where it is smaller
        padded = tuple(max(int(t), int(n)) for t, n in zip(spec.tile, raw.shape[-3:]))
        _WORKER_CACHE.update(spec=spec, net=nets[spec.branch], raw=raw, offsets=offsets,
                             plan=plan_tiles(nets[spec.branch], padded, offsets, tile=spec.tile, stride=spec.stride),
                             out=open_volume(spec.out_path, mode="r+"))
    c = _WORKER_CACHE
    raw = c["raw"]
    start, stop = [int(b) for b in block.write_roi.begin], [int(e) for e in block.write_roi.end]
    affs = predict_region(c["net"], lambda region: normalize_raw(read_reflected(raw, region), (spec.lo, spec.hi)),
                          c["plan"], c["offsets"], start, stop)
    c["out"][(slice(None),) + roi_slices(block.write_roi)] = affs
    note_worker_memory(spec.memory_dir)


def read_reflected(raw, region) -> np.ndarray:
    """``raw[region]`` where the region may reach past the volume's end, the
    outside mirrored as ``np.pad(..., mode="reflect")`` mirrors it (in-memory
    prediction pads a part smaller than a tile so)."""
    shape = raw.shape[-3:]
    if all(r.stop <= n for r, n in zip(region, shape)):
        return np.asarray(raw[(Ellipsis,) + tuple(region)])
    index = []
    for r, n in zip(region, shape):
        i = np.arange(r.start, r.stop)
        index.append(np.where(i >= n, 2 * (n - 1) - i, i))
    inside = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
    block = np.asarray(raw[(Ellipsis,) + inside])
    return block[(Ellipsis,) + np.ix_(*[i - s.start for i, s in zip(index, inside)])]


def _offsets(cfg):
    from ..method import affinity

    return affinity.OFFSETS_3D if cfg.dim == 3 else affinity.OFFSETS_2D


def predict_blockwise(checkpoint, raw_path, out_path, *, raw_key: str | None = None, block=(64, 256, 256),
                      tile=None, stride=None, workers: int = 2, branch: str = "embedding", device: str = "cpu",
                      raw_range: tuple[float, float] | None = None, threads: int | None = None,
                      overwrite: bool = False, launcher: str | None = None) -> dict:
    """Predict the affinities of a 3D volume on disk block by block into a zarr array.

    Parameters
    ----------
    checkpoint : path of a :func:`affcons_lib.training.train.train` checkpoint (3D).
    raw_path : HDF5 file or zarr array (``path:key`` or ``raw_key``), (Z, Y, X).
    out_path : zarr array to write, float32 (C, Z, Y, X), chunks (C, *block);
        attributes ``offsets`` and what made it (checkpoint digest, branch, raw,
        raw range, tile, stride). An existing one made the same way is resumed;
        one made otherwise is refused, naming the difference.
    block : block (and chunk) shape; each block reads the tiles that touch it.
    tile, stride : the tile grid (default: :func:`affcons_lib.training.inference.part_tiling`,
        as ``predict_part``: an in-plane extent up to 256 not a multiple of the
        network's divisor is covered by one tile, the volume mirrored past its end).
    workers : daisy worker processes (0: in this process, no subprocesses).
    raw_range : (lo, hi) intensity range; default :func:`intensity_range`.
    threads : torch threads per worker (default: cores / workers).
    overwrite : remove an existing output (and its block tracking) and start afresh.
    launcher : command prefix that starts each worker elsewhere (``"srun --ntasks 1
        --cpus-per-task 8"``, ``"bsub -I -n 8"``): see :func:`launch_worker`.

    Returns
    -------
    dict with the paths, shapes, the intensity range, timings and peak memory.
    """
    import time

    from ..training.inference import default_stride, part_tiling
    from ..training.checkpoint import load_checkpoint

    t0 = time.time()
    nets, cfg, _ = load_checkpoint(checkpoint, "cpu")
    if cfg.dim != 3:
        raise ValueError(f"{checkpoint}: blockwise prediction is for 3D networks, this one is {cfg.dim}D")
    if branch not in nets:
        raise ValueError(f"branch={branch!r}: the checkpoint holds {sorted(nets)}")
    raw = open_volume(raw_path, raw_key)
    if raw.ndim != 3:
        raise ValueError(f"{raw_path}: expected a (Z, Y, X) raw volume, got shape {raw.shape}")
    block = check_shape("block", block)
    # the tiles of predict_part: one per plane up to 256 (padded by reflection), overlapping by a quarter
    tile = tuple(tile) if tile else part_tiling(raw.shape, cfg.patch, nets[branch].divisor)[0]
    stride = tuple(stride) if stride else default_stride(tile)
    lo, hi = raw_range if raw_range is not None else intensity_range(raw)
    offsets = _offsets(cfg)
    out_path = Path(out_path)
    tracking = prediction_tracking_path(out_path)
    if overwrite:
        remove(out_path, tracking)
    create_zarr(out_path, (len(offsets),) + tuple(raw.shape), (len(offsets),) + block, np.float32,
                {"offsets": [list(o) for o in offsets], "raw": str(raw_path), "raw_range": [lo, hi],
                 "tile": list(tile), "stride": list(stride), "branch": branch,
                 "checkpoint_sha256": digest(checkpoint)})
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    spec = PredictSpec(str(checkpoint), branch, str(raw_path), raw_key, str(out_path), lo, hi, tile, stride,
                       device, threads, fresh_memory_dir(tracking))
    task = make_task("predict", raw.shape, block, (0, 0, 0), predict_block, spec, tracking, workers, launcher)
    blocks = run_daisy([task], workers, tracking, "predict_blockwise")
    return {"out": str(out_path), "shape": list(raw.shape), "block": list(block), "blocks": blocks, "tile": list(tile),
            "stride": list(stride), "raw_range": [lo, hi], "workers": workers, "seconds": time.time() - t0,
            **peak_memory_mb(spec.memory_dir)}
