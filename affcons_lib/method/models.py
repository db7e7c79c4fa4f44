"""The networks: the residual "superhuman" 3D U-Net (Lee et al. 2017), its 2D
counterpart (residual U-Net, Anas et al. 2017), and the CPSN backbone.

One class, :class:`ResidualUNet`, builds both dimensionalities:

    embed_in   conv (1,5,5) + ELU                      in -> w0
    encoder    residual block per level, max-pool (1,2,2) between levels
    decoder    upsample x(1,2,2) + 1x1x1 conv, *add* the skip, BN + ELU,
               residual block
    embed_out  [dropout] conv (1,5,5) + ELU            w0 -> w0
    head       [dropout] conv 1x1x1                     w0 -> out (+ sigmoid)

A residual block is conv (1,3,3) -> BN -> ELU, then two conv (3,3,3) (the first
followed by BN + ELU) whose result is added to the first conv's output, then BN +
ELU. In 2D every kernel is the in-plane part of its 3D counterpart. With widths
(28, 36, 48, 64, 80) the levels are 28, 28, 36, 48, 64, 80 channels -- four
poolings -- and the network has 1,477,920 parameters with 12 affinity outputs and
1,478,036 with 16 embedding outputs, the paper's "1.48 M".

The last two layers (embed_out and the head) carry dropout of a settable rate that
can stay active in eval mode: the CPSN simulates prediction errors with it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ResidualUNet", "McDropout", "build", "MODEL_NAMES", "valid_sizes", "n_parameters", "autocast", "resolve_precision",
           "cpu_kernels", "KERNEL_CAPS"]

WIDTHS_3D = (28, 36, 48, 64, 80)
WIDTHS_2D = (16, 32, 64, 128, 256)


class McDropout(nn.Module):
    """Dropout whose rate can change at run time and that can stay active in eval
    mode (Monte-Carlo dropout)."""

    def __init__(self, p: float = 0.0, always_on: bool = False):
        super().__init__()
        self.p = float(p)
        self.always_on = bool(always_on)

    def forward(self, x):
        if self.p <= 0.0:
            return x
        return F.dropout(x, self.p, training=self.training or self.always_on)

    def extra_repr(self) -> str:
        return f"p={self.p}, always_on={self.always_on}"


class _Layers:
    """The layer types and kernel shapes of one dimensionality."""

    def __init__(self, dim: int):
        if dim not in (2, 3):
            raise ValueError(f"dim: expected 2 or 3, got {dim}")
        self.dim = dim
        self.conv = nn.Conv3d if dim == 3 else nn.Conv2d
        self.norm = nn.BatchNorm3d if dim == 3 else nn.BatchNorm2d
        self.pool = (1, 2, 2) if dim == 3 else (2, 2)
        self.mode = "trilinear" if dim == 3 else "bilinear"

    def k(self, z: int, xy: int):
        """Kernel (z, xy, xy) in 3D, (xy, xy) in 2D, with 'same' padding."""
        if self.dim == 3:
            return (z, xy, xy), (z // 2, xy // 2, xy // 2)
        return (xy, xy), (xy // 2, xy // 2)


class ResidualBlock(nn.Module):
    """conv(1,3,3)-BN-ELU, then [conv(3,3,3)-BN-ELU-conv(3,3,3)] added back, BN, ELU."""

    def __init__(self, layers: _Layers, c_in: int, c_out: int):
        super().__init__()
        k133, p133 = layers.k(1, 3)
        k333, p333 = layers.k(3, 3)
        self.conv_in = layers.conv(c_in, c_out, k133, padding=p133, bias=False)
        self.norm_in = layers.norm(c_out)
        self.conv_a = layers.conv(c_out, c_out, k333, padding=p333, bias=False)
        self.norm_a = layers.norm(c_out)
        self.conv_b = layers.conv(c_out, c_out, k333, padding=p333, bias=False)
        self.norm_out = layers.norm(c_out)

    def forward(self, x):
        residual = F.elu(self.norm_in(self.conv_in(x)))
        x = self.conv_b(F.elu(self.norm_a(self.conv_a(residual))))
        return F.elu(self.norm_out(x + residual))


class UpAdd(nn.Module):
    """Upsample x(1,2,2), 1x1x1 conv to the skip's width, add the skip, BN + ELU."""

    def __init__(self, layers: _Layers, c_in: int, c_out: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=layers.pool, mode=layers.mode, align_corners=True)
        k, p = layers.k(1, 1)
        self.conv = layers.conv(c_in, c_out, k, padding=p, bias=True)
        self.norm = layers.norm(c_out)

    def forward(self, x, skip):
        return F.elu(self.norm(self.conv(self.up(x)) + skip))


