import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from affcons_lib.evaluation import metrics


@pytest.mark.parametrize("seed", range(8))
def test_voi_arand_agree_with_skimage(seed):
    rng = np.random.default_rng(seed)
    shape = (6, 20, 20) if seed % 2 else (40, 30)
    gt = rng.integers(0, 1 + rng.integers(2, 30), shape)
    seg = rng.integers(0, 1 + rng.integers(2, 30), shape)
    sk_split, sk_merge = variation_of_information(gt, seg, ignore_labels=(0,))
    sk_arand = adapted_rand_error(gt, seg)[0]
    if seed % 3 == 0:  # huge, sparse ids take the sort path; VOI ignores names
        seg = seg.astype(np.uint64) * 10_000_019
    split, merge = metrics.voi(seg, gt)
    assert split == pytest.approx(sk_split, abs=1e-6)
    assert merge == pytest.approx(sk_merge, abs=1e-6)
    assert metrics.arand(seg, gt) == pytest.approx(sk_arand, abs=1e-6)


@pytest.mark.parametrize("kind", ["blocky", "noise", "bool"])
def test_one_pass_and_sorting_counts_agree(kind, monkeypatch):
    """The hash-table count (few label pairs) and the sorting count it hands over
    to (many pairs) give the same table, ids and scores, equal to scikit-image's
    to 1e-9; ids seen only on ignored voxels get no row in either."""
    rng = np.random.default_rng(1)
    if kind == "blocky":  # EM-like: blocks, a shifted copy, background
        gt = rng.integers(0, 40, (4, 6, 6)).repeat(2, 0).repeat(8, 1).repeat(8, 2).astype(np.uint32)
        seg = np.roll(gt, 3, axis=2).astype(np.int64) * 7 + (np.arange(48) // 5 % 2)
    elif kind == "noise":
        gt, seg = rng.integers(0, 3000, (8, 48, 48)), rng.integers(0, 3000, (8, 48, 48)).astype(np.uint64)
    else:
        gt, seg = rng.integers(0, 3, (8, 48, 48)), rng.random((8, 48, 48)) < 0.5
    gt[0, 0, 0], seg.flat[0] = 0, 999_999 if seg.dtype != bool else seg.flat[0]  # only on an ignored voxel
    one_pass = metrics.contingency(seg, gt)
    scores = metrics.voi_arand(seg, gt)
    real = metrics._count_pairs
    monkeypatch.setattr(metrics, "_count_pairs", lambda s, g, i, m: real(s, g, i, 0))  # give up at once
    sorted_ = metrics.contingency(seg, gt)
    np.testing.assert_array_equal(one_pass.seg_ids, sorted_.seg_ids)
    np.testing.assert_array_equal(one_pass.gt_ids, sorted_.gt_ids)
    assert (one_pass.table != sorted_.table).nnz == 0 and 0 not in one_pass.gt_ids
    if kind != "bool":
        assert 999_999 not in one_pass.seg_ids
    assert metrics.voi_arand(seg, gt) == pytest.approx(scores, abs=1e-12)
    sk_split, sk_merge = variation_of_information(gt, seg.astype(np.int64), ignore_labels=(0,))
    assert scores["voi_split"] == pytest.approx(sk_split, abs=1e-9)
    assert scores["voi_merge"] == pytest.approx(sk_merge, abs=1e-9)
    assert scores["arand"] == pytest.approx(adapted_rand_error(gt, seg.astype(np.int64))[0], abs=1e-9)
    assert scores["voi"] == scores["voi_split"] + scores["voi_merge"]
    assert (scores["voi_split"], scores["voi_merge"]) == metrics.voi(seg, gt)


def test_voi_hand_computed():
    gt = np.array([1, 1, 2, 2])
    # one segment covering both gt objects: a pure merge of 1 bit
    assert metrics.voi(np.array([5, 5, 5, 5]), gt) == pytest.approx((0.0, 1.0))
    # each gt object split in two: a pure split of 1 bit
    assert metrics.voi(np.array([1, 2, 3, 4]), gt) == pytest.approx((1.0, 0.0))
    # identical up to renaming
    assert metrics.voi(np.array([7, 7, 3, 3]), gt) == pytest.approx((0.0, 0.0))
    # gt background ignored: what seg does there does not count
    assert metrics.voi(np.array([1, 2, 9, 9]), np.array([0, 0, 2, 2])) == pytest.approx((0.0, 0.0))
    # natural log on request
    assert metrics.voi(np.array([5, 5, 5, 5]), gt, base=np.e)[1] == pytest.approx(np.log(2))


def test_arand_hand_computed():
    gt = np.array([1, 1, 2, 2])
    assert metrics.arand(np.array([3, 3, 4, 4]), gt) == pytest.approx(0.0)
    # full merge: precision = (sum n_ij^2 - n)/(sum b^2 - n) = (8-4)/(16-4) = 1/3, recall 1
    assert metrics.arand(np.array([1, 1, 1, 1]), gt) == pytest.approx(1 - 2 * (1 / 3) / (1 / 3 + 1))


def test_instance_metrics_hand_computed():
    gt = np.zeros((4, 8), int)
    gt[:, :4] = 1
    gt[:, 4:] = 2
    assert metrics.sbd(gt, gt) == 1.0 and metrics.aji(gt, gt) == 1.0
    assert metrics.f1(gt, gt) == 1.0 and metrics.pq(gt, gt) == 1.0 and metrics.dice(gt, gt) == 1.0
    assert metrics.dic(gt, gt) == 0
    seg = np.zeros_like(gt)
    seg[:, :4] = 1  # finds object 1 exactly, misses object 2
    assert metrics.dic(seg, gt) == 1
    assert metrics.sbd(seg, gt) == pytest.approx(0.5)  # BD(gt, seg) = (1 + 0) / 2
    assert metrics.dice(seg, gt) == pytest.approx(2 * 16 / (16 + 32))
    assert metrics.f1(seg, gt) == pytest.approx(2 * 1 / (1 + 2))
    assert metrics.pq(seg, gt) == pytest.approx(1.0 / (1 + 0.5))
    assert metrics.aji(seg, gt) == pytest.approx(16 / 32)
    # one predicted object half-covering gt 1 (IoU 0.5, not > 0.5)
    half = np.zeros_like(gt)
    half[:2, :4] = 1
    half[:, 4:] = 2
    assert metrics.f1(half, gt) == pytest.approx(2 * 1 / 4)
    assert metrics.aji(half, gt) == pytest.approx((8 + 16) / (16 + 16))
    assert metrics.sbd(half, gt) == pytest.approx((2 * 8 / 24 + 1) / 2)


def test_aji_counts_unmatched_predictions():
    gt = np.zeros((4, 8), int)
    gt[:, :4] = 1
    seg = gt.copy()
    seg[:, 6:] = 2  # a false positive of 8 pixels
    assert metrics.aji(seg, gt) == pytest.approx(16 / (16 + 8))


def test_contingency_is_sparse():
    rng = np.random.default_rng(0)
    seg = rng.integers(1, 50_000, (64, 64, 64))
    gt = rng.integers(1, 50_000, (64, 64, 64))
    c = metrics.contingency(seg, gt)
    # a dense table would have 2.5e9 cells; this one has at most one per voxel
    assert c.table.nnz <= seg.size and c.n == seg.size


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.voi(np.zeros((3, 3), int), np.zeros((3, 4), int)), "same shape"),
        (lambda: metrics.voi(np.zeros((3, 3)), np.zeros((3, 3), int)), "seg: expected an integer"),
        (lambda: metrics.arand(np.zeros((3, 3), int), -np.ones((3, 3), int)), "gt: labels must be non-negative"),
        (lambda: metrics.voi(np.ones((3, 3), int), np.zeros((3, 3), int)), "every voxel is ignored"),
        (lambda: metrics.f1(np.ones((3, 3), int), np.ones((3, 3), int), threshold=0.3), "threshold"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_contingency_large_ids_and_many_pairs_take_other_routes_to_the_same_table():
    """Ids past 2^31 (no pair key of one int64) and more pairs than the hash table
    keeps go through dense ids and a counting sort: the same table."""
    rng = np.random.default_rng(0)
    seg = rng.integers(1, 6, (4, 30, 30)).astype(np.uint64)
    gt = rng.integers(0, 4, (4, 30, 30)).astype(np.uint64)
    small = metrics.contingency(seg, gt)
    big = metrics.contingency(seg + (1 << 40), gt + (np.uint64(1) << np.uint64(35)) * (gt > 0),
                              ignore_gt=(0,))
    np.testing.assert_array_equal(big.table.toarray(), small.table.toarray())
    assert big.seg_ids.tolist() == [s + (1 << 40) for s in small.seg_ids.tolist()]
    noise = rng.integers(0, 1 << 20, seg.shape)  # nearly one pair per voxel
    t = metrics.contingency(noise, gt)
    assert t.n == np.count_nonzero(gt) and t.table.nnz == len(set(zip(noise[gt > 0], gt[gt > 0])))
    s, g, c = t.cells()
    assert c.sum() == t.n and set(g.tolist()) <= {1, 2, 3}
