"""affcons_lib.training.loop: the shared skeleton, on a one-weight model whose
steps are known by hand."""

import dataclasses

import pytest
import torch

from affcons_lib.training import checkpoint, loop


@dataclasses.dataclass
class Cfg:
    out_dir: str
    iterations: int = 5
    resume: bool = False
    log_every: int = 2
    checkpoint_every: int = 3
    device: str = "cpu"
    progress: bool = False
    threads: int = 1
    lr: float = 0.5


def run(cfg, losses=None, snapshots=()):
    """Minimise (w - 1)^2 from w = 0 by SGD: w after t steps at lr 0.5 is 1 (one step)."""
    torch.manual_seed(0)
    w = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(w.weight)
    opt = torch.optim.SGD(w.parameters(), lr=cfg.lr)
    training = loop.TrainingLoop(cfg, "test", snapshots=snapshots)
    training.open()
    start, _ = training.resume({"w": w}, opt)
    for t in training.iterations(start):
        loss = (w.weight[0, 0] - 1) ** 2 if losses is None else losses(t, w)
        training.step(t, loss, {"loss": float(loss.detach())}, opt)
        training.checkpoint(t, {"w": w}, opt)
    return training.finish({}), w, start


def test_log_rows_are_running_means_and_checkpoints_fall_when_due(tmp_path):
    cfg = Cfg(out_dir=str(tmp_path))
    summary, w, start = run(cfg, snapshots=(2,))
    assert start == 1 and float(w.weight.detach()) == 1.0  # one step of lr 0.5 on (w - 1)^2 lands on 1
    log = checkpoint.read_checkpoint(tmp_path / "last.pt")["log"]
    # losses 1, 0, 0, 0, 0: rows at 2 (mean of 1 and 0), 4 (0) and the last, 5 (0)
    assert [r["iteration"] for r in log] == [2, 4, 5] and [r["loss"] for r in log] == [0.5, 0.0, 0.0]
    assert (tmp_path / "snapshot_0000002.pt").is_file() and not (tmp_path / "snapshot_0000003.pt").exists()
    assert checkpoint.read_checkpoint(tmp_path / "last.pt")["iteration"] == 5
    assert summary["last_losses"]["iteration"] == 5 and (tmp_path / "summary.json").is_file()


def test_resume_continues_and_refuses_another_config(tmp_path):
    run(Cfg(out_dir=str(tmp_path), iterations=3))
    _, w, start = run(Cfg(out_dir=str(tmp_path), iterations=3, resume=True, threads=2))  # threads may change
    assert start == 4 and float(w.weight.detach()) == 1.0  # the saved weight, not the fresh 0
    with pytest.raises(ValueError, match=r"iterations: 3 -> 5"):
        run(Cfg(out_dir=str(tmp_path), iterations=5, resume=True))


def test_a_non_finite_loss_stops_before_the_step(tmp_path):
    def losses(t, w):
        return (w.weight[0, 0] - 1) ** 2 * (float("nan") if t == 4 else 1.0)

    with pytest.raises(FloatingPointError, match="iteration 4: loss term 'loss' is nan"):
        run(Cfg(out_dir=str(tmp_path), lr=0.25), losses)
    saved = checkpoint.read_checkpoint(tmp_path / "last.pt")
    assert saved["iteration"] == 3 and torch.isfinite(saved["models"]["w"]["weight"]).all()


def test_config_differences_compare_the_global_batch():
    assert loop.config_differences({"batch": 4, "lr": 1.0}, {"batch": 2, "lr": 1.0}, saved_ranks=1, ranks=2) == []
    assert loop.config_differences({"batch": 4}, {"batch": 4}, saved_ranks=1, ranks=2) != []
    assert loop.config_differences({"lr": 1.0}, {"lr": 2.0, "new_key": 3}) == ["lr: 1.0 -> 2.0"]