class ResidualUNet(nn.Module):
    """Residual U-Net for 3D (anisotropic) or 2D input.

    Parameters
    ----------
    dim : {2, 3}
    in_channels, out_channels : int
    widths : sequence of int
        Channels per level; the first level is used twice (embedding and first
        residual block). ``len(widths) - 1`` poolings.
    output : {'sigmoid', 'none'}
        ``sigmoid`` for affinities and the CPSN's error probability, ``none`` for
        embeddings.
    foreground : bool
        Add a second head predicting a foreground probability (BBBC039). Then
        ``forward`` returns ``(out, fg)``.
    dropout : float
        Rate of the dropout before the last two layers (0 = off).
    kind : str
        What the output means: ``affinity``, ``embedding`` or ``cpsn`` (used by
        :func:`affcons_lib.method.complexity.count`).

    Input ``(N, C, D, H, W)`` (3D) or ``(N, C, H, W)`` (2D); H and W must be
    multiples of ``2 ** (len(widths) - 1)``; D (3D) is free. Output has the same
    spatial size.
    """

    def __init__(self, dim: int = 3, in_channels: int = 1, out_channels: int = 12,
                 widths: Sequence[int] = WIDTHS_3D, output: str = "sigmoid", foreground: bool = False,
                 dropout: float = 0.0, kind: str = "affinity"):
        super().__init__()
        if output not in ("sigmoid", "none"):
            raise ValueError(f"output: expected 'sigmoid' or 'none', got {output!r}")
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths: expected at least two positive widths, got {widths}")
        layers = _Layers(dim)
        self.dim, self.kind, self.output = dim, kind, output
        self.in_channels, self.out_channels, self.widths = in_channels, out_channels, widths
        self.n_pool = len(widths) - 1
        k155, p155 = layers.k(1, 5)
        k111, p111 = layers.k(1, 1)
        levels = (widths[0],) + widths
        self.embed_in = layers.conv(in_channels, widths[0], k155, padding=p155, bias=True)
        self.encoder = nn.ModuleList(ResidualBlock(layers, a, b) for a, b in zip(levels[:-1], levels[1:]))
        self.pool = nn.MaxPool3d(layers.pool) if dim == 3 else nn.MaxPool2d(layers.pool)
        rev = levels[::-1]  # 80, 64, 48, 36, 28, 28
        self.up = nn.ModuleList(UpAdd(layers, a, b) for a, b in zip(rev[:-2], rev[1:-1]))
        self.decoder = nn.ModuleList(ResidualBlock(layers, b, b) for b in rev[1:-1])
        self.drop_embed = McDropout(dropout)
        self.embed_out = layers.conv(widths[0], widths[0], k155, padding=p155, bias=True)
        self.drop_head = McDropout(dropout)
        self.head = layers.conv(widths[0], out_channels, k111, padding=p111, bias=True)
        self.fg_head = layers.conv(widths[0], 1, k111, padding=p111, bias=True) if foreground else None
        self._init_weights()
        # Channels-last weights: oneDNN's CPU convolutions (the backward above all) run
        # 1.2-1.5x faster in that layout, and the activations follow the weights
        # (benchmarks/bench_models.py prints the ratio). Values are unchanged up to
        # rounding; a state dict loads into either layout.
        self.to(memory_format=torch.channels_last_3d if dim == 3 else torch.channels_last)

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # --------------------------------------------------------------- checks
    @property
    def divisor(self) -> int:
        return 2 ** self.n_pool

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the valid sizes if ``x`` does not fit."""
        want = self.dim + 2
        if x.ndim != want:
            axes = "(N, C, D, H, W)" if self.dim == 3 else "(N, C, H, W)"
            raise ValueError(f"input: expected a {want}D tensor {axes}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"input: expected {self.in_channels} channels, got {x.shape[1]}")
        for name, n in zip(("H", "W"), x.shape[-2:]):
            if n % self.divisor or n == 0:
                lo = (n // self.divisor) * self.divisor
                near = [s for s in (lo, lo + self.divisor) if s > 0]
                raise ValueError(
                    f"input {name}={n} cannot be pooled {self.n_pool} times by 2: H and W must be multiples "
                    f"of {self.divisor} (nearest valid: {', '.join(map(str, near))})"
                )

    # --------------------------------------------------------------- dropout
    def set_dropout(self, p: float | None = None, *, max_rate: float = 0.1, always_on: bool = True,
                    generator: torch.Generator | None = None) -> float:
        """Set the dropout rate of the last two layers; ``p=None`` draws it
        uniformly from [0, max_rate]. Returns the rate. ``always_on`` keeps it
        active in eval mode."""
        if p is None:
            p = float(torch.rand((), generator=generator)) * max_rate
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout rate: expected a value in [0, 1), got {p}")
        for m in (self.drop_embed, self.drop_head):
            m.p, m.always_on = float(p), bool(always_on)
        return float(p)

    # --------------------------------------------------------------- forward
    def forward(self, x):
        self.check_input(x)
        x = F.elu(self.embed_in(x))
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < self.n_pool:
                skips.append(x)
                x = self.pool(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = block(up(x, skip))
        x = F.elu(self.embed_out(self.drop_embed(x)))
        x = self.drop_head(x)
        out = self.head(x)
        if self.output == "sigmoid":
            out = torch.sigmoid(out)
        if self.fg_head is not None:
            return out, torch.sigmoid(self.fg_head(x))
        return out


def valid_sizes(model: ResidualUNet, upto: int = 256) -> list[int]:
    """In-plane sizes (H or W) up to ``upto`` that ``model`` accepts."""
    return list(range(model.divisor, upto + 1, model.divisor))


MODEL_NAMES = ("affinity3d", "embedding3d", "affinity2d", "embedding2d", "cpsn3d", "cpsn2d")


def build(name: str, **overrides) -> ResidualUNet:
    """Build one of the paper's networks by name.

    ============  =======================================================
    affinity3d    f(θ1), 3D: 1 -> 12 affinities (sigmoid)
    embedding3d   f(θ2), 3D: 1 -> 16-d embedding
    affinity2d    f(θ1), 2D: 1 -> 10 affinities (sigmoid)
    embedding2d   f(θ2), 2D: 1 -> 16-d embedding
    cpsn3d        CPSN, 3D: image ⊕ affinity ⊕ entropy (3) -> error probability
    cpsn2d        CPSN, 2D: likewise
    ============  =======================================================

    Keyword overrides go to :class:`ResidualUNet` (e.g. ``widths=(8, 16, 32)`` for a
    small CPU-sized network, ``in_channels=3`` for RGB, ``foreground=True``).
    """
    presets = {
        "affinity3d": dict(dim=3, in_channels=1, out_channels=12, widths=WIDTHS_3D, output="sigmoid", kind="affinity"),
        "embedding3d": dict(dim=3, in_channels=1, out_channels=16, widths=WIDTHS_3D, output="none", kind="embedding"),
        "affinity2d": dict(dim=2, in_channels=1, out_channels=10, widths=WIDTHS_2D, output="sigmoid", kind="affinity"),
        "embedding2d": dict(dim=2, in_channels=1, out_channels=16, widths=WIDTHS_2D, output="none", kind="embedding"),
        "cpsn3d": dict(dim=3, in_channels=3, out_channels=1, widths=WIDTHS_3D, output="sigmoid", kind="cpsn"),
        "cpsn2d": dict(dim=2, in_channels=3, out_channels=1, widths=WIDTHS_2D, output="sigmoid", kind="cpsn"),
    }
    if name not in presets:
        raise ValueError(f"unknown network {name!r}; expected one of {', '.join(MODEL_NAMES)}")
    unknown = set(overrides) - set(ResidualUNet.__init__.__code__.co_varnames[1:ResidualUNet.__init__.__code__.co_argcount])
    if unknown:
        raise TypeError(f"build({name!r}): unknown option(s) {sorted(unknown)}")
    return ResidualUNet(**{**presets[name], **overrides})


def n_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)




def resolve_precision(precision: str, device) -> str:
    """``precision`` ("auto", "bf16" or "fp32") as the one to run on ``device``.

    "auto" is bf16 where the device computes bfloat16 natively (a CPU with AVX512-BF16
    or AMX whose kernels are not held below them, :func:`cpu_kernels`; a CUDA GPU that
    supports it) and fp32 elsewhere, where autocast would only emulate bf16 and run slower. On this project's CPUs bf16 made a small-scale crac
    step 1.5x faster and reached the fp32 runs' scores within +-0.006 over 10 paired
    runs (the book, notebooks/book/time_to_claim.md)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision: expected 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    if dev.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_kernels()["native_bf16"] else "fp32"


