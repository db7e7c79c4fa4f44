import pytest
import torch

from affcons_lib.method import affinity, complexity, models


@pytest.mark.parametrize(
    "name, in_shape, out_channels",
    [
        ("affinity3d", (1, 1, 4, 16, 16), 12),
        ("affinity3d", (2, 1, 3, 32, 48), 12),
        ("embedding3d", (1, 1, 5, 16, 32), 16),
        ("affinity2d", (2, 1, 16, 16), 10),
        ("embedding2d", (1, 1, 32, 48), 16),
        ("cpsn3d", (1, 3, 2, 16, 16), 1),
        ("cpsn2d", (1, 3, 48, 16), 1),
    ],
)
def test_shapes(name, in_shape, out_channels):
    net = models.build(name).eval()
    with torch.no_grad():
        out = net(torch.randn(in_shape))
    assert out.shape == (in_shape[0], out_channels) + in_shape[2:]
    if name.startswith(("affinity", "cpsn")):
        assert out.min() >= 0 and out.max() <= 1  # sigmoid
    else:
        assert out.min() < 0  # raw embeddings


def test_parameter_counts_match_paper():
    assert models.n_parameters(models.build("affinity3d")) == 1_477_920
    assert models.n_parameters(models.build("embedding3d")) == 1_478_036


def test_complexity_table_2():
    f1 = complexity.count(models.build("affinity3d"), (1, 1, 18, 160, 160))
    f2 = complexity.count(models.build("embedding3d"), (1, 1, 18, 160, 160), offsets=affinity.OFFSETS_3D)
    assert f1["params"] == 1_477_920 and f2["params"] == 1_478_036
    assert f1["macs"] / 1e9 == pytest.approx(87.29, rel=0.01)
    assert f2["macs"] / 1e9 == pytest.approx(87.47, rel=0.01)
    assert f2["macs"] > f1["macs"]  # the paper's sign: similarity learning costs more


def test_complexity_counts_more_than_convolutions_and_scales_with_input():
    net = models.build("affinity3d", widths=(4, 8))
    by_op = complexity.macs_by_operation(net, (1, 1, 2, 16, 16))
    assert {"convolution", "batch_norm", "elu", "sigmoid"} <= set(by_op)
    small = complexity.count(net, (1, 1, 2, 16, 16))["macs"]
    assert complexity.count(net, (2, 1, 2, 16, 16))["macs"] == 2 * small
    assert complexity.conv_only_macs(net, (1, 1, 2, 16, 16)) < small
    # hand count of the first conv (1 -> 4, kernel 1x5x5, with bias): 2*16*16 outputs x 4 channels x (25 + 1)
    conv = torch.nn.Conv3d(1, 4, (1, 5, 5), padding=(0, 2, 2))
    wrapper = torch.nn.Sequential(conv)
    wrapper.dim = 3
    assert complexity.count(wrapper, (1, 1, 2, 16, 16))["macs"] == 2 * 16 * 16 * 4 * 26


def test_similarity_counted_only_with_offsets():
    net = models.build("embedding2d", widths=(4, 8))
    plain = complexity.count(net, (1, 1, 16, 16))["macs"]
    with_sim = complexity.count(net, (1, 1, 16, 16), offsets=affinity.OFFSETS_2D)["macs"]
    assert with_sim - plain == 16 * 16 * 16 * (10 + 2)


def test_dropout_active_only_when_asked():
    torch.manual_seed(0)
    net = models.build("cpsn3d", widths=(4, 8)).eval()
    x = torch.randn(1, 3, 2, 16, 16)
    with torch.no_grad():
        a, b = net(x), net(x)
        assert torch.equal(a, b)  # no dropout by default
        p = net.set_dropout(0.3, always_on=True)
        assert p == 0.3
        c, d = net(x), net(x)
        assert not torch.equal(c, d)  # stays active in eval mode
        net.set_dropout(0.3, always_on=False)
        assert torch.equal(net(x), net(x))  # off again in eval mode
    net.train()
    assert not torch.equal(net(x), net(x))  # on in training mode
    g = torch.Generator().manual_seed(1)
    rates = [net.set_dropout(None, max_rate=0.1, generator=g) for _ in range(20)]
    assert all(0 <= r <= 0.1 for r in rates) and len(set(rates)) > 1
    with pytest.raises(ValueError, match="dropout rate"):
        net.set_dropout(1.5)


def test_foreground_head():
    net = models.build("embedding2d", widths=(4, 8), foreground=True).eval()
    emb, fg = net(torch.randn(1, 1, 16, 16))
    assert emb.shape == (1, 16, 16, 16) and fg.shape == (1, 1, 16, 16)
    assert 0 <= fg.min() and fg.max() <= 1


@pytest.mark.parametrize(
    "name, shape, match",
    [
        ("affinity3d", (1, 1, 18, 150, 160), r"H=150 .* multiples of 16 \(nearest valid: 144, 160\)"),
        ("affinity2d", (1, 1, 64, 40), r"W=40 .* multiples of 16 \(nearest valid: 32, 48\)"),
        ("affinity3d", (1, 1, 16, 16), r"expected a 5D tensor \(N, C, D, H, W\)"),
        ("cpsn3d", (1, 1, 2, 16, 16), "expected 3 channels"),
    ],
)
def test_invalid_sizes(name, shape, match):
    net = models.build(name)
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))


def test_build_errors():
    with pytest.raises(ValueError, match="unknown network 'unet'"):
        models.build("unet")
    with pytest.raises(TypeError, match="unknown option"):
        models.build("affinity3d", width=3)
    assert models.valid_sizes(models.build("affinity3d"), 64) == [16, 32, 48, 64]


def test_activation_bytes_grows_linearly():
    net = models.build("affinity3d", widths=(4, 8))
    a = complexity.activation_bytes(net, (1, 1, 2, 16, 16))
    b = complexity.activation_bytes(net, (1, 1, 4, 16, 16))
    assert a > 4 * 2 * 16 * 16
    assert 1.9 * a < b <= 2 * a  # per-voxel tensors double; per-channel statistics do not


def test_kernels_held_to_avx2_run_fp32_and_say_so():
    """make reproduce-avx2's settings: torch and oneDNN held to AVX2 in a fresh process
    (torch reads them at start) give no native bf16, so "auto" runs fp32, and the
    provenance of its records names the settings."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json; from affcons_lib.method import models; from affcons_lib.companion import provenance as p; "
            "r = p.provenance(1); print(json.dumps([models.resolve_precision('auto', 'cpu'), r, p.provenance_line(r), "
            "p.kind_of_cpu(r)]))")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    precision, record, line, kind = json.loads(out.stdout)
    assert precision == "fp32" and record["native_bf16"] is False and record["kernels"] == "AVX2"
    assert record["kernel_caps"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert "AVX2 kernels (held below the CPU's)" in line and "as without AVX-512" in kind
    here = models.cpu_kernels()  # this process: nothing held unless the environment says so
    assert set(here) == {"capability", "native_bf16", "caps"}
    assert here["native_bf16"] == (models.resolve_precision("auto", "cpu") == "bf16")
