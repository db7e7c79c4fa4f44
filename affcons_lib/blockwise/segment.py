"""Blockwise segmentation: the in-memory instrument's recipe (:class:`~affcons_lib.segmentation.recipe.Recipe`,
default :data:`~affcons_lib.segmentation.recipe.BLOCKWISE`), three blockwise passes and one
step on the fragment graph:

1. *fragments*: per block, the crop-invariant fragments of
   :mod:`affcons_lib.segmentation.fragments` from the block plus its context
   (:func:`~affcons_lib.segmentation.fragments.context`, 21 voxels by default): every voxel's
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

:func:`affcons_lib.blockwise.score.evaluate_blockwise` (``python -m affcons_lib evaluate
--segmentation OUT --labels ...``) scores every threshold from one pass over the
fragments, block by block, as :func:`~affcons_lib.evaluation.evaluate.evaluate_3d` scores
in memory.

Memory: a worker holds one block (and its context), never the volume; the graph
step holds the graph: about 2 kB per edge with its 1 kB histogram
(``benchmarks/bench_blockwise.py`` measures it). Resume: daisy marks finished
blocks (``OUT/tracking``); edges, exits, history and tables are written
atomically; a killed run started again skips what is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..data import open_volume
from ..segmentation.agglomeration import (BINS, boundary_edges, boundary_histograms, histogram_bins, merge_history,
                                          segments_at)
from ..segmentation.fragments import look_up
from ..segmentation.labels import dense_ids
from . import store
from .schedule import (check_shape, fresh_memory_dir, make_task, note_worker_memory, own_peak_mb, own_rss_mb,
                       peak_memory_mb, reset_peak, roi_slices, run_daisy)
from .store import create_zarr, remove


@dataclass
class SegmentSpec:
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
        return str(store.fragments_path(self.out))

    @property
    def seg_path(self) -> str:
        return str(store.segmentation_path(self.out))


def _block_index(spec, roi) -> int:
    idx = [int(b) // s for b, s in zip(roi.begin, spec.block)]
    return int(np.ravel_multi_index(idx, spec.grid))


def fragments_block(spec: SegmentSpec, block) -> None:
    """Worker, pass 1: the crop-invariant fragments of the block, from the block
    plus its context (:func:`affcons_lib.segmentation.fragments.block_endpoints`): each voxel's
    chain end (a root, or the first voxel of another block: an exit, listed in
    ``exits/``)."""
    from ..segmentation.fragments import block_endpoints

    affs = open_volume(spec.affs_path)
    shape = affs.shape[1:]
    read = [slice(max(0, int(b)), min(n, int(e))) for b, e, n in zip(block.read_roi.begin, block.read_roi.end, shape)]
    inner = tuple(slice(int(w) - r.start, int(we) - r.start)
                  for w, we, r in zip(block.write_roi.begin, block.write_roi.end, read))
    ends, exits = block_endpoints(np.asarray(affs[(slice(0, 3),) + tuple(read)]), inner, [r.start for r in read],
                                  shape, **spec.fragment_options)
    out = store.block_file(spec.out, "exits", _block_index(spec, block.write_roi))
    with atomic_path(out, ".part.npz") as tmp:
        np.savez(tmp, exits=exits)
    open_volume(spec.frag_path, mode="r+")[roi_slices(block.write_roi)] = ends
    note_worker_memory(spec.memory_dir)


def edges_block(spec: SegmentSpec, block) -> None:
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
    out = store.block_file(spec.out, "edges", _block_index(spec, block.write_roi))
    with atomic_path(out, ".part.npz") as tmp:
        np.savez(tmp, u=u, v=v, sums=np.bincount(inverse, weights=vals, minlength=len(u)),
                 hist_edge=(cells // BINS).astype(np.int64), hist_bin=(cells % BINS).astype(np.uint16),
                 hist_count=counts.astype(np.int32))
    note_worker_memory(spec.memory_dir)


def relabel_block(spec: SegmentSpec, block) -> None:
    """Worker, pass 4: chain ends -> fragments -> segments through the tables."""
    ex = np.load(store.exits_path(spec.out))
    lut = np.load(store.lut_path(spec.out, spec.scoring, spec.threshold))
    frag = look_up(np.asarray(open_volume(spec.frag_path)[roi_slices(block.write_roi)]), ex["ids"], ex["roots"])
    # a fragment without any edge (not in the table) is a segment of its own
    seg = look_up(frag, lut["fragments"], lut["segments"])
    open_volume(spec.seg_path, mode="r+")[roi_slices(block.write_roi)] = seg
    note_worker_memory(spec.memory_dir)


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


def _graph_step(spec: SegmentSpec, thresholds) -> dict:
    """One process: follow the exits to their roots, pool the blocks' edges
    between fragments, agglomerate once, one fragment -> segment table per
    threshold. Returns the graph's size and the memory it took."""
    out = Path(spec.out)
    reset_peak()  # so that the peak below is this step's own
    rss_before = own_rss_mb()
    exits_file = store.exits_path(out)
    if exits_file.is_file():
        ex = np.load(exits_file)
        ids, roots = ex["ids"], ex["roots"]
    else:
        from ..segmentation.fragments import resolve_exits

        parts = [np.load(f)["exits"] for f in store.block_files(out, "exits")]
        frag = open_volume(spec.frag_path)
        ids, roots = resolve_exits(np.concatenate(parts) if parts else np.zeros(0, np.uint64),
                                   lambda x: _values_at(frag, x, spec.block))
        with atomic_path(exits_file, ".part.npz") as tmp:
            np.savez(tmp, ids=ids, roots=roots)
    history_file = store.history_path(out, spec.scoring)
    if history_file.is_file():
        h = np.load(history_file)
        nodes, history, n_edges = h["nodes"], (h["a"], h["b"], h["score"]), int(h["edges"])
    else:
        files = store.block_files(out, "edges")
        parts = [np.load(f) for f in files]
        cat = lambda key, dtype: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0, dtype)  # noqa: E731
        u = look_up(cat("u", np.uint64), ids, roots)
        v = look_up(cat("v", np.uint64), ids, roots)
        sums = cat("sums", np.float64)
        first = np.cumsum([0] + [len(p["u"]) for p in parts])[:-1]
        hist_edge = np.concatenate([p["hist_edge"] + f for p, f in zip(parts, first)]) if parts else np.zeros(0, int)
        nodes, inverse = dense_ids(np.concatenate([u, v]))
        iu, iv = inverse[: len(u)], inverse[len(u):]
        lo, hi = np.minimum(iu, iv), np.maximum(iu, iv)
        # two chain ends of one fragment: no edge; a pair seen by two blocks, or
        # by two ends of the same fragments: pooled
        keep = lo != hi
        pairs, pair_of = dense_ids((lo * len(nodes) + hi)[keep])
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
        path = store.lut_path(out, spec.scoring, t)
        if not path.is_file():
            rep = segments_at(len(nodes), history, float(t))
            with atomic_path(path, ".part.npz") as tmp:
                np.savez(tmp, fragments=nodes, segments=nodes[rep])
    graph_mb = max(0.0, own_peak_mb() - rss_before)
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
        kept for each of the recipe's thresholds (:func:`affcons_lib.blockwise.score.evaluate_blockwise`
        scores them all).
    block : write block shape.
    context : voxels read around a block for its fragments, at least what the
        recipe's fragments need (:func:`affcons_lib.segmentation.fragments.context`; a smaller
        value is raised to it).
    workers : daisy worker processes (0: in this process).
    recipe : :class:`~affcons_lib.segmentation.recipe.Recipe` with ``fragments='ascent'``
        (default :data:`~affcons_lib.segmentation.recipe.BLOCKWISE`): fragments and scoring
        (``median``, ``mean`` or ``quantile_Q``).
    fragment_options : replace the recipe's ``mode``, ``threshold``, ``radius``,
        ``max_distance``.
    overwrite : remove an existing ``out_path`` and start afresh. Without it, a
        rerun resumes an output made from the same affinities with the same
        context and fragment options (another threshold or scoring reuses its
        fragments and edges), and refuses one made otherwise, naming the difference.
    launcher : command prefix that starts each worker elsewhere (a cluster job):
        see :func:`launch_worker`.

    Returns
    -------
    dict with paths, counts, timings, peak memory and the graph step's bytes per edge.
    """
    import time

    from ..segmentation.fragments import context as fragment_context
    from ..segmentation.recipe import BLOCKWISE

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
    shape, block = tuple(affs.shape[1:]), check_shape("block", block)
    needed = fragment_context(**recipe.fragment_options)
    context = tuple(max(int(c), n) for c, n in zip(context or needed, needed))
    out = Path(out_path)
    if overwrite:
        remove(out)
    for sub in ("edges", "exits"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    grid = tuple(int(np.ceil(n / b)) for n, b in zip(shape, block))
    tracking = store.tracking_path(out)
    spec = SegmentSpec(str(affs_path), str(out), block, grid, recipe.fragment_options, recipe.scoring,
                       float(threshold), fresh_memory_dir(tracking))
    create_zarr(store.fragments_path(out), shape, block, np.uint64,
                {"affinities": str(affs_path), "context": list(context), "fragment_options": recipe.fragment_options,
                 "recipe": "ascent chain ends (affcons_lib.segmentation.fragments)"})
    frags = make_task("fragments", shape, block, context, fragments_block, spec, tracking, workers, launcher)
    # edges read one voxel below the block: daisy runs them after those fragments
    edges = make_task("edges", shape, block, (1, 1, 1), edges_block, spec, tracking, workers, launcher)
    blocks = run_daisy([frags, edges], workers, tracking, "segment_blockwise")
    t1 = time.time()
    graph = _graph_step(spec, sorted(set(recipe.thresholds) | {float(threshold)}))
    t2 = time.time()
    # the segmentation of the latest threshold (each threshold relabels every block)
    seg = create_zarr(store.segmentation_path(out), shape, block, np.uint64, {})
    seg.attrs.update(threshold=float(threshold), scoring=recipe.scoring)
    relabel = make_task(f"relabel_{recipe.scoring}_{float(threshold):.4f}", shape, block, (0, 0, 0), relabel_block, spec,
                        tracking, workers, launcher)
    blocks.update(run_daisy([relabel], workers, tracking, "segment_blockwise"))
    return {"out": str(out), "segmentation": str(store.segmentation_path(out)), "shape": list(shape),
            "block": list(block), "context": list(context), "blocks": blocks, **graph,
            "threshold": float(threshold), "thresholds": sorted(set(recipe.thresholds) | {float(threshold)}),
            "recipe": recipe.as_dict(), "workers": workers, "seconds_blocks": t1 - t0,
            "seconds_graph": t2 - t1, "seconds": time.time() - t0, **peak_memory_mb(spec.memory_dir)}
