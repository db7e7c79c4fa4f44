"""Networks on disk: building them from a config, atomic checkpoints and logs,
loading them back.

A checkpoint (``last.pt``, ``snapshot_NNNNNNN.pt``) holds the models' weights, the
optimiser, the iteration, the random state, the running log sums and the config:
everything :func:`affcons_lib.training.train.train` needs to resume exactly.
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import torch

from ..method import models
from .._atomic import atomic_path
from .config import TrainConfig

__all__ = ["build_models", "save", "write_log", "load_checkpoint", "read_checkpoint", "resolve_device", "set_threads",
           "keep_freed_memory", "rng_state", "restore_rng_state"]


def build_models(cfg: TrainConfig) -> dict[str, torch.nn.Module]:
    """f(θ2) always (the inference branch); f(θ1) too for ``crac``."""
    suffix = "3d" if cfg.dim == 3 else "2d"
    nets = {"embedding": models.build(f"embedding{suffix}", widths=cfg.widths, in_channels=cfg.in_channels)}
    if cfg.method == "crac":
        nets["affinity"] = models.build(f"affinity{suffix}", widths=cfg.widths, in_channels=cfg.in_channels)
    return nets


def save(obj, path) -> None:
    """``torch.save`` that never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_log(rows: list[dict], out_dir, name: str = "losses.csv") -> None:
    """A CSV log, rewritten whole and atomically."""
    if not rows:
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(Path(out_dir) / name) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def load_checkpoint(path, device="cpu") -> tuple[dict[str, torch.nn.Module], TrainConfig, dict]:
    """Models (in eval mode), config and the raw checkpoint dict from a file
    written by :func:`train`."""
    ckpt = read_checkpoint(path, device)
    cfg = TrainConfig.from_saved(ckpt["config"])
    nets = build_models(cfg)
    for name, net in nets.items():
        net.load_state_dict(ckpt["models"][name])
        net.to(device).eval()
    return nets, cfg, ckpt


def read_checkpoint(path, device="cpu", keys=("models", "config")) -> dict:
    """The dict of a checkpoint file; a clear error when it is missing, is not a
    checkpoint, or lacks ``keys``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        ckpt = torch.load(p, map_location=device, weights_only=False)
    except Exception as err:  # pickle, zip or torch errors: all mean "not a checkpoint"
        raise ValueError(f"{p}: not a checkpoint written by affcons_lib ({type(err).__name__}: {err})") from err
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(f"{p}: not a checkpoint written by affcons_lib (no {missing})")
    return ckpt


def resolve_device(cfg) -> torch.device:
    """The torch device of ``cfg.device`` (a config, or the name itself): ``auto``
    is CUDA when available."""
    name = cfg if isinstance(cfg, str) else cfg.device
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)



def set_threads(threads: int = 0) -> int:
    """Give torch and numba ``threads`` CPU threads and return the count. ``0``:
    the launcher's ``OMP_NUM_THREADS`` when set (torchrun sets 1 per rank), else
    half the usable cores, at least one. Why not all: on a shared machine whose
    cores are busy, OpenMP threads that wait on each other make a 2-core step ten
    times slower (measured: 10 ``crac`` steps 118 s with 2 threads, 10 s with 1).

    Why numba too: its OpenMP threading layer shares torch's OpenMP runtime. A
    numba-parallel function run with numba's default (every core) leaves torch at
    every core as well once ``OMP_NUM_THREADS`` is set: a validation's boundary AP
    in the middle of a one-thread training made it a two-thread one (measured: two
    ``make reference`` processes, one thread each, ran 2-3x slower from their first
    validation on)."""
    if threads == 0:
        threads = _launcher_threads() or max(1, len(os.sched_getaffinity(0)) // 2)
    threads = int(threads)
    import numba

    # numba first: starting its thread pool sets OpenMP's count to numba's, so torch's goes last
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)
    keep_freed_memory()
    return threads


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@functools.cache
def keep_freed_memory() -> bool:
    """Let the C allocator keep freed memory for the next allocation instead of
    giving it back to the system (glibc: ``mallopt``; elsewhere nothing is done).
    Returns whether it applied. Called by :func:`set_threads`, the start of every
    training or scoring process; the setting is the process's, so once is enough.

    Why: a CPU forward pass allocates and frees tensors of tens of megabytes again
    and again. glibc serves such sizes by ``mmap`` and returns them on ``free``, so
    every new tensor comes as fresh pages that the kernel must fault in and zero.
    Scoring a run as notebook 01 does spent a third of its time so, in the kernel
    (measured at one thread on this project's CPU: 16.4 s a run, 5.9 s of it system
    time, against 10.5 s and 0.2 s with the freed memory kept; the same scores).
    The process holds on to its peak memory instead of returning it between
    tensors, which its peak had needed anyway.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    # large blocks from the heap, not mmap; the heap's top neither trimmed nor grown by less than 1 GiB
    applied = [mallopt(option, value) == 1 for option, value in
               ((_M_MMAP_THRESHOLD, 2**31 - 1), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 1 << 30))]
    return all(applied)


def _launcher_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a count (its first entry for a nested list such as
    "4,2"), read from the environment rather than from torch: torch's count may
    already have been moved (by numba, see :func:`set_threads`). None when unset or
    not a positive count."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def rng_state() -> dict:
    """torch's random state: the CPU generator, and each GPU's where CUDA runs
    (dropout on a GPU draws from the GPU's generator)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state) -> None:
    """Undo :func:`rng_state`. States come back as CPU byte tensors whatever
    device the checkpoint was mapped to; older checkpoints hold the CPU state alone."""
    if isinstance(state, torch.Tensor):
        state = {"cpu": state}
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
