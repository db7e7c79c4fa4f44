import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from affcons_lib.method import affinity, losses, models
from affcons_lib import cli
from affcons_lib.evaluation import metrics
from affcons_lib.training import train
from affcons_lib.training.inference import default_stride, predict_affinities, tile_starts
from affcons_lib.training.checkpoint import load_checkpoint
from affcons_lib.training.config import load_config
from affcons_lib.training.sampling import PatchSampler, prepare_data

TINY = ["widths=4,8", "patch=4,32,32", "batch=1", "dataset=synthetic", "progress=false", "log_every=1"]


# ----------------------------------------------------------------------- losses
def test_weighted_mse_ignores_unlabeled_pixels():
    torch.manual_seed(0)
    pred = torch.rand(2, 3, 4, 8, 8)
    target = (torch.rand(2, 3, 4, 8, 8) > 0.3).float()
    mask = torch.rand(2, 3, 4, 8, 8) > 0.5
    a = losses.weighted_mse(pred, target, mask, n_nearest=1)
    changed = pred.clone()
    changed[~mask] = torch.rand(int((~mask).sum()))
    target2 = target.clone()
    target2[~mask] = 1 - target2[~mask]
    assert losses.weighted_mse(changed, target2, mask, n_nearest=1) == pytest.approx(a.item(), rel=1e-6)
    assert losses.weighted_mse(target, target, mask, n_nearest=1) == 0


def test_balance_and_channel_weights():
    target = torch.ones(1, 1, 10)
    target[0, 0, :2] = 0  # 20 % boundary: minority class weighted 0.8 / 0.2 = 4
    w = losses.balance_weights(target, torch.ones_like(target, dtype=torch.bool))
    assert w[0, 0, 0] == pytest.approx(4.0) and w[0, 0, 5] == pytest.approx(1.0)
    cw = losses.channel_weights(5, 2, 10.0)
    assert cw.tolist() == [10, 10, 1, 1, 1]
    # the nearest-neighbour channel counts 10 times as much
    pred = torch.zeros(1, 2, 4)
    tgt = torch.ones(1, 2, 4)
    m = torch.zeros(1, 2, 4, dtype=torch.bool)
    m[0, 0] = True
    near = losses.weighted_mse(pred, tgt, m, n_nearest=1, balance=False)
    m2 = torch.zeros_like(m)
    m2[0, 1] = True
    assert near == pytest.approx(10 * losses.weighted_mse(pred, tgt, m2, n_nearest=1, balance=False))


def test_alpha_schedule_and_confident_mask():
    assert losses.alpha_schedule(0, 100) == pytest.approx(0.005)
    assert losses.alpha_schedule(100, 100) == 0
    assert losses.alpha_schedule(50, 100) == pytest.approx(0.005 * 0.5 ** 1.5)
    h = torch.arange(100, dtype=torch.float32).view(1, 1, 100)
    region = torch.ones_like(h, dtype=torch.bool)
    keep = losses.confident_mask(h, region, 0.1)
    assert keep.sum() == 90 and not keep[0, 0, -1] and keep[0, 0, 0]
    assert losses.confident_mask(h, region, 0.0).all()


@pytest.mark.parametrize("alpha", [0.005, 0.3, 0.9])
def test_confident_mask_all_channels_at_once_equals_the_channel_loop(alpha):
    """The single-process path (one topk for all channels) gives exactly the mask
    of upper_quantile channel by channel: regions of every size, an empty one
    and a one-value one included, and many tied entropies."""
    g = torch.Generator().manual_seed(1)
    h = torch.rand(2, 6, 4, 9, 9, generator=g)
    h[:, 1] = (h[:, 1] * 20).floor() / 20  # many ties
    region = torch.rand(h.shape, generator=g) < torch.tensor([0.9, 0.5, 0.05, 0.0, 0.0, 1.0]).view(1, 6, 1, 1, 1)
    region[0, 4, 0, 0, 0] = True  # one value
    want = region.clone()
    for c in range(h.shape[1]):
        values = h[:, c][region[:, c]]
        if values.numel():
            want[:, c] &= h[:, c] <= losses.upper_quantile(values, 1.0 - alpha)
    got = losses.confident_mask(h, region, alpha)
    assert torch.equal(got, want)
    assert not got[:, 3].any() and got[0, 4, 0, 0, 0] and got.sum() < region.sum()


