"""Scheduling blocks with daisy: tasks over a volume, worker processes (local or
started by a cluster launcher), and the peak memory each worker noted."""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
from dataclasses import asdict
from pathlib import Path

from .._atomic import write_text


def roi_slices(roi) -> tuple:
    """A daisy Roi as a tuple of slices."""
    return tuple(slice(int(b), int(e)) for b, e in zip(roi.begin, roi.end))


def check_shape(name, shape, n=3):
    """``shape`` as ``n`` positive ints, or an error naming ``name``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != n or min(shape) < 1:
        raise ValueError(f"{name}: expected {n} positive sizes, got {shape}")
    return shape


def run_daisy(tasks: list, workers: int, tracking: Path, name: str) -> dict:
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


def make_task(name, total_shape, block, context, process_block, spec, tracking: Path, workers: int, launcher=None,
              read_write_conflict=False):
    """A daisy task whose write regions tile ``total_shape`` with ``block`` and
    whose read regions add ``context`` on each side (clipped by the caller); its
    blocks go to ``process_block(spec, block)`` in daisy's worker processes, or in
    processes started by ``launcher`` (:func:`launch_worker`, which names the
    function by its kind: ``fragments_block`` -> ``fragments``)."""
    import daisy.v2 as daisy

    if launcher:
        if workers < 1:
            raise ValueError(f"launcher={launcher!r}: launched workers need workers >= 1, got {workers}")
        process = functools.partial(launch_worker, str(launcher), process_block.__name__.removesuffix("_block"), spec)
    else:
        process = functools.partial(process_block, spec)
    context = tuple(int(c) for c in context)
    total = daisy.Roi(tuple(-c for c in context), tuple(n + 2 * c for n, c in zip(total_shape, context)))
    write = daisy.Roi((0,) * len(block), tuple(block))
    read = write.grow(daisy.Coordinate(context), daisy.Coordinate(context))
    return daisy.Task(name, total_roi=total, read_roi=read, write_roi=write, process_function=process,
                      read_write_conflict=read_write_conflict, fit="shrink", max_workers=max(1, workers),
                      max_retries=1, tracking_path=str(tracking / name))


def launch_worker(launcher: str, kind: str, spec) -> None:
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


def reset_peak() -> None:
    """Reset this process's peak resident memory (Linux: ``clear_refs`` 5);
    elsewhere the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def own_rss_mb() -> float:
    """Resident memory (MiB) of this process now (Linux ``VmRSS``; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return 0.0


def own_peak_mb() -> float:
    """Peak resident memory (MiB) of this process: Linux's ``VmHWM``, the peak of
    the running program (``ru_maxrss`` would also count the parent a subprocess
    was forked from, before its ``exec``); ``ru_maxrss`` elsewhere."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_memory_dir(tracking: Path) -> str:
    """Where this run's workers note their peak memory (emptied first)."""
    d = tracking / "memory"
    d.mkdir(parents=True, exist_ok=True)
    for f in d.glob("*.txt"):
        f.unlink()
    return str(d)


def note_worker_memory(memory_dir: str) -> None:
    """Worker: write this process's peak memory so far (one file per process)."""
    write_text(Path(memory_dir) / f"{os.getpid()}.txt", f"{own_peak_mb():.1f}")


def peak_memory_mb(memory_dir: str | None = None) -> dict:
    """Peak resident memory (MiB) of this process (the scheduler, which also runs
    the graph step) and of the largest worker, as the workers noted it in
    ``memory_dir``."""
    workers = [float(f.read_text()) for f in Path(memory_dir).glob("*.txt")] if memory_dir else []
    return {"peak_mb_main": round(own_peak_mb(), 1), "peak_mb_worker": round(max(workers, default=0.0), 1)}
