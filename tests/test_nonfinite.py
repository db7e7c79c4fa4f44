"""Inputs that cannot poison a run: a NaN in the raw data is refused before
training (naming the file), a loss that turns non-finite stops training with the
last finite checkpoint kept, and predict / evaluate refuse non-finite affinities."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from affcons_lib.training import checkpoint, objective, predict, train
from affcons_lib import cli, data
from affcons_lib.evaluation import evaluate
from affcons_lib.training.config import load_config

TINY = dict(widths=(4, 8), patch=(4, 32, 32), iterations=4, checkpoint_every=2, log_every=1, progress=False,
            precision="fp32", min_size=1, min_labeled=0.0)


@pytest.fixture()
def volume(tmp_path):
    vol = data.load_volume("synthetic", synthetic_shape=(16, 64, 64))
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["stack"] = vol.raw.astype(np.float32)
        f["labels"] = vol.labels
    return path


def test_a_nan_voxel_is_refused_before_training_naming_the_file(volume, tmp_path, capsys):
    with h5py.File(volume, "r+") as f:
        raw = f["stack"][:]
        raw[3, 10, 20] = np.nan
        raw[5, 0, 0] = np.inf
        f["stack"][...] = raw
    out = tmp_path / "run"
    code = cli.main(["train", f"--set=dataset={volume}:stack", f"--set=labels={volume}:labels", f"--set=out_dir={out}",
                       "--set=iterations=2", "--set=widths=4,8", "--set=patch=4,32,32", "--set=progress=false"])
    err = capsys.readouterr().err
    assert code != 0
    assert f"{volume}:stack" in err and "2 non-finite values" in err and "(3, 10, 20)" in err
    assert not out.exists()  # nothing half-made


def test_a_loss_gone_nan_stops_training_and_keeps_the_last_finite_checkpoint(volume, tmp_path, monkeypatch):
    real = objective.step_objective

    def poisoned(cfg, nets, x, *args, **kwargs):  # iteration 3's loss turns NaN, as a diverging run's would
        step = real(cfg, nets, x, *args, **kwargs)
        if args[-1] == 3:
            step.supervised2 = step.supervised2 * float("nan")
        return step

    monkeypatch.setattr(train, "step_objective", poisoned)
    cfg = load_config(None, dict(TINY, dataset=f"{volume}:stack", labels=f"{volume}:labels", method="crac",
                                       out_dir=str(tmp_path / "run")))
    with pytest.raises(FloatingPointError, match=r"iteration 3: loss term 'sup2' is nan .*last\.pt holds the last finite"):
        train.train(cfg)
    ckpt = checkpoint.read_checkpoint(tmp_path / "run" / "last.pt", keys=("models", "iteration"))
    assert ckpt["iteration"] == 2
    assert all(torch.isfinite(v).all() for m in ckpt["models"].values() for v in m.values() if v.is_floating_point())


def test_predict_and_evaluate_refuse_nonfinite_affinities(volume, tmp_path):
    cfg = load_config(None, dict(TINY, dataset=f"{volume}:stack", labels=f"{volume}:labels",
                                       method="sparse_only", iterations=2, out_dir=str(tmp_path / "run")))
    last = train.train(cfg)["checkpoint"]
    state = torch.load(last, weights_only=False)
    for tensor in state["models"]["embedding"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    bad = tmp_path / "nan_weights.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=f"affinities predicted by {bad}: .* non-finite"):
        predict.predict_part(bad, "test")
    affs = np.full((3, 4, 8, 8), 0.9, np.float32)
    affs[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"affs: 1 non-finite values .* first at \(1, 2, 3, 4\)"):
        evaluate.evaluate_3d(affs, np.ones((4, 8, 8), np.uint32))
