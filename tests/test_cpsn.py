import numpy as np
import pytest
import torch

from affcons_lib.training import cpsn, train
from affcons_lib.training.config import load_config

TINY = ["widths=4,8", "patch=4,32,32", "batch=1", "dataset=synthetic", "progress=false", "log_every=1"]


def test_error_target_hand_made():
    aff = torch.tensor([[0.9, 0.2, 0.5, 0.49, 0.7]])
    gt = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    # right, right, wrong (0.5 counts as 1), wrong, outside the annotation
    assert cpsn.error_target(aff, gt, mask).tolist() == [[0, 0, 1, 1, 0]]


def test_loss_ignores_unannotated_pixels():
    torch.manual_seed(0)
    pred = torch.rand(2, 3, 8, 8)
    err = (torch.rand(2, 3, 8, 8) > 0.8).float()
    mask = torch.rand(2, 3, 8, 8) > 0.4
    a = cpsn.cpsn_loss(pred, err * mask, mask)
    pred2, err2 = pred.clone(), err.clone()
    pred2[~mask] = torch.rand(int((~mask).sum()))
    err2[~mask] = 1 - err2[~mask]
    assert cpsn.cpsn_loss(pred2, err2 * mask, mask).item() == pytest.approx(a.item(), rel=1e-6)


def test_loss_balances_errors():
    err = torch.zeros(1, 1, 10)
    err[0, 0, 0] = 1  # one error among ten
    mask = torch.ones_like(err, dtype=torch.bool)
    only_missed_error = torch.zeros_like(err) + 1e-3  # predicts "correct" everywhere
    only_false_alarm = torch.full_like(err, 0.5)
    # the error pixel weighs #correct / #error = 9: (9 * -ln(1e-3) + 9 * -ln(1 - 1e-3)) / 10
    loss = cpsn.cpsn_loss(only_missed_error, err, mask)
    assert loss.item() == pytest.approx((9 * -np.log(1e-3) + 9 * -np.log(1 - 1e-3)) / 10, rel=1e-5)  # 6.218
    assert loss.item() == pytest.approx(6.218, abs=1e-3)  # unbalanced it would be 0.692
    assert cpsn.cpsn_loss(only_false_alarm, err, mask).item() == pytest.approx(18 * np.log(2) / 10, rel=1e-5)


def test_cpsn_input_layout():
    img = torch.rand(2, 1, 3, 4)
    aff = torch.rand(2, 5, 3, 4)
    x = cpsn.cpsn_input(img, aff)
    assert x.shape == (10, 3, 3, 4)
    assert torch.equal(x[1 * 5 + 3, 0], img[1, 0]) and torch.equal(x[1 * 5 + 3, 1], aff[1, 3])


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    cfg = load_config(None, TINY + ["method=crac", "iterations=4", "snapshot_iters=2,4", f"out_dir={out}"])
    train.train(cfg)
    return out