def test_upper_quantile_is_torch_quantile():
    # by hand: 0..9, q=0.95 -> position 8.55 -> 8 + 0.55 * (9 - 8)
    assert losses.upper_quantile(torch.arange(10.0), 0.95).item() == pytest.approx(8.55)
    assert losses.upper_quantile(torch.tensor([3.0]), 0.995).item() == 3.0
    g = torch.Generator().manual_seed(0)
    for n in (2, 5, 1000, 70000):
        for q in (0.0, 0.5, 0.995, 1.0):
            v = torch.rand(n, generator=g)
            ties = (v * 4).floor()  # many equal values
            for x in (v, ties):
                assert losses.upper_quantile(x, q).item() == pytest.approx(torch.quantile(x, q).item(), abs=1e-6)
    with pytest.raises(ValueError, match="q=1.5"):
        losses.upper_quantile(torch.arange(3.0), 1.5)


def test_raw_cosine_is_scored_below_zero():
    """One nearest-neighbour edge (weight 10): f(θ1) says 1, f(θ2)'s cosine is -0.5.
    f(θ1) learns from the clipped affinity 0 either way: 10 * (1 - 0)^2. f(θ2) is
    scored clipped, 10 * (0 - 1)^2 with no gradient through the clamp, or raw (the
    release), 10 * (-0.5 - 1)^2 with a gradient that raises the cosine."""
    cos = torch.full((1, 1, 1, 1), -0.5, requires_grad=True)
    a1 = torch.ones(1, 1, 1, 1)
    unl = torch.ones(1, 1, 1, 1, dtype=torch.bool)
    for pred2, want in ((None, 10.0 + 10.0), (cos, 22.5 + 10.0)):
        cos.grad = None
        loss, _ = losses.cross_consistency_loss(a1, cos.clamp_min(0), unl, alpha=0.0, n_nearest=1, pred2=pred2)
        loss.backward()
        assert loss.item() == pytest.approx(want)
        assert (cos.grad.item() < 0) == (pred2 is not None)  # descent raises the cosine only when raw


def test_cross_consistency_detach_option():
    torch.manual_seed(0)
    a1 = torch.rand(1, 3, 2, 8, 8, requires_grad=True)
    a2 = torch.rand(1, 3, 2, 8, 8, requires_grad=True)
    unl = torch.ones(1, 3, 2, 8, 8, dtype=torch.bool)
    loss, info = losses.cross_consistency_loss(a1, a2, unl, alpha=0.0, n_nearest=1)
    loss.backward()
    g_detached = a1.grad.clone()
    a1.grad = a2.grad = None
    loss_r, _ = losses.cross_consistency_loss(a1, a2, unl, alpha=0.0, n_nearest=1, detach_targets=False)
    loss_r.backward()
    assert loss_r.item() == pytest.approx(loss.item())
    assert not torch.allclose(a1.grad, g_detached)  # release: gradients through the targets too
    assert info["confident1"] == 1.0
    same, _ = losses.cross_consistency_loss(a1.detach(), a1.detach(), unl, alpha=0.0, n_nearest=1)
    assert same == 0


