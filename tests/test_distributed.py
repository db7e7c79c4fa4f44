"""torchrun with the gloo backend on CPU: N ranks at batch b train like one
process at batch N·b (same patches, synchronised batch norm, global means), and
a run resumes on a different number of ranks."""

import csv
import os
import shutil
import subprocess
import sys

import pytest
import torch

# fp32: these tests compare one batch of 2 with two ranks of 1 to float32 rounding; bf16
# (precision=auto on a CPU that has it) rounds differently at each batch shape
TINY = ["widths=4,8", "patch=4,32,32", "dataset=synthetic", "progress=false", "log_every=1", "method=crac",
        "iterations=6", "seed=3", "snapshot_iters=3", "precision=fp32"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _sets(items):
    return sum([["--set", s] for s in items], [])


def _run(command, settings, nproc=1):
    if nproc == 1:
        cmd = [sys.executable, "-m", "affcons_lib", command]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "affcons_lib", command]
    out = subprocess.run(cmd + _sets(settings), env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def _log(path):
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _assert_same_curve(a, b):
    assert len(a) == len(b) and len(a) > 0
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            # fractions of pixels kept by the entropy percentile can move by one pixel
            # when an entropy sits at the threshold up to float rounding
            tol = dict(abs=2e-3) if k.startswith("confident") else dict(rel=1e-4, abs=1e-6)
            assert ra[k] == pytest.approx(rb[k], **tol), (k, ra["iteration"])


def _weights(path):
    return {f"{n}.{k}": v for n, d in torch.load(path, weights_only=False)["models"].items() for k, v in d.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _run("train", TINY + ["batch=1", f"out_dir={root / 'two'}"], nproc=2)
    _run("train", TINY + ["batch=2", f"out_dir={root / 'one'}"])
    return root


def test_two_ranks_at_batch_1_equal_one_rank_at_batch_2(runs):
    _assert_same_curve(_log(runs / "two" / "losses.csv"), _log(runs / "one" / "losses.csv"))
    # The weights are not compared one by one: a convolution's bias just before
    # batch norm gets a gradient that is zero up to rounding, which Adam scales
    # up to steps of the learning rate. The losses above are the meaningful check.
    a, b = _weights(runs / "two" / "last.pt"), _weights(runs / "one" / "last.pt")
    assert a.keys() == b.keys()  # plain (unwrapped) weights: no "module." prefix
    two = torch.load(runs / "two" / "last.pt", weights_only=False)
    assert two["world_size"] == 2
    # rank 0 alone wrote: one checkpoint, one log, no partial files
    assert sorted(p.name for p in (runs / "two").iterdir()) == ["last.pt", "losses.csv", "snapshot_0000003.pt",
                                                               "summary.json"]


def test_resume_on_a_different_number_of_ranks(runs, tmp_path):
    """The 2-rank run's iteration-3 snapshot, resumed by one process at batch 2,
    ends where the 1-rank run ends."""
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(runs / "two" / "snapshot_0000003.pt", resumed / "last.pt")
    _run("train", TINY + ["batch=2", f"out_dir={resumed}", "resume=true"])
    _assert_same_curve(_log(resumed / "losses.csv"), _log(runs / "one" / "losses.csv"))
    assert torch.load(resumed / "last.pt", weights_only=False)["world_size"] == 1


def test_cpsn_two_ranks_equal_one(runs, tmp_path):
    base = [f"snapshot_dir={runs / 'one'}", "widths=4,8", "iterations=3", "max_dropout=0", "log_every=1",
            "channels_per_step=2"]
    _run("cpsn", base + ["batch=1", f"out_dir={tmp_path / 'two'}"], nproc=2)
    _run("cpsn", base + ["batch=2", f"out_dir={tmp_path / 'one'}"])
    _assert_same_curve(_log(tmp_path / "two" / "losses.csv"), _log(tmp_path / "one" / "losses.csv"))
