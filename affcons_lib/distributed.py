"""Training on several processes (GPUs, nodes) with ``torchrun``.

``torchrun --nproc_per_node N -m affcons_lib train CONFIG.yaml`` starts N copies
of the training script; each reads its rank from the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and :func:`setup` joins them into one
process group (NCCL on GPUs, gloo on CPUs). Nothing here runs, and nothing
changes, in a plain single-process run.

What makes N ranks at batch b train like one process at batch N·b:

- **Patches.** Sample ``j`` of iteration ``t`` is drawn from its own generator
  seeded ``(seed, t, j)``; rank ``r`` draws samples ``r·b … r·b+b-1``. Ranks see
  different patches, and the global batch does not depend on how it is split.
- **Gradients.** DistributedDataParallel averages them over ranks. The losses
  are means over the voxels of the whole global batch: each rank divides its sum
  by the voxel count summed over ranks (:func:`global_mean`), so the average of
  the ranks' gradients is the gradient of the global loss.
- **Batch norm.** Statistics over the global batch: PyTorch's ``SyncBatchNorm``
  on GPUs; on CPUs (which it does not support) :class:`CpuSyncBatchNorm`, which
  all-reduces per-channel sums with a differentiable all-reduce.
- **Quantiles.** The entropy filter's percentile is taken over the values of
  all ranks (:func:`gather_values`).

Rank 0 alone writes logs and checkpoints. A checkpoint holds the plain
(unwrapped) weights, so a run can resume on a different number of ranks.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["setup", "teardown", "is_distributed", "rank", "world_size", "is_main", "global_sum",
           "global_mean", "gather_values", "mean_over_ranks", "CpuSyncBatchNorm", "convert_sync_batchnorm",
           "wrap", "unwrap", "barrier"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: str = "cpu") -> torch.device:
    """Join the process group torchrun describes in the environment (no-op
    without ``WORLD_SIZE`` > 1). Returns this rank's device: ``cuda:LOCAL_RANK``
    when ``device`` asks for CUDA, else ``device``."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = str(device).startswith("cuda")
    if n > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda and n > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def global_sum(x: torch.Tensor) -> torch.Tensor:
    """``x`` summed over ranks (no gradient: for counts and normalisers)."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


def global_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """This rank's share of a mean over all ranks: ``world · total / Σ count``.

    DistributedDataParallel averages gradients over ranks, so the averaged
    gradient is that of ``Σ_ranks total / Σ_ranks count``, the mean over the
    global batch. Alone, it is ``total / max(count, 1)``.
    """
    return total * world_size() / global_sum(count.to(total.dtype)).clamp_min(1.0)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average a dict of floats over ranks (for logging): one all-reduce."""
    if not is_distributed() or not values:
        return values
    keys = list(values)  # every rank builds the same dict, in the same order
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, (t / world_size()).tolist()))


def gather_values(values: torch.Tensor) -> torch.Tensor:
    """The 1D tensors of all ranks, concatenated in rank order (lengths may
    differ between ranks)."""
    if not is_distributed():
        return values
    n = torch.tensor([values.numel()], device=values.device)
    sizes = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=values.dtype, device=values.device)
    padded[: values.numel()] = values.detach().reshape(-1)
    parts = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the batch of all ranks, for any device and backend.

    In training mode with several ranks, the per-channel count, sum and sum of
    squares are summed over ranks with a differentiable all-reduce
    (``torch.distributed.nn.functional.all_reduce``: its backward sums the
    gradients of all ranks), so the forward and the backward equal those of one
    process holding the whole batch. Otherwise it is plain batch norm.
    """

    def _check_input_dim(self, x):
        if x.dim() < 3:
            raise ValueError(f"CpuSyncBatchNorm: expected (N, C, *spatial), got shape {tuple(x.shape)}")

    def forward(self, x):
        self._check_input_dim(x)
        if not (self.training and is_distributed()):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training or not self.track_running_stats, self.momentum, self.eps)
        from torch.distributed.nn.functional import all_reduce

        dims = [0] + list(range(2, x.dim()))
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        stats = torch.cat([count, x.sum(dims), (x * x).sum(dims)])
        stats = all_reduce(stats)
        n = stats[0]
        mean = stats[1:1 + x.shape[1]] / n
        var = (stats[1 + x.shape[1]:] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1.0))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every batch norm of ``module`` synchronised over ranks: PyTorch's
    ``SyncBatchNorm`` on CUDA, :class:`CpuSyncBatchNorm` elsewhere. Parameters
    and running statistics are kept."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child, device))
    return module


def wrap(net: nn.Module, device: torch.device) -> nn.Module:
    """``net`` with synchronised batch norm inside DistributedDataParallel when
    several ranks run; ``net`` itself otherwise."""
    if not is_distributed():
        return net
    net = convert_sync_batchnorm(net, device)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


def unwrap(net: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel wrapper."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
