"""The skeleton every training loop here shares: device and threads, the output
folder, exact resume, the iteration range, the optimiser step with its
non-finite guard, running-mean log rows and checkpoint timing.

:func:`affcons_lib.training.train.train` and :func:`affcons_lib.training.cpsn.train_cpsn` each
supply what is theirs (networks, sampler, the loss of a step) and read top to
bottom in a screen::

    loop = TrainingLoop(cfg)
    ...                                   # data, networks, optimiser
    start, saved = loop.resume(networks, optimizer)
    for t in loop.iterations(start):
        loss, terms = ...                 # the method's step
        loop.step(t, loss, terms, optimizer)
        loop.checkpoint(t, networks, optimizer)
    return loop.finish(summary)

A checkpoint holds :data:`CHECKPOINT_SCHEMA`, the networks (``models``), the
optimiser, the iteration, the random state, the log and its running sums and the
config; a resume refuses a checkpoint whose config differs from the given one in
anything that changes the run, and names the difference.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch

from . import checkpoint
from .. import distributed
from .._atomic import write_json

__all__ = ["CHECKPOINT_SCHEMA", "RESUME_MAY_CHANGE", "TrainingLoop", "config_differences"]

#: Version of the checkpoint layout; 1 added the version itself (older files count as 0).
CHECKPOINT_SCHEMA = 1

#: Config keys a resumed run may change: where and how it runs and reports, not
#: what it computes. (``batch`` may change with the number of ranks as long as the
#: global batch stays: :func:`config_differences`.)
RESUME_MAY_CHANGE = ("resume", "progress", "threads", "device", "out_dir", "checkpoint_every", "log_every",
                     "val_every", "workers")


def config_differences(saved: dict, given: dict, *, saved_ranks: int = 1, ranks: int = 1,
                       may_change=RESUME_MAY_CHANGE) -> list[str]:
    """The keys whose values differ between a checkpoint's config and the one a
    resumed run is given, as ``"key: saved -> given"`` texts; keys of
    ``may_change`` and keys the checkpoint predates are not compared, and
    ``batch`` only as the global batch (batch × ranks)."""
    out = []
    for key, value in given.items():
        if key in may_change or key not in saved:
            continue
        old = saved[key]
        if key == "batch":
            if old * saved_ranks != value * ranks:
                out.append(f"global batch: {old} x {saved_ranks} ranks -> {value} x {ranks} ranks")
            continue
        same = list(old) == list(value) if isinstance(old, (list, tuple)) and isinstance(value, (list, tuple)) \
            else old == value
        if not same:
            out.append(f"{key}: {old!r} -> {value!r}")
    return out


class TrainingLoop:
    """One training run's skeleton (see the module docstring).

    Parameters
    ----------
    cfg : a config dataclass with ``out_dir``, ``iterations``, ``resume``,
        ``log_every``, ``checkpoint_every``, ``device``, ``progress`` and, where
        present, ``threads``.
    name : str
        The progress bar's label.
    snapshots : iterable of int
        Iterations at which to keep a ``snapshot_NNNNNNN.pt`` besides ``last.pt``.
    may_change : iterable of str
        Config keys a resume may change (:func:`config_differences`).
    """

    def __init__(self, cfg, name: str, *, snapshots=(), may_change=RESUME_MAY_CHANGE):
        self.cfg, self.name = cfg, name
        self.snapshots, self.may_change = set(snapshots), tuple(may_change)
        self.threads = checkpoint.set_threads(getattr(cfg, "threads", 0))
        self.device = distributed.setup(str(checkpoint.resolve_device(cfg)))  # torchrun's process group, if any
        self.main = distributed.is_main()  # rank 0 alone writes logs and checkpoints
        self.out_dir = Path(cfg.out_dir)
        self.last = self.out_dir / "last.pt"
        self.log, self.running = [], {}
        self.extra = {}  # what a method keeps in its checkpoints besides the common parts
        self.t_start = time.time()

    def open(self) -> None:
        """Create the output folder: call it once the data have loaded, so that a
        failed start leaves no folder behind."""
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def resume(self, networks: dict, optimizer) -> tuple[int, dict]:
        """With ``cfg.resume`` and a ``last.pt``: load the networks, optimiser,
        random state and log, and return (first iteration, the checkpoint);
        otherwise (1, {}). Raises ValueError naming the differences when the
        checkpoint's config differs from ``cfg`` (:func:`config_differences`), or
        when it comes from a newer checkpoint schema."""
        if not (self.cfg.resume and self.last.is_file()):
            return 1, {}
        ckpt = checkpoint.read_checkpoint(self.last, self.device, keys=("models", "optimizer", "iteration", "log"))
        if ckpt.get("schema", 0) > CHECKPOINT_SCHEMA:
            raise ValueError(f"{self.last}: checkpoint schema {ckpt['schema']} is newer than this library's "
                             f"{CHECKPOINT_SCHEMA}; update affcons_lib")
        differ = config_differences(ckpt.get("config", {}), dataclasses.asdict(self.cfg),
                                    saved_ranks=ckpt.get("world_size", 1), ranks=distributed.world_size(),
                                    may_change=self.may_change)
        if differ:
            raise ValueError(f"{self.last}: cannot resume, the run was made with another config ("
                             + "; ".join(differ) + "); give the same settings, or a new out_dir, or resume=false")
        for name, net in networks.items():
            net.load_state_dict(ckpt["models"][name])
        optimizer.load_state_dict(ckpt["optimizer"])
        checkpoint.restore_rng_state(ckpt["torch_rng"])
        self.log, self.running = ckpt["log"], ckpt.get("running", {})
        return ckpt["iteration"] + 1, ckpt

    def iterations(self, start: int):
        """Iterations ``start`` … ``cfg.iterations``, with a progress bar on rank 0
        when ``cfg.progress``."""
        from tqdm import tqdm

        self.bar = tqdm(range(start, self.cfg.iterations + 1), desc=self.name, leave=False,
                        disable=not (self.cfg.progress and self.main))
        self.t_start = time.time()
        return self.bar

    def step(self, t: int, loss: torch.Tensor, terms: dict, optimizer) -> None:
        """Check the step's loss terms (means over the ranks), then step the
        optimiser and add the terms to the log. A non-finite term stops the run
        before the step, so every checkpoint holds finite weights."""
        terms = distributed.mean_over_ranks(terms)  # each rank holds its share of the global mean
        bad = [k for k, v in terms.items() if not math.isfinite(v)]
        if bad:
            kept = f"{self.last} holds the last finite weights" if self.last.is_file() else "no checkpoint was written"
            raise FloatingPointError(f"iteration {t}: loss term {bad[0]!r} is {terms[bad[0]]} (not finite); "
                                     f"training stopped, {kept}; check the data and lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k, v in terms.items():
            self.running[k] = self.running.get(k, 0.0) + v
        every = self.cfg.log_every
        if t % every == 0 or t == self.cfg.iterations:
            n = every if t % every == 0 else t % every
            row = {"iteration": t, **{k: v / n for k, v in self.running.items()}, "seconds": time.time() - self.t_start}
            self.log.append(row)
            self.running = {}
            self.bar.set_postfix(loss=f"{row.get('total', row.get('loss', 0.0)):.4f}")

    def checkpoint(self, t: int, networks: dict, optimizer, **extra) -> None:
        """On rank 0: a snapshot at ``cfg.snapshot_iters``, and ``last.pt`` with
        the log every ``cfg.checkpoint_every`` iterations and at the end. ``extra``
        goes into the checkpoint beside the common parts."""
        snapshot = t in self.snapshots
        due = t % self.cfg.checkpoint_every == 0 or t == self.cfg.iterations
        if not self.main or not (snapshot or due):
            return
        state = {"schema": CHECKPOINT_SCHEMA, "models": {k: v.state_dict() for k, v in networks.items()},
                 "optimizer": optimizer.state_dict(), "iteration": t, "torch_rng": checkpoint.rng_state(),
                 "config": dataclasses.asdict(self.cfg), "world_size": distributed.world_size(),
                 "log": self.log, "running": dict(self.running), **extra}
        if snapshot:
            checkpoint.save(state, self.out_dir / f"snapshot_{t:07d}.pt")
        if due:
            checkpoint.save(state, self.last)
            checkpoint.write_log(self.log, self.out_dir)

    def finish(self, summary: dict) -> dict:
        """Close the bar; the summary gains ``checkpoint``, ``seconds`` and the last
        log row; rank 0 writes it as ``summary.json``; no rank leaves before."""
        if hasattr(self, "bar"):
            self.bar.close()
        summary = {"out_dir": str(self.out_dir), "checkpoint": str(self.last), **summary,
                   "seconds": time.time() - self.t_start, "last_losses": self.log[-1] if self.log else {}}
        if self.main:
            write_json(self.out_dir / "summary.json", summary)
        distributed.barrier()
        return summary