# ----------------------------------------------------------------------- config
def test_config_yaml_and_typed_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("method: sparse_only\npatch: [8, 64, 64]\niterations: 7\n")
    cfg = load_config(p, ["lr=0.001", "detach_targets=false", "widths=8,16,32", "voxel_budget=none"])
    assert cfg.method == "sparse_only" and cfg.patch == (8, 64, 64) and cfg.iterations == 7
    assert cfg.lr == 0.001 and cfg.detach_targets is False and cfg.widths == (8, 16, 32)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["learning_rate=1"], "unknown config key"),
        (["sparsity=-0.5"], "config.sparsity=-0.5"),
        (["patch=8,62,62"], "multiples of 4"),
        (["method=magic"], "config.method"),
        (["iterations=ten"], "expected int"),
        (["detach_targets=maybe"], "expected true or false"),
        (["cosine=cos"], "config.cosine"),
        (["precision=fp16"], "config.precision"),
        (["lr_schedule=step"], "config.lr_schedule"),
        (["warmup=300", "iterations=200"], "config.warmup"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_learning_rate_schedules():
    const = load_config(None, ["iterations=100", "lr=0.01"])
    assert [const.learning_rate(t) for t in (1, 50, 100)] == [0.01, 0.01, 0.01]
    cos = load_config(None, ["iterations=100", "lr=0.01", "lr_schedule=cosine", "warmup=0.1"])
    assert cos.warmup_iterations() == 10
    # linear warm-up to lr at iteration 10, then half a cosine down to 0 at the last iteration
    assert cos.learning_rate(1) == pytest.approx(0.001) and cos.learning_rate(10) == pytest.approx(0.01)
    assert cos.learning_rate(55) == pytest.approx(0.005) and cos.learning_rate(100) == pytest.approx(0.0, abs=1e-12)
    lrs = [cos.learning_rate(t) for t in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert load_config(None, ["iterations=100", "warmup=25"]).warmup_iterations() == 25


def test_autocast_runs_the_networks_in_bf16_and_fp32_unchanged():
    torch.manual_seed(0)
    net = models.build("embedding3d", widths=(4, 8)).eval()
    x = torch.rand(1, 1, 4, 16, 16)
    with torch.no_grad():
        plain = net(x)
        with models.autocast("fp32", "cpu"):
            same = net(x)
        with models.autocast("bf16", "cpu"):
            low = net(x)
    assert same.dtype == torch.float32 and torch.equal(same, plain)
    assert low.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: close to fp32, not equal to it
    assert 0 < (low.float() - plain).abs().max() < 0.1 * plain.abs().max()
    with pytest.raises(ValueError, match="precision"):
        models.autocast("fp16", "cpu")
    # auto: bf16 exactly where the CPU computes it natively
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert models.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert models.resolve_precision("fp32", "cpu") == "fp32" and models.resolve_precision("bf16", "cpu") == "bf16"


def test_bf16_training_learns_and_logs_float32_losses(tmp_path):
    base = TINY + ["method=crac", "iterations=4", "lr_schedule=cosine", "warmup=1"]
    summaries = {}
    for precision in ("fp32", "bf16"):
        cfg = load_config(None, base + [f"precision={precision}", f"out_dir={tmp_path / precision}"])
        summaries[precision] = train.train(cfg)
        nets, cfg2, _ = load_checkpoint(tmp_path / precision / "last.pt")
        assert cfg2.precision == precision and summaries[precision]["precision"] == precision
        assert all(p.dtype == torch.float32 for n in nets.values() for p in n.parameters())  # weights stay fp32
    a, b = summaries["fp32"]["last_losses"], summaries["bf16"]["last_losses"]
    assert np.isfinite(b["total"]) and b["total"] != a["total"]  # other arithmetic, same run otherwise
    assert b["total"] == pytest.approx(a["total"], rel=0.2)


def test_unknown_key_in_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("iterashuns: 3\n")
    with pytest.raises(ValueError, match="iterashuns"):
        load_config(p)


def test_patch_larger_than_volume_fails_at_once(tmp_path):
    cfg = load_config(None, TINY + ["patch=4,512,512", f"out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="larger than the training data"):
        train.train(cfg)


# ----------------------------------------------------------------------- sampler
def test_sampler_never_yields_empty_patches():
    from affcons_lib.data import annotate_instances, make_em_volume

    raw, dense = make_em_volume((8, 64, 64), n_neurites=20, seed=0)
    sparse = annotate_instances(dense, "random", fraction=0.1, seed=0)
    s = PatchSampler(raw, sparse, affinity.OFFSETS_3D, patch=(4, 32, 32), sparse=True,
                           background_is_instance=False, widen=True, n_nearest=3, min_labeled=0.05)
    rng = np.random.default_rng(0)
    for _ in range(20):
        r, target, mask, valid = s.sample_one(rng)
        assert mask.mean() >= 0.05 and (mask <= valid).all()
        assert r.shape == (4, 32, 32) and target.shape == (12, 4, 32, 32)
    s.min_labeled, s.max_tries = 0.99, 5
    with pytest.raises(RuntimeError, match="annotate more instances"):
        s.sample_one(rng)


# --------------------------------------------------------------------- inference
def test_tile_starts_cover():
    assert tile_starts(10, 4, 3) == [0, 3, 6]
    assert tile_starts(4, 8, 2) == [0]


def test_default_tile_covers_a_plane_in_one_tile_when_asked():
    """A 250-wide plane and a divisor of 4: rounding down gives tiles of 248, two of
    them overlapping almost entirely; ``cover`` rounds up to one tile of 252 (the
    input is padded), but never beyond ``max_inplane``."""
    from affcons_lib.training.inference import default_tile, part_tiling

    assert default_tile((50, 250, 250), (8, 64, 64), 4) == (16, 248, 248)
    assert default_tile((50, 250, 250), (8, 64, 64), 4, cover=True) == (16, 252, 252)
    assert default_tile((50, 248, 1250), (8, 64, 64), 4, cover=True) == (16, 248, 256)
    assert default_tile((250, 250), (128, 128), 8, cover=True) == (256, 256)
    tile = default_tile((50, 250, 250), (8, 64, 64), 4, cover=True)
    assert [len(tile_starts(n, t, s)) for n, t, s in zip((50, 250, 250), tile, default_stride(tile))] == [4, 1, 1]
    assert part_tiling((50, 250, 250), (8, 64, 64), 4) == (tile, default_stride(tile))


def test_small_tiles_go_in_pairs_with_the_same_values(monkeypatch):
    """PyTorch convolves a lone small 3D tile with its slow reference kernel;
    predict_region then sends tiles in pairs (the last, odd one with a copy of
    itself). The affinities must be those of one tile at a time."""
    from affcons_lib.training import inference

    torch.manual_seed(0)
    net = models.build("embedding3d", widths=(4, 8)).eval()
    assert inference._lone_tile_is_slow(net, (8, 32, 32), torch.device("cpu"))
    raw = np.random.default_rng(0).random((20, 32, 32)).astype(np.float32)  # 3 tiles in z: a pair and a lone one
    paired = inference.predict_affinities(net, raw, affinity.OFFSETS_3D, tile=(8, 32, 32), stride=(6, 32, 32),
                                          with_entropy=False)
    monkeypatch.setattr(inference, "_lone_tile_is_slow", lambda *a: False)
    alone = inference.predict_affinities(net, raw, affinity.OFFSETS_3D, tile=(8, 32, 32), stride=(6, 32, 32),
                                         with_entropy=False)
    np.testing.assert_allclose(paired, alone, atol=1e-4)  # two kernels: equal up to rounding


def test_tiled_prediction_equals_whole_for_pointwise_model():
    """With a model that looks at one voxel at a time, tiles must reproduce the
    whole-image result exactly: this checks the blending and the border masks."""
    class PointwiseEmbedding(torch.nn.Module):
        kind, divisor = "embedding", 1

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 1)

        def forward(self, x):
            return self.conv(x)

    torch.manual_seed(0)
    net = PointwiseEmbedding()
    img = np.random.default_rng(0).random((40, 36)).astype(np.float32)
    whole = affinity.affinities_from_embeddings(net(torch.from_numpy(img)[None, None]), affinity.OFFSETS_2D)[0]
    whole = whole.detach().numpy()
    for stride in [(8, 8), None]:
        tiled, entropy = predict_affinities(net, img, affinity.OFFSETS_2D, tile=(16, 16), stride=stride)
        # the edges some tile contains whole, by brute force
        covered = np.zeros(tiled.shape, bool)
        st = stride or (16 - 9, 16 - 9)
        for y0 in tile_starts(40, 16, st[0]):
            for x0 in tile_starts(36, 16, st[1]):
                _, v = affinity.affinities_from_labels(np.zeros((16, 16), int), affinity.OFFSETS_2D)
                covered[:, y0:y0 + 16, x0:x0 + 16] |= v
        np.testing.assert_allclose(tiled[covered], whole[covered], atol=1e-5)
        assert (tiled[~covered] == 0).all() and entropy.shape == tiled.shape
    # the default stride covers every edge shorter than the tile
    _, valid = affinity.affinities_from_labels(np.zeros(img.shape, int), affinity.OFFSETS_2D)
    short = valid & np.array([max(map(abs, o)) < 16 for o in affinity.OFFSETS_2D])[:, None, None]
    assert covered[short].all()


# ------------------------------------------------------------------ train / resume
@pytest.mark.parametrize("method", ["sparse_only", "crac", "full_supervision", "crac cosine=raw"])
def test_train_runs_each_method(method, tmp_path):
    method, *extra = method.split()
    cfg = load_config(None, TINY + [f"method={method}", "iterations=3", f"out_dir={tmp_path}", *extra])
    summary = train.train(cfg)
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "losses.csv").is_file()
    nets, cfg2, ckpt = load_checkpoint(tmp_path / "last.pt")
    assert ckpt["iteration"] == 3 and cfg2.method == method
    assert ("affinity" in nets) == (method == "crac")
    assert np.isfinite(summary["last_losses"]["total"])
    assert not list(tmp_path.glob("*.part"))


def test_2d_training_and_evaluation(tmp_path):
    from affcons_lib.evaluation.evaluate import evaluate_2d
    from affcons_lib.training.predict import predict_part

    cfg = load_config(None, ["dim=2", "dataset=synthetic", "widths=4,8", "patch=32,32", "batch=1",
                                   "iterations=2", "progress=false", f"out_dir={tmp_path}", "sparsity=0.3"])
    train.train(cfg)
    (affs,), (ent,), (labels,), offsets = predict_part(tmp_path / "last.pt", "test")  # lists: one image
    assert affs.shape == (10,) + labels.shape
    np.testing.assert_allclose(ent, affinity.affinity_entropy(affs), atol=1e-6)
    (alone,), no_entropy, _, _ = predict_part(tmp_path / "last.pt", "test", with_entropy=False)
    assert no_entropy is None
    np.testing.assert_array_equal(alone, affs)
    scores = evaluate_2d(affs, labels, offsets)
    assert scores["aji"] == pytest.approx(metrics.aji(scores["segmentation"], labels))
    # the instrument sees: perfect 2D affinities score near 1, these two-iteration ones far lower
    perfect, _ = affinity.affinities_from_labels(labels, offsets, background_is_instance=True)
    assert evaluate_2d(perfect, labels, offsets)["aji"] > 0.9 > scores["aji"]


def _weights(path):
    ckpt = torch.load(path, weights_only=False)
    return {f"{n}.{k}": v for n, sd in ckpt["models"].items() for k, v in sd.items()}


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # log_every=3, checkpoint_every=2: some checkpoints fall inside a log window, so the
    # running loss sums must travel in the checkpoint for the next row to be right
    base = TINY + ["method=crac", "iterations=12", "checkpoint_every=2", "seed=3", "log_every=3"]
    cmd = [sys.executable, "-m", "affcons_lib", "train"]
    # uninterrupted reference
    ref_dir = tmp_path / "ref"
    subprocess.run(cmd + sum([["--set", s] for s in base + [f"out_dir={ref_dir}"]], []), check=True, env=env)
    # the same run, killed (SIGKILL) once a mid-way checkpoint exists, then resumed
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(cmd + sum([["--set", s] for s in base + [f"out_dir={run_dir}"]], []), env=env)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        last = run_dir / "last.pt"
        if last.is_file():
            try:
                it = torch.load(last, weights_only=False)["iteration"]
            except Exception:  # being replaced right now: try again
                it = 0
            if 4 <= it < 12:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = it
                break
        time.sleep(0.05)
    if killed_at is None:
        proc.kill()
        pytest.skip("the run finished before it could be killed mid-way (machine too fast)")
    subprocess.run(cmd + sum([["--set", s] for s in base + [f"out_dir={run_dir}", "resume=true"]], []),
                   check=True, env=env)
    a, b = _weights(ref_dir / "last.pt"), _weights(run_dir / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming from iteration {killed_at}"
    ref_log = (ref_dir / "losses.csv").read_text().splitlines()
    run_log = (run_dir / "losses.csv").read_text().splitlines()
    assert [r.split(",")[:-1] for r in ref_log] == [r.split(",")[:-1] for r in run_log]  # all but wall time


def test_cli_help_and_errors(tmp_path, capsys):
    for command in cli.COMMANDS:  # each command's help, in this process
        with pytest.raises(SystemExit) as done:
            cli.main([command, "--help"])
        assert done.value.code == 0 and f"usage: python -m affcons_lib {command}" in capsys.readouterr().out, command
    # from a shell: the package's entry
    out = subprocess.run([sys.executable, "-m", "affcons_lib", "evaluate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: python -m affcons_lib evaluate" in out.stdout
    out = subprocess.run([sys.executable, "-m", "affcons_lib", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "COMMAND one of train, cpsn" in out.stderr and "'nope'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "affcons_lib", "train", "--set", "sparsity=-1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "config.sparsity=-1" in out.stderr
    out = subprocess.run([sys.executable, "-m", "affcons_lib", "predict", str(tmp_path / "none.pt"), "--out",
                          str(tmp_path / "p.h5")], capture_output=True, text=True)
    assert out.returncode == 2 and "checkpoint not found" in out.stderr


def test_validation_log(tmp_path):
    cfg = load_config(None, TINY + ["iterations=2", "val_every=1", f"out_dir={tmp_path}", "method=sparse_only"])
    train.train(cfg)
    import pandas as pd

    val = pd.read_csv(tmp_path / "validation.csv")
    assert list(val.iteration) == [1, 2]
    # the last row is the score of the saved weights, recomputed here by another road: the
    # prediction command's predict_part, then evaluate_3d and affinity_scores themselves
    from affcons_lib.evaluation import evaluate
    from affcons_lib.training import predict

    prepared = prepare_data(cfg)
    (affs,), _, (labels,), offsets = predict.predict_part(tmp_path / "last.pt", "test", prepared=prepared,
                                                          with_entropy=False)
    seg = evaluate.evaluate_3d(affs, labels, offsets=offsets)
    level = evaluate.affinity_scores(affs, labels, offsets)
    assert val.val_voi.iloc[-1] == pytest.approx(seg["voi"], abs=1e-6)
    assert val.val_arand.iloc[-1] == pytest.approx(seg["arand"], abs=1e-6)
    assert val.val_affinity_error.iloc[-1] == pytest.approx(level["affinity_error"], abs=1e-9)
    assert val.val_boundary_ap.iloc[-1] == pytest.approx(level["boundary_ap"], abs=1e-9)
    # a learning curve: each row scores the weights of its own iteration, not the last ones
    assert val.val_boundary_ap.iloc[0] != val.val_boundary_ap.iloc[-1]
    assert 0 <= val.val_affinity_error.min() and val.val_boundary_ap.max() <= 1


def _write_bbbc039(root, n=4):
    import tifffile
    from PIL import Image

    from affcons_lib.data import make_nuclei_image

    for d in ("images", "masks", "metadata"):
        (root / d).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        raw, lab = make_nuclei_image((64, 80), n_nuclei=8, radius_range=(5, 10), seed=i)
        name = f"IXM_{i:02d}"
        tifffile.imwrite(root / "images" / f"{name}.tif", (raw * 4000).astype(np.uint16))
        rgb = np.zeros(lab.shape + (3,), np.uint8)  # touching nuclei in different colours
        rgb[..., 0] = (lab * 37) % 256
        rgb[..., 1] = (lab * 91) % 256
        rgb[..., 2] = np.where(lab > 0, 200, 0)
        Image.fromarray(rgb).save(root / "masks" / f"{name}.png")
        names.append(name)
    (root / "metadata" / "training.txt").write_text("\n".join(f"{n}.png" for n in names[:3]))
    (root / "metadata" / "test.txt").write_text(f"{names[3]}.png\n")


def _write_cvppp(root, n=3):
    from PIL import Image

    from affcons_lib.data import make_nuclei_image

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        raw, lab = make_nuclei_image((64, 64), n_nuclei=6, radius_range=(6, 12), seed=10 + i)
        rgb = np.stack([raw, raw * 0.8, 1 - raw], -1)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(root / f"plant{i:03d}_rgb.png")
        im = Image.fromarray(lab.astype(np.uint8), mode="P")
        im.putpalette(list(np.random.default_rng(0).integers(0, 255, 768)))
        im.save(root / f"plant{i:03d}_label.png")


@pytest.mark.parametrize("layout", ["bbbc039", "cvppp"])
def test_train_on_image_folders(layout, tmp_path):
    from affcons_lib.evaluation.evaluate import evaluate_2d_many
    from affcons_lib.training.predict import predict_part

    folder = tmp_path / layout
    (_write_bbbc039 if layout == "bbbc039" else _write_cvppp)(folder)
    out = tmp_path / "run"
    cfg = load_config(None, ["dim=2", f"dataset={folder}", "widths=4,8", "patch=32,32", "batch=2",
                                   "iterations=2", "progress=false", f"out_dir={out}", "sparsity=0.3",
                                   "method=crac", "min_labeled=0.0"])
    prepared = prepare_data(cfg)
    assert prepared.collection and len(prepared.raw_train) > 1 and len(prepared.raw_test) == 1
    assert prepared.in_channels == (3 if layout == "cvppp" else 1)
    train.train(cfg, prepared)
    nets, cfg2, _ = load_checkpoint(out / "last.pt")
    assert nets["embedding"].in_channels == prepared.in_channels
    affs, ent, labels, offsets = predict_part(out / "last.pt", "test", prepared=prepared)
    assert isinstance(affs, list) and affs[0].shape == (10,) + labels[0].shape
    scores = evaluate_2d_many(affs, labels, offsets)
    assert len(scores["per_image"]) == 1 and scores["aji"] == pytest.approx(scores["per_image"][0]["aji"])
    # the command lines handle image collections too
    pred = tmp_path / "pred.h5"
    r = subprocess.run([sys.executable, "-m", "affcons_lib", "predict", str(out / "last.pt"), "--out", str(pred)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "affcons_lib", "evaluate", str(pred)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["aji"] == pytest.approx(scores["aji"], abs=1e-6)


def test_not_an_image_folder(tmp_path):
    from affcons_lib.data import load_image_collection

    with pytest.raises(FileNotFoundError, match="neither a BBBC039 folder"):
        load_image_collection(tmp_path)


def test_rng_state_round_trip_and_old_checkpoints():
    """The random state travels as CPU tensors (a checkpoint mapped to a GPU
    must still restore: resuming on CUDA once crashed there), and checkpoints
    written before the GPU state was kept (a bare CPU tensor) still resume."""
    from affcons_lib.training import checkpoint

    torch.manual_seed(3)
    state = checkpoint.rng_state()
    first = torch.rand(3)
    checkpoint.restore_rng_state(state)
    assert torch.equal(torch.rand(3), first)
    checkpoint.restore_rng_state(state["cpu"].clone())  # the old format
    assert torch.equal(torch.rand(3), first)


def test_batches_from_worker_processes_equal_in_process_ones(tmp_path):
    cfg = load_config(None, TINY + ["batch=2"])
    prepared = prepare_data(cfg)
    sampler = PatchSampler(prepared.raw_train, prepared.sparse_train, prepared.offsets,
                                 patch=cfg.patch, sparse=True, background_is_instance=False, widen=True,
                                 n_nearest=prepared.n_nearest, min_labeled=0.0)
    here = list(sampler.batches(3, 5, 9, 0, 2, workers=0))
    there = list(sampler.batches(3, 5, 9, 0, 2, workers=2))
    assert len(here) == len(there) == 5
    for a, b in zip(here, there):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.equal(x, y) for x, y in zip(here[2], sampler.sample(3, 7, 0, 2)))  # iteration 7
    with pytest.raises(ValueError, match="workers"):
        next(sampler.batches(0, 1, 2, 0, 1, workers=-1))
    # a whole run with workers trains the same weights as one without
    for workers in (0, 2):
        train.train(load_config(None, TINY + ["method=crac", "iterations=3", f"workers={workers}",
                                                    f"out_dir={tmp_path / str(workers)}"]))
    a, b = _weights(tmp_path / "0" / "last.pt"), _weights(tmp_path / "2" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_command_line_annotates_as_notebook_01():
    """One default: random complete instances of at least 1000 voxels (100 pixels in
    2D) up to 5 % of the instance voxels; sparsity given alone means a share of the
    instances, as it always did."""
    cfg = load_config(None, [])
    assert cfg.voxel_budget == 0.05 and cfg.min_size is None and cfg.min_instance_size() == 1000
    assert load_config(None, ["dim=2", "patch=128,128"]).min_instance_size() == 100
    assert "at least 1000 voxels, up to 0.05 of the instance voxels" in cfg.annotation_rule()
    share = load_config(None, ["sparsity=0.2"])
    assert share.voxel_budget is None and "0.2 of the instances" in share.annotation_rule()
    both = load_config(None, ["sparsity=0.2", "voxel_budget=0.01"])
    assert both.voxel_budget == 0.01
    with pytest.raises(ValueError, match="config.min_size"):
        load_config(None, ["min_size=0"])
    # the annotation a run draws is notebook 01's for the same seed
    notebook = load_config(None, {"voxel_budget": 0.05, "min_size": 1000, "sparsity": 0.1,
                                        "dataset": "synthetic"})
    a = prepare_data(load_config(None, ["dataset=synthetic"])).sparse_train[0]
    b = prepare_data(notebook).sparse_train[0]
    np.testing.assert_array_equal(a, b)


def test_resume_refuses_another_config_and_names_the_difference(tmp_path):
    base = TINY + ["iterations=2", "checkpoint_every=1", "method=sparse_only", f"out_dir={tmp_path}"]
    train.train(load_config(None, base))
    assert torch.load(tmp_path / "last.pt", weights_only=False)["schema"] == 1
    with pytest.raises(ValueError, match=r"cannot resume.*lr: 0\.001 -> 0\.01"):
        train.train(load_config(None, base + ["resume=true", "iterations=3", "lr=0.01"]))
    # what may change on a resume (here the log interval) does not stop it
    summary = train.train(load_config(None, base[:-1] + [f"out_dir={tmp_path}", "resume=true", "log_every=2",
                                                                "iterations=2"]))
    assert summary["iterations"] == 2
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    state["schema"] = 99
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(ValueError, match="schema 99 is newer"):
        train.train(load_config(None, base + ["resume=true"]))
