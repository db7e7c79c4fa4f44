"""Blockwise prediction and segmentation of volumes larger than memory, scheduled
by daisy (the field's blockwise task scheduler).

    python -m affcons_lib predict --blockwise CHECKPOINT --raw VOL.h5:volumes/raw --out AFFS.zarr
                                  --block 64 256 256 --workers 4
    python -m affcons_lib blockwise segment AFFS.zarr --out SEG --threshold 0.5 --workers 4
    python -m affcons_lib evaluate --segmentation SEG --labels VOL.h5:volumes/labels/neuron_ids

Prediction. The volume is cut into blocks (the write regions, aligned with the
output's zarr chunks). A worker predicts a block from the tiles of the *same*
global tile grid as the in-memory :func:`~affcons_lib.inference.predict_affinities`
(:func:`~affcons_lib.inference.predict_region`), reading raw only from the tiles
that touch it: the blockwise result equals the in-memory one up to float rounding.
Raw is scaled to [0, 1] by one intensity range for the whole volume (estimated
from a strided sample, or given), as pointwise scaling must be for blocks to agree.

Segmentation: the in-memory instrument's recipe (:class:`~affcons_lib.recipe.Recipe`,
default :data:`~affcons_lib.recipe.BLOCKWISE`), three blockwise passes and one
step on the fragment graph:

1. *fragments*: per block, the crop-invariant fragments of
   :mod:`affcons_lib.fragments` from the block plus its context
   (:func:`~affcons_lib.fragments.context`, 21 voxels by default): every voxel's
   pointer chain followed to its root, or to the first voxel of another block
   (an *exit*); roots are ids of the volume.
2. *edges*: per block, the region adjacency graph between the chain ends of the
   block and of its lower neighbours: for every pair of touching ends the sum,
   count and 256-bin histogram of the nearest-neighbour affinities on their
   boundary (one ``.npz``).
3. *graph* (one process): the exits followed to their roots (the fragments are
   then exactly the in-memory ones), the edges pooled between fragments, and one
   hierarchical agglomeration as waterz's, scored by the median (or a quantile,
   or the mean) boundary affinity, kept as its merge history: a fragment ->
   segment table for every threshold of the recipe, from one pass.
4. *relabel*: per block, chain ends -> fragments -> segments at ``threshold``.

:func:`affcons_lib.evaluate.evaluate_blockwise` (``python -m affcons_lib evaluate
--segmentation OUT --labels ...``) scores every threshold from one pass over the
fragments, block by block, as :func:`~affcons_lib.evaluate.evaluate_3d` scores
in memory.

Memory: a worker holds one block (and its context), never the volume; the graph
step holds the graph: about 2 kB per edge with its 1 kB histogram
(``benchmarks/bench_blockwise.py`` measures it). Resume: daisy marks finished
blocks (``OUT/tracking``); edges, exits, history and tables are written
atomically; a killed run started again skips what is done.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ._atomic import atomic_path, write_text
from .agglomeration import (BINS, boundary_edges, boundary_histograms, histogram_bins, merge_history,
                            segments_at, agglomerate_graph, region_graph)  # the last two: re-exported, part of this API
from .fragments import look_up
from .data import open_volume  # volume I/O lives in data; re-exported here, part of this API

__all__ = ["open_volume", "intensity_range", "predict_blockwise", "segment_blockwise", "merge_history",
           "segments_at", "agglomerate_graph", "region_graph", "peak_memory_mb", "main"]


# ------------------------------------------------------------------ volumes
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


def _create_zarr(path: Path, shape, chunks, dtype, attrs: dict):
    """Create the output array, or reopen it (a resumed run) when it exists with
    the same shape, chunks and dtype and was made with the same settings (every
    key of ``attrs``: checkpoint, tiling, raw range, fragment options); anything
    else is an error naming the path and the difference, so that the blocks of two
    configurations never mix in one array."""
    import zarr

    if path.exists():
        arr = zarr.open_array(store=str(path), mode="r+")
        if arr.shape != tuple(shape) or arr.chunks != tuple(chunks) or arr.dtype != np.dtype(dtype):
            raise ValueError(f"{path}: exists with shape {arr.shape}, chunks {arr.chunks}, dtype {arr.dtype}; "
                             f"this run writes {tuple(shape)}, {tuple(chunks)}, {np.dtype(dtype)} "
                             "(overwrite=True / --overwrite starts afresh, or choose another --out)")
        plain = lambda v: json.loads(json.dumps(v))  # noqa: E731  (tuples as the lists zarr stores)
        differ = [f"{k}: {arr.attrs.get(k)!r} -> {plain(v)!r}" for k, v in attrs.items()
                  if plain(arr.attrs.get(k)) != plain(v)]
        if differ:
            raise ValueError(f"{path}: exists, made with other settings ({'; '.join(differ)}); resuming would mix "
                             "the two (overwrite=True / --overwrite starts afresh, or choose another --out)")
        return arr
    arr = zarr.create_array(store=str(path), shape=tuple(shape), chunks=tuple(chunks), dtype=dtype, fill_value=0)
    arr.attrs.update(attrs)
    return arr


def _digest(path) -> str:
    """SHA-256 of a file (a checkpoint: which weights made an output)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _remove(*paths) -> None:
    """Remove outputs and their block tracking, for a run that starts afresh."""
    import shutil

    for p in paths:
        p = Path(p)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _roi_slices(roi) -> tuple:
    return tuple(slice(int(b), int(e)) for b, e in zip(roi.begin, roi.end))


