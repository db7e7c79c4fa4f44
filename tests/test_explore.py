"""What-if controls: the numbers behind each slider, and the slider itself (live
with ipywidgets, a single static figure in batch)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from affcons_lib.method import affinity
from affcons_lib.companion import explore


def test_entropy_filter_by_hand():
    affs = np.array([0.9, 0.6, 0.1, 0.45], np.float32).reshape(1, 2, 2)
    entropy = np.array([0.1, 0.6, 0.2, 0.69], np.float32).reshape(1, 2, 2)
    target = np.array([1, 0, 0, 1], np.float32).reshape(1, 2, 2)  # wrong: the 0.6 and the 0.45
    valid = np.ones((1, 2, 2), bool)
    out = explore.entropy_filter(affs, entropy, target, valid, alpha=0.5)
    # the median of the entropies is 0.4: the two high-entropy edges are dropped, and both are wrong
    assert out["kept"].ravel().tolist() == [True, False, True, False]
    assert out["kept_share"] == 0.5 and out["error_kept"] == 0.0 and out["error_dropped"] == 1.0
    everything = explore.entropy_filter(affs, entropy, target, valid, alpha=0.0)
    assert everything["error_kept"] == 0.5 and np.isnan(everything["error_dropped"])
    with pytest.raises(ValueError, match="valid: shape"):
        explore.entropy_filter(affs, entropy, target, valid[..., :1], alpha=0.5)


def test_annotation_at_share_counts():
    labels = np.zeros((4, 16, 16), np.int64)
    for k in range(4):  # four 4x16 slabs: 4 instances
        labels[:, 4 * k:4 * k + 4] = k + 1
    offsets = affinity.OFFSETS_3D[:3]
    all_of_them = explore.annotation_at_share(labels, offsets, "random", 1.0)
    assert all_of_them["instances"] == 4 and all_of_them["voxel_share"] == 1.0
    half = explore.annotation_at_share(labels, offsets, "random", 0.5, seed=1)
    assert half["instances"] == 2 and half["voxel_share"] == 0.5
    assert 0 < half["edge_share"] < all_of_them["edge_share"] <= 1
    assert half["region"].shape == (3,) + labels.shape


def test_slider_draws_once_in_batch_and_redraws_live():
    calls = []

    def draw(alpha):
        calls.append(alpha)
        return alpha * 2

    assert explore.slider(draw, "alpha", [0.0, 0.1, 0.2], 0.1, live=False) == 0.2
    assert calls == [0.1]
    with pytest.raises(ValueError, match="alpha: 0.3 is not among"):
        explore.slider(draw, "alpha", [0.0, 0.1, 0.2], 0.3, live=False)
    widget = explore.slider(draw, "alpha", [0.0, 0.1, 0.2], 0.1, live=True)
    control = widget.children[0]
    control.value = 0.2  # moving the slider redraws
    assert calls[-1] == 0.2
    control.value = 0.0
    assert calls[-1] == 0.0


def test_static_unless_asked(monkeypatch):
    monkeypatch.setenv("AFFCONS_STATIC", "1")
    assert not explore.live_widgets()
    monkeypatch.delenv("AFFCONS_STATIC")
    assert explore.live_widgets()  # ipywidgets is a dependency


def test_drawing_functions_make_figures():
    rng = np.random.default_rng(0)
    affs = rng.random((3, 4, 8, 8)).astype(np.float32)
    ent = affinity.affinity_entropy(affs)
    target = (rng.random(affs.shape) > 0.5).astype(np.float32)
    fig, out = explore.draw_entropy_filter(affs, np.asarray(ent), target, np.ones(affs.shape, bool), 0.2)
    assert len(fig.axes) == 3 and 0.7 < out["kept_share"] < 0.9
    plt.close(fig)
    labels = np.repeat(np.arange(1, 5), 16).reshape(1, 8, 8).repeat(4, 0)
    fig, out = explore.draw_annotation(labels, affinity.OFFSETS_3D[:3], "random", 0.5)
    assert len(fig.axes) == 4 and out["instances"] == 2
    plt.close(fig)


def test_live_slider_redraws_the_entropy_filter():
    rng = np.random.default_rng(1)
    affs = rng.random((3, 4, 8, 8)).astype(np.float32)
    target = (rng.random(affs.shape) > 0.5).astype(np.float32)
    valid = np.ones(affs.shape, bool)
    shares = []

    def show(alpha):
        fig, out = explore.draw_entropy_filter(affs, affinity.affinity_entropy(affs), target, valid, alpha)
        shares.append(out["kept_share"])
        plt.close(fig)

    widget = explore.slider(show, "alpha", [0.0, 0.1, 0.5], 0.1, live=True)
    widget.children[0].value = 0.5
    widget.children[0].value = 0.0
    assert shares[-2:] == [pytest.approx(0.5, abs=0.02), 1.0]


def test_agglomeration_at_thresholds_trades_split_for_merge():
    # two slabs of ground truth; affinities 1 inside, 0.3 across the boundary between them
    gt = np.ones((4, 16, 16), np.int64)
    gt[:, :, 8:] = 2
    affs = affinity.affinities_from_labels(gt, affinity.OFFSETS_3D[:3])[0]
    affs = np.where(affs > 0.5, 1.0, 0.3).astype(np.float32)
    sweep = explore.agglomeration_at_thresholds(affs, gt, [0.5, 0.8], border_tolerance=0)
    # below 1 - 0.3 = 0.7 the boundary holds: both objects found; above it they merge into one
    assert sweep["voi_split"][0] == pytest.approx(0.0) and sweep["voi_merge"][0] == pytest.approx(0.0)
    assert sweep["n_segments"] == [2, 1]
    assert sweep["voi_merge"][1] == pytest.approx(1.0) and sweep["best"] == 0.5
    fig, out = explore.draw_threshold(sweep, 0.8)
    assert out["voi_merge"] == pytest.approx(1.0)
    plt.close(fig)
    with pytest.raises(ValueError, match="threshold: 0.6 is not among"):
        explore.draw_threshold(sweep, 0.6)
    with pytest.raises(ValueError, match="affs: expected shape"):
        explore.agglomeration_at_thresholds(affs[:, :2], gt)


def test_error_by_entropy_counts_wrong_edges_per_bin():
    from affcons_lib.method import affinity

    # the sure edges (0.02, 0.98) are right, the unsure ones (0.45, 0.55) wrong
    affs = np.array([[0.02, 0.98, 0.45, 0.55, 0.98, 0.02]], np.float32)
    target = np.array([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0]], np.float32)
    valid = np.array([[True, True, True, True, True, False]])
    r = explore.error_by_entropy(affs, affinity.affinity_entropy(affs), target, valid, n_bins=4)
    assert r.error == pytest.approx(2 / 5)
    assert r.share.sum() == pytest.approx(1.0)
    assert r.rate[0] == 0.0 and r.rate[-1] == 1.0  # lowest entropies all right, highest all wrong
    assert r.high == 1.0 and r.low == 0.0
