"""Paired runs side by side: many trainings, each scored, in worker processes at one
thread each.

Why processes and not threads: the small networks keep two cores poorly busy. On a
2-core CPU two processes at one thread each finish about twice as many runs per minute
as one process at two threads (``python benchmarks/bench_train.py --side-by-side``
measures both on the machine at hand). Each run stays reproducible from its
configuration alone: a worker gets the run's overrides (its training seed and
annotation draw among them), prepares the data itself and trains at one thread.

Used by notebook 01 (its paired draws) and by the breadth grids
(:func:`affcons_lib.companion.breadth.run_grid`).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

#: the configuration keys that shape the prepared data (:func:`affcons_lib.training.sampling.prepare_data`):
#: runs that agree on them share one prepared copy within a worker
_DATA_KEYS = ("dataset", "dim", "annotation", "annotation_seed", "sparsity", "voxel_budget", "min_size", "labels",
              "labels_key", "raw_key", "labels_are_sparse", "test_dataset", "test_labels", "train_fraction",
              "min_labeled", "patch")

_PREPARED: dict = {}


def train_and_score(cfg, prepared, *, train_crop=(96, 96), examples: bool = False) -> dict:
    """Train one run and score it as notebook 01 does (:func:`affcons_lib.training.predict.score_run`):
    its score row with ``seed`` (the annotation draw), ``checkpoint``, the precision
    it ran at and the seconds each part took (``train_seconds``; ``predict_seconds``:
    the networks on the scored parts; ``score_seconds``: segmentation and measures).
    ``examples``: also its first test segmentation, f(θ2)'s entropy and affinities
    there (arrays, for figures)."""
    from ..training import train
    from ..training.predict import score_run

    t0 = time.time()
    summary = train.train(cfg, prepared)
    t1 = time.time()
    scored = score_run(summary["checkpoint"], prepared, train_crop=train_crop if cfg.dim == 3 else None,
                       with_entropy=examples)
    row = dict(seed=cfg.annotation_seed, **scored.scores, precision=summary["precision"],
               checkpoint=str(summary["checkpoint"]), train_seconds=t1 - t0,
               predict_seconds=scored.seconds["predict"], score_seconds=scored.seconds["score"])
    if examples:
        row["examples"] = dict(segmentation=scored.segmentations[0], entropy=scored.prediction.entropy[0],
                               affinities=scored.prediction.affinities[0])
    return row


#: prepared copies a worker keeps: the methods of a draw share one, and runs of neighbouring
#: draws interleave between the workers (a 250^3 volume's copy is about 0.3 GB)
_KEEP = 3


def _prepared_for(cfg, test_crop, test_images, train_images=None):
    """The prepared data of ``cfg`` (its test part cropped in-plane to ``test_crop``, or
    the first ``test_images`` test images / sections of a collection, and its first
    ``train_images`` training ones), kept for the next runs of this worker that share it."""
    import dataclasses

    from ..training import sampling

    key = (tuple(getattr(cfg, k, None) for k in _DATA_KEYS), None if test_crop is None else tuple(test_crop),
           test_images, train_images)
    if key not in _PREPARED:
        while len(_PREPARED) >= _KEEP:
            _PREPARED.pop(next(iter(_PREPARED)))  # the oldest
        prepared = sampling.crop_test_part(sampling.prepare_data(cfg), test_crop)
        if test_images is not None:
            prepared = dataclasses.replace(prepared, raw_test=prepared.raw_test[:test_images],
                                           labels_test=prepared.labels_test[:test_images])
        if train_images is not None:
            prepared = dataclasses.replace(prepared, raw_train=prepared.raw_train[:train_images],
                                           labels_train=prepared.labels_train[:train_images],
                                           sparse_train=prepared.sparse_train[:train_images])
        _PREPARED[key] = prepared
    return _PREPARED[key]


def _run_one(overrides: dict, threads: int, test_crop, test_images, train_images, train_crop,
             examples: bool) -> dict:
    """Train and score one run in this (worker) process."""
    from ..training.checkpoint import set_threads
    from ..training.config import load_config

    set_threads(threads)
    cfg = load_config(None, {**overrides, "threads": threads})
    return train_and_score(cfg, _prepared_for(cfg, test_crop, test_images, train_images), train_crop=train_crop,
                           examples=examples)


def default_workers(n_runs: int, device: str = "cpu") -> int:
    """One process per usable core, at most one per run; one on a GPU (its runs take
    the whole device)."""
    if device not in ("cpu", "auto"):
        return 1
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return 1
    return max(1, min(n_runs, len(os.sched_getaffinity(0))))


def run_side_by_side(runs: list[dict], *, workers: int = 0, test_crop=None, test_images=None, train_images=None,
                     train_crop=(96, 96), examples=(), names=None, log=print, on_row=None) -> list[dict]:
    """Train and score each run of ``runs`` (configuration overrides, each with its own
    ``out_dir``) in ``workers`` processes at one thread each; the rows in the order of
    ``runs`` (:func:`train_and_score`).

    Parameters
    ----------
    runs : list of dict
        Overrides of :class:`affcons_lib.training.config.TrainConfig`, one per run.
    workers : int
        Processes; ``0``: :func:`default_workers`. ``1`` trains in this process, one
        run after another, at this process's thread count.
    test_crop, train_crop : (int, int) or None
        In-plane sizes of the scored test region and of the training crop whose
        unlabeled region is scored (:func:`affcons_lib.training.predict.score_run`).
    test_images, train_images : int, optional
        Of a collection (images, sections), use the first ``test_images`` test ones and
        the first ``train_images`` training ones (a quick look; None: all).
    examples : iterable of int
        Indices of the runs whose example arrays to return.
    names : list of str, optional
        A name per run for the progress lines (default: the ``out_dir``'s last part).
    on_row : callable, optional
        Called with (index, row) as each run finishes (e.g. to write it to disk).
    """
    import torch

    from ..training.checkpoint import set_threads

    examples = set(examples)
    names = names or [os.path.basename(str(r.get("out_dir", i))) for i, r in enumerate(runs)]
    if workers == 0:
        workers = default_workers(len(runs), runs[0].get("device", "auto") if runs else "cpu")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"run_side_by_side: workers={workers!r}, expected a positive integer (or 0: one per core)")
    rows: list = [None] * len(runs)
    t0 = time.time()

    def done(i, row, k):
        rows[i] = row
        log(f"[{k}/{len(runs)}] {names[i]}: train {row['train_seconds']:.0f} s, predict {row['predict_seconds']:.0f} s, "
            f"score {row['score_seconds']:.0f} s "
            f"({(time.time() - t0) / 60:.1f} min)")
        if on_row is not None:
            on_row(i, row)

    if workers == 1:  # in this process, at its thread count (a GPU run, or a one-core machine)
        threads = torch.get_num_threads()
        try:
            for k, (i, r) in enumerate(enumerate(runs), 1):
                done(i, _run_one(r, threads, test_crop, test_images, train_images, train_crop, i in examples), k)
        finally:
            _PREPARED.clear()  # this process goes on: its copies are not kept
            set_threads(threads)
        return rows
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_one, r, 1, test_crop, test_images, train_images, train_crop, i in examples): i
                   for i, r in enumerate(runs)}
        try:
            for k, f in enumerate(as_completed(futures), 1):
                done(futures[f], f.result(), k)
        except BaseException:  # one failed run stops the others: the queued runs are dropped, not trained
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return rows
