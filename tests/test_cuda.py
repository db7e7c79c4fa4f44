"""The CUDA path: skipped with the reason where no GPU is visible (CI, laptops);
run on a GPU machine with ``pytest tests/test_cuda.py`` (and
``benchmarks/gpu_check.py`` for the paper-scale timings)."""

import shutil

import numpy as np
import pytest
import torch

from affcons_lib.method import affinity, models
from affcons_lib.training import checkpoint, train
from affcons_lib.training.inference import predict_affinities
from affcons_lib.training.config import load_config

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch")]
TINY = ["widths=4,8", "patch=4,32,32", "batch=2", "dataset=synthetic", "progress=false", "log_every=1",
        "device=cuda"]


def test_cuda_inference_equals_cpu_inference():
    torch.manual_seed(0)
    net = models.build("embedding3d", widths=(4, 8))
    raw = np.random.default_rng(0).random((8, 64, 64), dtype=np.float32)
    on_cpu = predict_affinities(net, raw, affinity.OFFSETS_3D, tile=(8, 32, 32), with_entropy=False)
    on_gpu = predict_affinities(net.cuda(), raw, affinity.OFFSETS_3D, tile=(8, 32, 32), with_entropy=False)
    assert np.abs(on_cpu - on_gpu).max() < 1e-4  # full float32 (TF32 off during inference)


def _largest_difference(a_path, b_path) -> float:
    a = checkpoint.read_checkpoint(a_path, "cpu")["models"]
    b = checkpoint.read_checkpoint(b_path, "cpu")["models"]
    return max(float((a[n][k].float() - b[n][k].float()).abs().max()) for n in a for k in a[n])


@pytest.mark.parametrize("method", ["sparse_only", "crac"])
def test_cuda_training_resumes_as_exactly_as_it_reruns(method, tmp_path, monkeypatch):
    """A resumed GPU run equals the uninterrupted one as closely as the GPU
    repeats itself. Kernels are the deterministic ones where PyTorch has them
    (cuDNN, cuBLAS with CUBLAS_WORKSPACE_CONFIG); max pooling's CUDA backward has
    none, so two uninterrupted runs may differ a little, and the test measures by
    how much before it asks the same of the resumed run."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        run = TINY + [f"method={method}", "iterations=4", "snapshot_iters=2"]
        for name in ("whole", "again"):
            train.train(load_config(None, run + [f"out_dir={tmp_path / name}"]))
        # "killed" after iteration 2: its full state at 2 becomes last.pt of a run that resumes
        (tmp_path / "part").mkdir()
        shutil.copy(tmp_path / "whole" / "snapshot_0000002.pt", tmp_path / "part" / "last.pt")
        train.train(load_config(None, run + ["resume=true", f"out_dir={tmp_path / 'part'}"]))
    finally:
        torch.use_deterministic_algorithms(False)
    rerun = _largest_difference(tmp_path / "whole" / "last.pt", tmp_path / "again" / "last.pt")
    resumed = _largest_difference(tmp_path / "whole" / "last.pt", tmp_path / "part" / "last.pt")
    print(f"{method}: largest weight difference, rerun {rerun:.2e}, resumed {resumed:.2e}")
    assert resumed <= max(1e-6, 4 * rerun)