def _run_daisy(tasks: list, workers: int, tracking: Path, name: str) -> dict:
    """Run daisy tasks (a pipeline, each after the previous one) with ``workers``
    processes; finished blocks are tracked under ``tracking`` so a rerun skips
    them. Raises when a block failed, with the first worker error. Returns the
    block counts per task (total, done in this run, skipped as done before)."""
    import daisy.v2 as daisy
    import daisy.logging as dlog

    dlog.set_log_basedir(tracking / "logs")
    pipeline = tasks[0]
    for t in tasks[1:]:
        pipeline = pipeline + t
    states = daisy.run_blockwise(pipeline, multiprocessing=workers > 0, progress=False, summary=False,
                                 return_states=True)
    for task_id, state in states.items():
        if state.failed_count or state.orphaned_count or state.abandoned:
            raise RuntimeError(f"{name}: task {task_id}: {state.failed_count} blocks failed, "
                               f"{state.orphaned_count} orphaned; first error: {state.first_worker_error}; "
                               f"worker logs in {tracking / 'logs'}")
    # daisy counts skipped blocks among the completed ones
    return {task_id: {"blocks": state.total_block_count, "done": state.completed_count - state.skipped_count,
                      "skipped": state.skipped_count} for task_id, state in states.items()}


def _task(name, total_shape, block, context, kind: str, spec, tracking: Path, workers: int, launcher=None,
          read_write_conflict=False):
    """A daisy task whose write regions tile ``total_shape`` with ``block`` and
    whose read regions add ``context`` on each side (clipped by the caller); its
    blocks go to ``_BLOCK_FUNCTIONS[kind]`` with ``spec``, in daisy's worker
    processes, or in processes started by ``launcher`` (:func:`_launch_worker`)."""
    import daisy.v2 as daisy

    if launcher:
        if workers < 1:
            raise ValueError(f"launcher={launcher!r}: launched workers need workers >= 1, got {workers}")
        process = functools.partial(_launch_worker, str(launcher), kind, spec)
    else:
        process = functools.partial(_BLOCK_FUNCTIONS[kind], spec)
    context = tuple(int(c) for c in context)
    total = daisy.Roi(tuple(-c for c in context), tuple(n + 2 * c for n, c in zip(total_shape, context)))
    write = daisy.Roi((0,) * len(block), tuple(block))
    read = write.grow(daisy.Coordinate(context), daisy.Coordinate(context))
    return daisy.Task(name, total_roi=total, read_roi=read, write_roi=write, process_function=process,
                      read_write_conflict=read_write_conflict, fit="shrink", max_workers=max(1, workers),
                      max_retries=1, tracking_path=str(tracking / name))