#: oneDNN's instruction sets below AVX512-BF16 (``ONEDNN_MAX_CPU_ISA``): capped there,
#: its convolutions have no native bfloat16
_ONEDNN_BELOW_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")

#: the settings with which a run holds the libraries' kernels below what the CPU has
#: (``make reproduce-avx2``: this CPU as one without AVX-512 runs)
KERNEL_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "NPY_DISABLE_CPU_FEATURES", "NUMBA_CPU_NAME")


def cpu_kernels() -> dict:
    """What the CPU kernels of this process may use: torch's vector instruction set
    (``"AVX512"``, ``"AVX2"``, ...), whether bfloat16 is native (AVX512-BF16 or AMX
    in the CPU, and neither torch's kernels nor oneDNN's held below them) and the
    settings in force that hold kernels below what the CPU has (:data:`KERNEL_CAPS`)."""
    import os

    capability = torch.backends.cpu.get_cpu_capability()
    in_cpu = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
        getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    # off x86 torch names no AVX512 capability, and the CPU has neither check's bf16 anyway
    held = onednn in _ONEDNN_BELOW_BF16 or not capability.startswith("AVX512")
    return {"capability": capability, "native_bf16": bool(in_cpu and not held),
            "caps": {k: os.environ[k] for k in KERNEL_CAPS if os.environ.get(k)}}


def autocast(precision: str, device) -> torch.autocast:
    """The context in which the networks run at ``precision`` ("fp32" or "bf16").

    bf16 runs the convolutions (and whatever autocast lowers with them) in bfloat16
    on the CPU or a CUDA device; callers cast the network's output back to float32
    (``.float()``) so that losses, entropy and the cosine affinities are computed as
    in fp32 runs. "fp32" gives a disabled context: the same code path either way.
    """
    precision = resolve_precision(precision, device)
    device_type = torch.device(device).type
    return torch.autocast(device_type if device_type in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16,
                          enabled=precision == "bf16")