def test_snapshot_bank_deterministic_and_missing_file(snapshot_run):
    bank = cpsn.SnapshotBank(snapshot_run, max_dropout=0.1)
    assert len(bank) == 4  # two snapshots x two branches
    draws = [bank.draw(np.random.default_rng(7))[1] for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same draw (network and rate)
    many = {bank.draw(np.random.default_rng(s))[1] for s in range(20)}
    assert len(many) > 3
    with pytest.raises(FileNotFoundError, match="snapshot_0000003.pt"):
        cpsn.SnapshotBank(snapshot_run, iterations=[2, 3])
    release = cpsn.SnapshotBank(snapshot_run, iterations=[2], branches=("embedding",))
    assert len(release) == 1


def test_train_cpsn_and_plug_into_crac(snapshot_run, tmp_path):
    summary = cpsn.train_cpsn(cpsn.CPSNConfig(snapshot_dir=str(snapshot_run), widths=(4, 8), iterations=3,
                                              batch=1, out_dir=str(tmp_path / "cpsn"), checkpoint_every=3))
    net = cpsn.load_cpsn(summary["checkpoint"])
    fewer = cpsn.train_cpsn(cpsn.CPSNConfig(snapshot_dir=str(snapshot_run), widths=(4, 8), iterations=2, batch=1,
                                            channels_per_step=2, out_dir=str(tmp_path / "cpsn2")))
    assert np.isfinite(fewer["last"]["loss"])
    img, aff = torch.rand(1, 1, 4, 32, 32), torch.rand(1, 12, 4, 32, 32)
    conf = cpsn.cpsn_confidence(net, img, aff)
    errors = cpsn.predict_errors(net, img, aff)
    assert conf.shape == aff.shape and torch.equal(conf, errors < 0.5)  # "correct" = E < 0.5, every channel
    assert ((errors > 0) & (errors < 1)).all()
    cfg = load_config(None, TINY + ["method=crac", "iterations=3", "cpsn_warmup=1",
                                          f"cpsn_checkpoint={summary['checkpoint']}", f"out_dir={tmp_path / 'crac'}"])
    assert np.isfinite(train.train(cfg)["last_losses"]["total"])
    # the warm-up as a share of the run; one that never ends is said, not silent
    assert cfg.cpsn_warmup_iterations() == 1
    assert load_config(None, ["iterations=300"]).cpsn_warmup_iterations() == 5  # the release's 5k of 300k
    late = load_config(None, TINY + ["method=crac", "iterations=2", "cpsn_warmup=5000",
                                           f"cpsn_checkpoint={summary['checkpoint']}", f"out_dir={tmp_path / 'late'}"])
    with pytest.warns(UserWarning, match="cpsn_warmup=5000.*after iteration 5000 of 2, that is never"):
        train.train(late)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        cpsn.load_cpsn(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("garbage\n")
    with pytest.raises(ValueError, match="garbage.pt: not a checkpoint"):
        cpsn.load_cpsn(garbage)
    with pytest.raises(ValueError, match="not a checkpoint written by affcons_lib .no .'dim'"):
        cpsn.load_cpsn(tmp_path / "crac" / "last.pt")  # a segmentation checkpoint is not a CPSN


def test_precision_recall_hand_made():
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    errors = np.array([1, 0, 1, 0])
    p, r, ap = cpsn.precision_recall(scores, errors)
    assert p.tolist() == [1.0, 0.5, 2 / 3, 0.5] and r.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert ap == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert cpsn.precision_recall(-scores, errors)[2] < ap  # a worse ranking scores lower
    with pytest.raises(ValueError, match="no error pixel"):
        cpsn.precision_recall(scores, np.zeros(4))


def test_cpsn_cli_errors(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "affcons_lib", "cpsn", "--set", "snapshot_dir=" + str(tmp_path / "none"),
                          "--set", "iterations=1"], capture_output=True, text=True)
    assert out.returncode == 2 and "none" in out.stderr
    out = subprocess.run([sys.executable, "-m", "affcons_lib", "cpsn", "--set", "speed=3"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown config key" in out.stderr


def test_compare_filters_by_hand():
    """One row of four pixels, one channel (x-edges); the last pixel has no edge.
    The fake CPSN calls an affinity wrong with probability = the affinity, so the
    training filter (alpha 0: entropy keeps all) keeps the edges below 0.5."""

    class Fixed(torch.nn.Module):  # a 'network' whose affinities are given
        kind = "affinity"

        def __init__(self, affs):
            super().__init__()
            self.affs = affs

        def forward(self, x):
            return self.affs.expand(x.shape[0], *self.affs.shape[1:])

    class AffinityIsErrorProbability(torch.nn.Module):
        def forward(self, x):  # x: (N*C, image + affinity + entropy, *S)
            return x[:, 1:2]

    affs = torch.tensor([[[[0.1, 0.45, 0.85, 0.5]]]])  # (1, C=1, 1, 4)
    patches = cpsn.HeldoutPatches(raw=torch.zeros(1, 1, 4), target=torch.tensor([[[[0.0, 1.0, 1.0, 0.0]]]]),
                                  labeled=torch.zeros(1, 1, 1, 4, dtype=torch.bool),
                                  unlabeled=torch.tensor([[[[True, True, True, False]]]]))
    (r,) = cpsn.compare_filters(AffinityIsErrorProbability(), {"net": Fixed(affs)}, patches, [(0, 1)], alpha=0.0)
    # kept by the CPSN: 0.1 (right) and 0.45 (wrong); entropy alone keeps as many, the
    # two surest: 0.1 and 0.85 (both right); 0.45 is the one wrong edge of three
    assert r["kept"] == pytest.approx(2 / 3)
    assert r["error_cpsn"] == pytest.approx(0.5) and r["error_entropy"] == 0.0
    assert r["error_all"] == pytest.approx(1 / 3)
    # ranking by E puts 0.85 (right) above 0.45 (wrong): AP 1/2; by entropy, 0.45 first: AP 1
    assert r["ap_cpsn_unlabeled"] == pytest.approx(0.5) and r["ap_entropy_unlabeled"] == pytest.approx(1.0)
    assert np.isnan(r["ap_cpsn_labeled"])  # no labeled edge


def test_heldout_patches_cover_the_regions_and_honour_min_labeled():
    from affcons_lib.method import affinity

    labels = np.zeros((4, 32, 32), np.int32)
    labels[:, :, :16], labels[:, :, 16:] = 1, 2
    sparse = np.where(labels == 1, 1, 0).astype(np.int32)  # the left body annotated
    from affcons_lib.training.sampling import PreparedData

    raw = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    prepared = PreparedData(raw, labels, sparse, raw, labels, affinity.OFFSETS_3D, "two bodies")
    p = cpsn.heldout_patches(prepared, (2, 8, 8), 6, seed=0, min_labeled=0.1)
    assert p.raw.shape == (6, 2, 8, 8) and p.target.shape == (6, 12, 2, 8, 8)
    assert not (p.labeled & p.unlabeled).any()
    assert (p.labeled.flatten(1).float().mean(1) >= 0.1).all()
    again = cpsn.heldout_patches(prepared, (2, 8, 8), 6, seed=0, min_labeled=0.1)
    assert torch.equal(again.raw, p.raw)  # the seed decides
    with pytest.raises(RuntimeError, match="lower min_labeled"):
        cpsn.heldout_patches(prepared, (2, 8, 8), 2, seed=0, min_labeled=0.99, max_tries=5)
    with pytest.raises(ValueError, match="patch"):
        cpsn.heldout_patches(prepared, (8, 8, 8), 2, seed=0)