# ------------------------------------------------------------------ prediction
@dataclass
class _PredictSpec:
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


def _predict_block(spec: _PredictSpec, block) -> None:
    """Worker: predict one block from the global tile grid and write it."""
    import torch

    from .data import normalize_raw
    from .inference import plan_tiles, predict_region
    from .checkpoint import load_checkpoint

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
    affs = predict_region(c["net"], lambda region: normalize_raw(_read_reflected(raw, region), (spec.lo, spec.hi)),
                          c["plan"], c["offsets"], start, stop)
    c["out"][(slice(None),) + _roi_slices(block.write_roi)] = affs
    _note_worker_memory(spec.memory_dir)


def _read_reflected(raw, region) -> np.ndarray:
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
    from . import affinity

    return affinity.OFFSETS_3D if cfg.dim == 3 else affinity.OFFSETS_2D


def predict_blockwise(checkpoint, raw_path, out_path, *, raw_key: str | None = None, block=(64, 256, 256),
                      tile=None, stride=None, workers: int = 2, branch: str = "embedding", device: str = "cpu",
                      raw_range: tuple[float, float] | None = None, threads: int | None = None,
                      overwrite: bool = False, launcher: str | None = None) -> dict:
    """Predict the affinities of a 3D volume on disk block by block into a zarr array.

    Parameters
    ----------
    checkpoint : path of a :func:`affcons_lib.train.train` checkpoint (3D).
    raw_path : HDF5 file or zarr array (``path:key`` or ``raw_key``), (Z, Y, X).
    out_path : zarr array to write, float32 (C, Z, Y, X), chunks (C, *block);
        attributes ``offsets`` and what made it (checkpoint digest, branch, raw,
        raw range, tile, stride). An existing one made the same way is resumed;
        one made otherwise is refused, naming the difference.
    block : block (and chunk) shape; each block reads the tiles that touch it.
    tile, stride : the tile grid (default: :func:`affcons_lib.inference.part_tiling`,
        as ``predict_part``: an in-plane extent up to 256 not a multiple of the
        network's divisor is covered by one tile, the volume mirrored past its end).
    workers : daisy worker processes (0: in this process, no subprocesses).
    raw_range : (lo, hi) intensity range; default :func:`intensity_range`.
    threads : torch threads per worker (default: cores / workers).
    overwrite : remove an existing output (and its block tracking) and start afresh.
    launcher : command prefix that starts each worker elsewhere (``"srun --ntasks 1
        --cpus-per-task 8"``, ``"bsub -I -n 8"``): see :func:`_launch_worker`.

    Returns
    -------
    dict with the paths, shapes, the intensity range, timings and peak memory.
    """
    import time

    from .inference import default_stride, part_tiling
    from .checkpoint import load_checkpoint

    t0 = time.time()
    nets, cfg, _ = load_checkpoint(checkpoint, "cpu")
    if cfg.dim != 3:
        raise ValueError(f"{checkpoint}: blockwise prediction is for 3D networks, this one is {cfg.dim}D")
    if branch not in nets:
        raise ValueError(f"branch={branch!r}: the checkpoint holds {sorted(nets)}")
    raw = open_volume(raw_path, raw_key)
    if raw.ndim != 3:
        raise ValueError(f"{raw_path}: expected a (Z, Y, X) raw volume, got shape {raw.shape}")
    block = _check_shape("block", block)
    # the tiles of predict_part: one per plane up to 256 (padded by reflection), overlapping by a quarter
    tile = tuple(tile) if tile else part_tiling(raw.shape, cfg.patch, nets[branch].divisor)[0]
    stride = tuple(stride) if stride else default_stride(tile)
    lo, hi = raw_range if raw_range is not None else intensity_range(raw)
    offsets = _offsets(cfg)
    out_path = Path(out_path)
    tracking = out_path.with_name(out_path.name + ".tracking")
    if overwrite:
        _remove(out_path, tracking)
    _create_zarr(out_path, (len(offsets),) + tuple(raw.shape), (len(offsets),) + block, np.float32,
                 {"offsets": [list(o) for o in offsets], "raw": str(raw_path), "raw_range": [lo, hi],
                  "tile": list(tile), "stride": list(stride), "branch": branch,
                  "checkpoint_sha256": _digest(checkpoint)})
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    spec = _PredictSpec(str(checkpoint), branch, str(raw_path), raw_key, str(out_path), lo, hi, tile, stride,
                        device, threads, _fresh_memory_dir(tracking))
    task = _task("predict", raw.shape, block, (0, 0, 0), "predict", spec, tracking, workers, launcher)
    blocks = _run_daisy([task], workers, tracking, "predict_blockwise")
    return {"out": str(out_path), "shape": list(raw.shape), "block": list(block), "blocks": blocks, "tile": list(tile),
            "stride": list(stride), "raw_range": [lo, hi], "workers": workers, "seconds": time.time() - t0,
            **peak_memory_mb(spec.memory_dir)}


