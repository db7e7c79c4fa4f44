"""Parameters and multiply-accumulates (MACs) of the networks: the supplementary's
Table 2.

Counting uses :class:`torch.utils.flop_counter.FlopCounterMode`, which sees every
aten operation of a real forward pass. Its built-in formulas count convolutions
(and transposed convolutions) exactly; we register formulas for the rest, with the
convention of the field's usual counters (ptflops), one MAC per element:

=====================  =========================================
convolution            C_in/groups x kernel MACs per output element, + 1 per
                       output element when the conv has a bias
batch norm             1 per element
ELU, sigmoid           1 per output element
up-sampling            1 per output element
max-pooling            1 per input element
embedding similarity   (offsets + 2) x E per voxel: E for the squared norm and E
                       for the division of L2-normalisation, then E per offset
                       for the dot product (f(θ2) only, when offsets are given)
=====================  =========================================

Element-wise additions (residual and skip connections) are not counted, as in
ptflops. With this convention f(θ1) at 18×160×160 counts 87.29 GMAC, the paper's
figure; f(θ2) counts 87.44 against the paper's 87.47 (0.04 % apart), the
difference lying in how the similarity computation is counted.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from .models import n_parameters

__all__ = ["count", "macs_by_operation", "similarity_macs", "conv_only_macs", "activation_bytes"]

aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(shape) if shape is not None else 0


# Each formula returns FLOPs = 2 x MACs, the unit of FlopCounterMode's totals.
def _conv(x_shape, w_shape, bias, stride, padding, dilation, transposed, *args, out_shape=None, **kwargs):
    flops = conv_flop_count(x_shape, w_shape, out_shape, transposed=transposed)
    if bias is not None:
        flops += 2 * _numel(out_shape)
    return flops


def _per_input_element(x_shape, *args, out_shape=None, **kwargs):
    return 2 * _numel(x_shape)


def _per_output_element(*args, out_shape=None, **kwargs):
    out = out_shape[0] if isinstance(out_shape, (tuple, list)) and out_shape and isinstance(out_shape[0], (tuple, list, torch.Size)) else out_shape
    return 2 * _numel(out)


_FORMULAS = {
    aten.convolution: _conv,
    aten.native_batch_norm: _per_input_element,
    aten._native_batch_norm_legit: _per_input_element,
    aten._native_batch_norm_legit_no_training: _per_input_element,
    aten.elu: _per_output_element,
    aten.sigmoid: _per_output_element,
    aten.upsample_trilinear3d: _per_output_element,
    aten.upsample_bilinear2d: _per_output_element,
    aten.upsample_nearest3d: _per_output_element,
    aten.upsample_nearest2d: _per_output_element,
    aten.max_pool3d_with_indices: _per_input_element,
    aten.max_pool2d_with_indices: _per_input_element,
}


def _check_shape(model, input_shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    dim = getattr(model, "dim", None)
    if dim is not None and len(shape) != dim + 2:
        axes = "(N, C, D, H, W)" if dim == 3 else "(N, C, H, W)"
        raise ValueError(f"input_shape: expected the whole input tensor's shape {axes}, got {shape}")
    return shape


def similarity_macs(spatial_shape: Sequence[int], embedding_dim: int, n_offsets: int, batch: int = 1) -> int:
    """MACs of turning E-d embeddings into affinities for ``n_offsets`` offsets
    (L2-normalisation, then one dot product per offset), per the convention above."""
    return int(batch * math.prod(spatial_shape) * embedding_dim * (n_offsets + 2))


def _trace(model, shape, custom_mapping=None) -> FlopCounterMode:
    """One eval-mode forward pass on the meta device (shapes only: no memory, no
    arithmetic), counted by FlopCounterMode."""
    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False, custom_mapping=custom_mapping or {}) as counter, torch.no_grad():
        meta(torch.zeros(shape, device="meta"))
    return counter


def macs_by_operation(model: torch.nn.Module, input_shape: Sequence[int], offsets=None) -> dict[str, int]:
    """MACs per operation type for one forward pass at ``input_shape``; with
    ``offsets`` and an embedding network, also ``similarity``."""
    shape = _check_shape(model, input_shape)
    counter = _trace(model, shape, _FORMULAS)
    by_op = {}
    for op, flops in counter.get_flop_counts()["Global"].items():
        name = str(op).split(".")[-1] if "." in str(op) else str(op)
        name = {"_native_batch_norm_legit": "batch_norm", "_native_batch_norm_legit_no_training": "batch_norm",
                "native_batch_norm": "batch_norm"}.get(name, name)
        by_op[name] = by_op.get(name, 0) + flops // 2
    if offsets is not None and getattr(model, "kind", None) == "embedding":
        by_op["similarity"] = similarity_macs(shape[2:], model.out_channels, len(offsets), batch=shape[0])
    return by_op


def conv_only_macs(model: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """Convolution MACs alone (no bias, normalisation or activation): the floor
    every counter agrees on."""
    return _trace(model, _check_shape(model, input_shape)).get_total_flops() // 2


def count(model: torch.nn.Module, input_shape: Sequence[int], offsets=None) -> dict[str, int]:
    """Parameters and MACs of ``model`` for one input tensor of ``input_shape``.

    Parameters
    ----------
    model : torch.nn.Module
        Typically from :func:`affcons_lib.method.models.build`.
    input_shape : sequence of int
        The whole input tensor's shape, (N, C, D, H, W) or (N, C, H, W).
    offsets : sequence of offsets, optional
        For an embedding network (f(θ2)), also count the similarity computation
        that turns embeddings into one affinity per offset.

    Returns
    -------
    dict with ``params`` (trainable parameters) and ``macs`` (multiply-accumulates
    of one forward pass).
    """
    by_op = macs_by_operation(model, input_shape, offsets)
    return {"params": n_parameters(model), "macs": int(sum(by_op.values()))}


class _OutputBytes(TorchDispatchMode):
    """Sums the sizes of every tensor an operation produces (views excluded)."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func not in (aten.detach.default, aten.view.default, aten._unsafe_view.default, aten.t.default):
            for o in (out if isinstance(out, (tuple, list)) else (out,)):
                if torch.is_tensor(o):
                    self.elements += o.numel()
        return out


def activation_bytes(model: torch.nn.Module, input_shape: Sequence[int], bytes_per_element: int = 4) -> int:
    """Memory of the tensors one training-mode forward pass creates (every
    operation's output: convolutions, normalisations, activations, sums), the
    upper bound of what autograd keeps for the backward pass, in float32 by
    default. Traced on the meta device, so it allocates nothing; on a GPU,
    ``torch.cuda.max_memory_allocated`` gives the measured figure."""
    shape = _check_shape(model, input_shape)
    meta = copy.deepcopy(model).to("meta").train()
    with _OutputBytes() as counter:
        meta(torch.zeros(shape, device="meta"))
    return int(counter.elements * bytes_per_element)
