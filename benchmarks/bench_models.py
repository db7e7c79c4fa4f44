"""f(θ2) forward+backward on one 1x1x18x160x160 patch, against a single large conv3d.

    python benchmarks/bench_models.py [--device cuda] [--repeat 3]

Prints the time of one forward+backward pass of f(θ2), the GMAC/s it achieves
(forward MACs from affcons_lib.method.complexity, backward counted as twice the forward,
the usual rule), and the GMAC/s of one large torch.nn.functional.conv3d
forward+backward on the same device in the same run. The ratio says how much of the
machine's convolution throughput the whole network reaches.

Then the small scale's f(θ2) (widths 8-16-32, a batch of 2 x 8x64x64) one
forward+backward in the layout the networks use (channels-last weights) against the
same network in the plain contiguous layout, and their ratio; and the cosine
affinities on its output, forward+backward, the library's against plain autograd;
on the CPU, the cosine forward's two ways (channel by channel, one product per
offset) at four sizes, from the training patch to a prediction tile.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from affcons_lib.method import affinity, complexity, models


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat):
    fn()  # warm-up (allocations, cuDNN autotuning)
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=[18, 160, 160])
    args = ap.parse_args()
    from affcons_lib.companion.provenance import print_header

    print_header("benchmarks/bench_models.py", torch.get_num_threads())
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    shape = (1, 1, *args.shape)

    net = models.build("embedding3d").to(device).train()
    macs = complexity.count(models.build("embedding3d"), shape, offsets=affinity.OFFSETS_3D)["macs"]
    x = torch.randn(shape, device=device)

    def step():
        net.zero_grad(set_to_none=True)
        emb = net(x)
        affinity.affinities_from_embeddings(emb, affinity.OFFSETS_3D).mean().backward()

    t_net = timed(step, device, args.repeat)
    net_rate = 3 * macs / t_net / 1e9

    c = 64
    a = torch.randn(1, c, *args.shape, device=device, requires_grad=True)
    w = torch.randn(c, c, 3, 3, 3, device=device, requires_grad=True)
    conv_macs = c * c * 27 * a[0, 0].numel()

    def conv_step():
        a.grad = w.grad = None
        F.conv3d(a, w, padding=1).sum().backward()

    t_conv = timed(conv_step, device, args.repeat)
    conv_rate = 3 * conv_macs / t_conv / 1e9

    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else torch.get_num_threads()} "
          f"{'' if device.type == 'cuda' else 'threads'})")
    print(f"f(θ2) forward+backward on {shape}: {t_net:.3f} s, {3 * macs / 1e9:.1f} GMAC -> {net_rate:.1f} GMAC/s")
    print(f"one conv3d {c}->{c} 3x3x3 forward+backward on {tuple(a.shape)}: {t_conv:.3f} s, "
          f"{3 * conv_macs / 1e9:.1f} GMAC -> {conv_rate:.1f} GMAC/s")
    print(f"ratio network/conv3d throughput: {net_rate / conv_rate:.2f}")

    # the layout: models.ResidualUNet keeps its weights channels-last; the same
    # network, the same weights, in the contiguous layout for comparison
    small = models.build("embedding3d", widths=(8, 16, 32)).to(device).train()
    xs = torch.randn(2, 1, 8, 64, 64, device=device)

    def small_step():
        small.zero_grad(set_to_none=True)
        small(xs).mean().backward()

    t_last = timed(small_step, device, 3 * args.repeat)
    small.to(memory_format=torch.contiguous_format)
    t_plain = timed(small_step, device, 3 * args.repeat)
    print(f"small f(θ2) forward+backward on {tuple(xs.shape)}: channels-last {t_last:.3f} s, "
          f"contiguous {t_plain:.3f} s, ratio contiguous/channels-last {t_plain / t_last:.2f}")

    # the cosine affinities of f(θ2) on the small network's output: the library's
    # (one gradient for all offsets, norm as a sum of squares) against plain autograd
    # of the same formula (F.normalize, then a slice product per offset)
    emb = small(xs).detach().requires_grad_(True)
    weights = torch.rand(2, len(affinity.OFFSETS_3D), *xs.shape[2:], device=device)

    def plain_cosine():
        e = F.normalize(emb, p=2, dim=1, eps=1e-6)
        shape, every = tuple(e.shape[2:]), (slice(None), slice(None))
        out = e.new_zeros((e.shape[0], len(affinity.OFFSETS_3D)) + shape)
        for c, o in enumerate(affinity.OFFSETS_3D):
            at_v, at_nb = affinity.edge_slices(o, shape)
            out[(slice(None), c) + at_v] = (e[every + at_v] * e[every + at_nb]).sum(1).clamp(0.0, 1.0)
        return out

    def cosine_step(fn):
        emb.grad = None
        (fn() * weights).sum().backward()

    t_lib = timed(lambda: cosine_step(lambda: affinity.affinities_from_embeddings(emb, affinity.OFFSETS_3D)),
                  device, 3 * args.repeat)
    t_autograd = timed(lambda: cosine_step(plain_cosine), device, 3 * args.repeat)
    print(f"cosine affinities forward+backward on {tuple(emb.shape)}: library {t_lib:.3f} s, "
          f"plain autograd {t_autograd:.3f} s, ratio plain/library {t_autograd / t_lib:.2f}")

    # the cosine forward on the CPU, channel by channel into the output against one
    # product and sum per offset, on channels-last embeddings as the networks give
    # them: the training patch, sizes near the switch (affinity._BY_CHANNEL_FROM) and
    # a prediction tile of the test part
    if device.type == "cpu":
        switch = affinity._BY_CHANNEL_FROM
        for size in ((2, 16, 8, 64, 64), (1, 16, 16, 64, 64), (1, 16, 16, 96, 96), (1, 16, 16, 256, 256)):
            e = torch.randn(size).contiguous(memory_format=torch.channels_last_3d)
            times = {}
            for name, threshold in (("by channel", 0), ("one product", 2 ** 62)):
                affinity._BY_CHANNEL_FROM = threshold
                with torch.no_grad():
                    times[name] = timed(lambda: affinity.affinities_from_embeddings(e, affinity.OFFSETS_3D), device,
                                        3 * args.repeat)
            affinity._BY_CHANNEL_FROM = switch
            n = size[0] * size[2] * size[3] * size[4]
            print(f"cosine forward on {size} ({n} voxels, by channel from {switch}): by channel "
                  f"{times['by channel']:.4f} s, one product {times['one product']:.4f} s, "
                  f"ratio one product/by channel {times['one product'] / times['by channel']:.2f}")


if __name__ == "__main__":
    main()