def _check_shape(name, shape, n=3):
    shape = tuple(int(s) for s in shape)
    if len(shape) != n or min(shape) < 1:
        raise ValueError(f"{name}: expected {n} positive sizes, got {shape}")
    return shape


# ------------------------------------------------------------------ segmentation
@dataclass
class _SegmentSpec:
    affs_path: str
    out: str
    block: tuple
    grid: tuple  # blocks per axis
    fragment_options: dict
    scoring: str
    threshold: float
    memory_dir: str

    @property
    def frag_path(self) -> str:
        return str(Path(self.out) / "fragments")

    @property
    def seg_path(self) -> str:
        return str(Path(self.out) / "segmentation")


def _block_index(spec, roi) -> int:
    idx = [int(b) // s for b, s in zip(roi.begin, spec.block)]
    return int(np.ravel_multi_index(idx, spec.grid))


def _fragments_block(spec: _SegmentSpec, block) -> None:
    """Worker, pass 1: the crop-invariant fragments of the block, from the block
    plus its context (:func:`affcons_lib.fragments.block_endpoints`): each voxel's
    chain end (a root, or the first voxel of another block: an exit, listed in
    ``exits/``)."""
    from .fragments import block_endpoints

    affs = open_volume(spec.affs_path)
    shape = affs.shape[1:]
    read = [slice(max(0, int(b)), min(n, int(e))) for b, e, n in zip(block.read_roi.begin, block.read_roi.end, shape)]
    inner = tuple(slice(int(w) - r.start, int(we) - r.start)
                  for w, we, r in zip(block.write_roi.begin, block.write_roi.end, read))
    ends, exits = block_endpoints(np.asarray(affs[(slice(0, 3),) + tuple(read)]), inner, [r.start for r in read],
                                  shape, **spec.fragment_options)
    out = Path(spec.out) / "exits" / f"{_block_index(spec, block.write_roi):08d}.npz"
    with atomic_path(out, ".part.npz") as tmp:
        np.savez(tmp, exits=exits)
    open_volume(spec.frag_path, mode="r+")[_roi_slices(block.write_roi)] = ends
    _note_worker_memory(spec.memory_dir)


def _edges_block(spec: _SegmentSpec, block) -> None:
    """Worker, pass 2: the block's edges (with its lower neighbours): pairs of
    chain ends, affinity sums, counts and histograms (sparse), one npz."""
    affs = open_volume(spec.affs_path)
    frag = open_volume(spec.frag_path)
    begin, end = [int(b) for b in block.write_roi.begin], [int(e) for e in block.write_roi.end]
    margin = [1 if b > 0 else 0 for b in begin]
    fr = np.asarray(frag[tuple(slice(b - m, e) for b, e, m in zip(begin, end, margin))])
    af = np.asarray(affs[(slice(0, 3),) + tuple(slice(b, e) for b, e in zip(begin, end))])
    u, v, inverse, vals = boundary_edges(fr, af, margin)
    cells, counts = np.unique(inverse * BINS + histogram_bins(vals), return_counts=True)
    out = Path(spec.out) / "edges" / f"{_block_index(spec, block.write_roi):08d}.npz"
    with atomic_path(out, ".part.npz") as tmp:
        np.savez(tmp, u=u, v=v, sums=np.bincount(inverse, weights=vals, minlength=len(u)),
                 hist_edge=(cells // BINS).astype(np.int64), hist_bin=(cells % BINS).astype(np.uint16),
                 hist_count=counts.astype(np.int32))
    _note_worker_memory(spec.memory_dir)


def _relabel_block(spec: _SegmentSpec, block) -> None:
    """Worker, pass 4: chain ends -> fragments -> segments through the tables."""
    ex = np.load(Path(spec.out) / "exits.npz")
    lut = np.load(_lut_path(spec.out, spec.scoring, spec.threshold))
    frag = look_up(np.asarray(open_volume(spec.frag_path)[_roi_slices(block.write_roi)]), ex["ids"], ex["roots"])
    # a fragment without any edge (not in the table) is a segment of its own
    seg = look_up(frag, lut["fragments"], lut["segments"])
    open_volume(spec.seg_path, mode="r+")[_roi_slices(block.write_roi)] = seg
    _note_worker_memory(spec.memory_dir)


def _values_at(array, flat_ids: np.ndarray, block) -> np.ndarray:
    """``array`` (a zarr volume) at the voxels ``flat_ids - 1``, read one chunk
    (``block``) at a time."""
    shape = array.shape
    coords = np.stack(np.unravel_index(flat_ids.astype(np.int64) - 1, shape))
    chunk = coords // np.asarray(block)[:, None]
    key = np.ravel_multi_index(tuple(chunk), tuple(-(-n // b) for n, b in zip(shape, block)))
    out = np.empty(len(flat_ids), np.uint64)
    for k in np.unique(key):
        sel = np.flatnonzero(key == k)
        c = chunk[:, sel[0]]
        begin = c * np.asarray(block)
        data = np.asarray(array[tuple(slice(b, min(n, b + s)) for b, s, n in zip(begin, block, shape))])
        out[sel] = data[tuple(coords[:, sel] - begin[:, None])]
    return out


def _lut_path(out, scoring: str, threshold: float) -> Path:
    return Path(out) / f"lut_{scoring}_{float(threshold):.4f}.npz"


def _graph_step(spec: _SegmentSpec, thresholds) -> dict:
    """One process: follow the exits to their roots, pool the blocks' edges
    between fragments, agglomerate once, one fragment -> segment table per
    threshold. Returns the graph's size and the memory it took."""
    out = Path(spec.out)
    _reset_peak()  # so that the peak below is this step's own
    rss_before = _own_rss_mb()
    exits_file = out / "exits.npz"
    if exits_file.is_file():
        ex = np.load(exits_file)
        ids, roots = ex["ids"], ex["roots"]
    else:
        from .fragments import resolve_exits

        parts = [np.load(f)["exits"] for f in sorted((out / "exits").glob("*[0-9].npz"))]
        frag = open_volume(spec.frag_path)
        ids, roots = resolve_exits(np.concatenate(parts) if parts else np.zeros(0, np.uint64),
                                   lambda x: _values_at(frag, x, spec.block))
        with atomic_path(exits_file, ".part.npz") as tmp:
            np.savez(tmp, ids=ids, roots=roots)
    history_file = out / f"history_{spec.scoring}.npz"
    if history_file.is_file():
        h = np.load(history_file)
        nodes, history, n_edges = h["nodes"], (h["a"], h["b"], h["score"]), int(h["edges"])
    else:
        files = sorted((out / "edges").glob("*[0-9].npz"))
        parts = [np.load(f) for f in files]
        cat = lambda key, dtype: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0, dtype)  # noqa: E731
        u = look_up(cat("u", np.uint64), ids, roots)
        v = look_up(cat("v", np.uint64), ids, roots)
        sums = cat("sums", np.float64)
        first = np.cumsum([0] + [len(p["u"]) for p in parts])[:-1]
        hist_edge = np.concatenate([p["hist_edge"] + f for p, f in zip(parts, first)]) if parts else np.zeros(0, int)
        nodes, inverse = np.unique(np.concatenate([u, v]), return_inverse=True)
        iu, iv = inverse[: len(u)], inverse[len(u):]
        lo, hi = np.minimum(iu, iv), np.maximum(iu, iv)
        # two chain ends of one fragment: no edge; a pair seen by two blocks, or
        # by two ends of the same fragments: pooled
        keep = lo != hi
        pairs, pair_of = np.unique((lo * len(nodes) + hi)[keep], return_inverse=True)
        edge_pair = np.full(len(u), -1, np.int64)
        edge_pair[keep] = pair_of
        cells = edge_pair[hist_edge]
        ok = cells >= 0
        hist = boundary_histograms(cells[ok], cat("hist_bin", np.uint16)[ok], len(pairs),
                                   cat("hist_count", np.int32)[ok])
        history = merge_history(len(nodes), pairs // len(nodes), pairs % len(nodes),
                                np.bincount(pair_of, weights=sums[keep], minlength=len(pairs)),
                                hist.sum(1).astype(np.float64), histograms=hist, scoring=spec.scoring)
        n_edges = len(pairs)
        with atomic_path(history_file, ".part.npz") as tmp:
            np.savez(tmp, nodes=nodes, a=history[0], b=history[1], score=history[2], edges=n_edges)
    for t in thresholds:
        path = _lut_path(out, spec.scoring, t)
        if not path.is_file():
            rep = segments_at(len(nodes), history, float(t))
            with atomic_path(path, ".part.npz") as tmp:
                np.savez(tmp, fragments=nodes, segments=nodes[rep])
    graph_mb = max(0.0, _own_peak_mb() - rss_before)
    return {"fragments_in_graph": int(len(nodes)), "graph_edges": n_edges, "exits": int(len(ids)),
            "graph_peak_mb": round(graph_mb, 1),
            "graph_bytes_per_edge": round(graph_mb * 2 ** 20 / n_edges, 1) if n_edges else None}


def segment_blockwise(affs_path, out_path, *, threshold: float = 0.5, block=(64, 256, 256), context=None,
                      workers: int = 2, recipe=None, fragment_options: dict | None = None,
                      overwrite: bool = False, launcher: str | None = None) -> dict:
    """Segment a zarr affinity volume block by block with the recipe of the
    in-memory instrument (module docstring).

    Parameters
    ----------
    affs_path : zarr array (C >= 3, Z, Y, X) of float affinities (e.g. from
        :func:`predict_blockwise`); channels 0-2 the z, y, x nearest neighbours.
    out_path : directory to create; holds ``segmentation`` (uint64 zarr, chunks =
        ``block``, at ``threshold``), ``fragments`` (chain ends), the exits, the
        per-block edges, the merge history and one fragment table per threshold.
    threshold : the agglomeration threshold of ``segmentation``; a table is also
        kept for each of the recipe's thresholds (:func:`affcons_lib.evaluate.evaluate_blockwise`
        scores them all).
    block : write block shape.
    context : voxels read around a block for its fragments, at least what the
        recipe's fragments need (:func:`affcons_lib.fragments.context`; a smaller
        value is raised to it).
    workers : daisy worker processes (0: in this process).
    recipe : :class:`~affcons_lib.recipe.Recipe` with ``fragments='ascent'``
        (default :data:`~affcons_lib.recipe.BLOCKWISE`): fragments and scoring
        (``median``, ``mean`` or ``quantile_Q``).
    fragment_options : replace the recipe's ``mode``, ``threshold``, ``radius``,
        ``max_distance``.
    overwrite : remove an existing ``out_path`` and start afresh. Without it, a
        rerun resumes an output made from the same affinities with the same
        context and fragment options (another threshold or scoring reuses its
        fragments and edges), and refuses one made otherwise, naming the difference.
    launcher : command prefix that starts each worker elsewhere (a cluster job):
        see :func:`_launch_worker`.

    Returns
    -------
    dict with paths, counts, timings, peak memory and the graph step's bytes per edge.
    """
    import time

    from .fragments import context as fragment_context
    from .recipe import BLOCKWISE

    t0 = time.time()
    recipe = (recipe or BLOCKWISE)
    if fragment_options:
        unknown = set(fragment_options) - {"mode", "threshold", "radius", "max_distance"}
        if unknown:
            raise ValueError(f"fragment_options: unknown {sorted(unknown)}; expected mode, threshold, radius, "
                             "max_distance")
        recipe = recipe.replace(**fragment_options)
    if recipe.fragments != "ascent" or recipe.agglomeration != "graph":
        raise ValueError(f"recipe: blockwise segmentation runs crop-invariant fragments (fragments='ascent') and "
                         f"the graph agglomeration (agglomeration='graph'), got {recipe.fragments!r}, "
                         f"{recipe.agglomeration!r}")
    affs = open_volume(affs_path)
    if affs.ndim != 4 or affs.shape[0] < 3:
        raise ValueError(f"{affs_path}: expected affinities (C >= 3, Z, Y, X), got shape {affs.shape}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold: expected a value in [0, 1], got {threshold}")
    shape, block = tuple(affs.shape[1:]), _check_shape("block", block)
    needed = fragment_context(**recipe.fragment_options)
    context = tuple(max(int(c), n) for c, n in zip(context or needed, needed))
    out = Path(out_path)
    if overwrite:
        _remove(out)
    for sub in ("edges", "exits"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    grid = tuple(int(np.ceil(n / b)) for n, b in zip(shape, block))
    tracking = out / "tracking"
    spec = _SegmentSpec(str(affs_path), str(out), block, grid, recipe.fragment_options, recipe.scoring,
                        float(threshold), _fresh_memory_dir(tracking))
    _create_zarr(out / "fragments", shape, block, np.uint64,
                 {"affinities": str(affs_path), "context": list(context), "fragment_options": recipe.fragment_options,
                  "recipe": "ascent chain ends (affcons_lib.fragments)"})
    frags = _task("fragments", shape, block, context, "fragments", spec, tracking, workers, launcher)
    # edges read one voxel below the block: daisy runs them after those fragments
    edges = _task("edges", shape, block, (1, 1, 1), "edges", spec, tracking, workers, launcher)
    blocks = _run_daisy([frags, edges], workers, tracking, "segment_blockwise")
    t1 = time.time()
    graph = _graph_step(spec, sorted(set(recipe.thresholds) | {float(threshold)}))
    t2 = time.time()
    # the segmentation of the latest threshold (each threshold relabels every block)
    seg = _create_zarr(out / "segmentation", shape, block, np.uint64, {})
    seg.attrs.update(threshold=float(threshold), scoring=recipe.scoring)
    relabel = _task(f"relabel_{recipe.scoring}_{float(threshold):.4f}", shape, block, (0, 0, 0), "relabel", spec,
                    tracking, workers, launcher)
    blocks.update(_run_daisy([relabel], workers, tracking, "segment_blockwise"))
    return {"out": str(out), "segmentation": str(out / "segmentation"), "shape": list(shape),
            "block": list(block), "context": list(context), "blocks": blocks, **graph,
            "threshold": float(threshold), "thresholds": sorted(set(recipe.thresholds) | {float(threshold)}),
            "recipe": recipe.as_dict(), "workers": workers, "seconds_blocks": t1 - t0,
            "seconds_graph": t2 - t1, "seconds": time.time() - t0, **peak_memory_mb(spec.memory_dir)}


# ------------------------------------------------------------------ workers
_BLOCK_FUNCTIONS = {"predict": _predict_block, "fragments": _fragments_block, "edges": _edges_block,
                    "relabel": _relabel_block}
#: the kinds of block a worker processes (``python -m affcons_lib blockwise worker KIND SPEC``)
BLOCK_KINDS = tuple(sorted(_BLOCK_FUNCTIONS))
_SPECS = {"predict": _PredictSpec, "fragments": _SegmentSpec, "edges": _SegmentSpec, "relabel": _SegmentSpec}


def _launch_worker(launcher: str, kind: str, spec) -> None:
    """A daisy worker function (it takes no block): start one worker with
    ``launcher`` (``srun ...``, ``bsub ...``, or any command prefix) running
    ``python -m affcons_lib blockwise worker KIND SPEC``, which connects back to
    this scheduler (``DAISY_CONTEXT`` in its environment: ``srun`` passes the
    environment on; other launchers may need to be told) and processes blocks
    until none is left. The workers must see the same paths as the scheduler."""
    import shlex
    import subprocess

    cmd = shlex.split(launcher) + [sys.executable, "-m", "affcons_lib", "blockwise", "worker", kind,
                                   json.dumps(asdict(spec))]
    subprocess.run(cmd, check=True)


def run_worker(kind: str, spec_json: str) -> int:
    """The loop of a launched worker: blocks from the scheduler until none is left."""
    from daisy.v2 import Client

    if kind not in _BLOCK_FUNCTIONS:
        raise ValueError(f"worker: expected one of {sorted(_BLOCK_FUNCTIONS)}, got {kind!r}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(spec_json).items()}
    spec, process = _SPECS[kind](**fields), _BLOCK_FUNCTIONS[kind]
    client = Client()
    while True:
        with client.acquire_block() as block:
            if block is None:
                return 0
            process(spec, block)


def _reset_peak() -> None:
    """Reset this process's peak resident memory (Linux: ``clear_refs`` 5);
    elsewhere the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _own_rss_mb() -> float:
    """Resident memory (MiB) of this process now (Linux ``VmRSS``; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return 0.0


def _own_peak_mb() -> float:
    """Peak resident memory (MiB) of this process: Linux's ``VmHWM``, the peak of
    the running program (``ru_maxrss`` would also count the parent a subprocess
    was forked from, before its ``exec``); ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fresh_memory_dir(tracking: Path) -> str:
    """Where this run's workers note their peak memory (emptied first)."""
    d = tracking / "memory"
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.txt"):
        f.unlink()
    return str(d)


def _note_worker_memory(memory_dir: str) -> None:
    """Worker: write this process's peak memory so far (one file per process)."""
    write_text(Path(memory_dir) / f"{os.getpid()}.txt", f"{_own_peak_mb():.1f}")


def peak_memory_mb(memory_dir: str | None = None) -> dict:
    """Peak resident memory (MiB) of this process (the scheduler, which also runs
    the graph step) and of the largest worker, as the workers noted it in
    ``memory_dir``."""
    workers = [float(f.read_text()) for f in Path(memory_dir).glob("*.txt")] if memory_dir else []
    return {"peak_mb_main": round(_own_peak_mb(), 1), "peak_mb_worker": round(max(workers, default=0.0), 1)}


if __name__ == "__main__":  # the earlier form of `python -m affcons_lib blockwise`: the one command line
    from affcons_lib.cli import main

    raise SystemExit(main(["blockwise", *__import__("sys").argv[1:]]))
