import numpy as np
import pytest

from affcons_lib.method import affinity
from affcons_lib.evaluation import metrics
from affcons_lib.segmentation import fragments, postprocess as pp
from affcons_lib.data import make_em_volume


# ------------------------------------------------------------------ mutex watershed
def reference_mws(affs, offsets, n_attractive, strides=None, randomize_strides=False, mask=None, seed=0):
    """The algorithm as written in the paper, in plain Python: all edges sorted by
    decreasing weight (ties: increasing edge id), clusters as Python sets, mutexes
    as a set of frozensets of cluster ids."""
    shape = affs.shape[1:]
    n = int(np.prod(shape))
    valid = pp._valid_edges(shape, [tuple(o) for o in offsets], n_attractive, strides, randomize_strides,
                            None if mask is None else mask.astype(bool), seed)
    edges = []
    for c, o in enumerate(offsets):
        for p in np.ndindex(shape):
            if not valid[(c,) + p]:
                continue
            q = tuple(a + b for a, b in zip(p, o))
            a = float(np.float32(affs[(c,) + p]))
            w = a if c < n_attractive else float(np.float32(1.0) - np.float32(a))
            eid = c * n + int(np.ravel_multi_index(p, shape))
            edges.append((-w, eid, int(np.ravel_multi_index(p, shape)), int(np.ravel_multi_index(q, shape)), c))
    edges.sort()
    cluster = {i: i for i in range(n)}          # pixel -> cluster id
    members = {i: {i} for i in range(n)}        # cluster id -> pixels
    mutex = set()                               # frozenset({a, b}) of cluster ids
    for _, _, p, q, c in edges:
        a, b = cluster[p], cluster[q]
        if a == b:
            continue
        if c < n_attractive:
            if frozenset((a, b)) in mutex:
                continue
            for x in members[b]:
                cluster[x] = a
            members[a] |= members.pop(b)
            mutex = {frozenset(a if y == b else y for y in m) for m in mutex}
        else:
            mutex.add(frozenset((a, b)))
    flat_mask = np.ones(n, bool) if mask is None else mask.ravel().astype(bool)
    out, seen = np.zeros(n, np.int64), {}
    for i in range(n):
        if flat_mask[i]:
            out[i] = seen.setdefault(cluster[i], len(seen) + 1)
    return out.reshape(shape)


CASES_2D = [((-1, 0), (0, -1), (-2, 0), (0, -2), (-3, -3)), ((-1, 0), (0, -1), (-4, 1), (1, -3))]
CASES_3D = [((-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, -3, 0), (0, 0, -3), (-2, -1, 1))]


@pytest.mark.parametrize("seed", range(12))
def test_mws_matches_reference_2d(seed):
    rng = np.random.default_rng(seed)
    offsets = CASES_2D[seed % 2]
    shape = (int(rng.integers(3, 9)), int(rng.integers(3, 9)))
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    if seed % 3 == 0:  # many exact ties
        affs = np.round(affs * 4) / 4
    n_attr = 2 if seed % 4 else 3
    kwargs = {}
    if seed % 5 == 1:
        kwargs["strides"] = (2, 1)
    if seed % 5 == 2:
        kwargs.update(strides=(2, 2), randomize_strides=True, seed=seed)
    if seed % 2 == 1:
        kwargs["mask"] = rng.random(shape) > 0.2
    ours = pp.mutex_watershed(affs, offsets, n_attr, use_affogato=False, **kwargs)
    ref = reference_mws(affs, offsets, n_attr, **kwargs)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("seed", range(6))
def test_mws_matches_reference_3d(seed):
    rng = np.random.default_rng(100 + seed)
    offsets = CASES_3D[0]
    shape = (int(rng.integers(2, 4)), int(rng.integers(3, 6)), int(rng.integers(3, 6)))
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    if seed % 2:
        affs = np.round(affs * 3) / 3
    kwargs = {"strides": (1, 2, 2)} if seed % 3 == 0 else {}
    if seed % 3 == 1:
        kwargs["mask"] = rng.random(shape) > 0.25
    ours = pp.mutex_watershed(affs, offsets, 3, use_affogato=False, **kwargs)
    np.testing.assert_array_equal(ours, reference_mws(affs, offsets, 3, **kwargs))


@pytest.mark.parametrize("seed", range(4))
def test_mws_kernel_known_pairs_change_nothing(seed, monkeypatch):
    """The set of known mutex pairs, consulted before every scan, changes nothing."""
    import functools

    from affcons_lib.segmentation import _mws

    rng = np.random.default_rng(200 + seed)
    offsets = CASES_2D[0] + ((0, -5), (-6, 2))
    shape = (14, 13)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    if seed % 2:
        affs = np.round(affs * 5) / 5
    default = pp.mutex_watershed(affs, offsets, 2, use_affogato=False)
    monkeypatch.setattr(_mws, "mws_kruskal", functools.partial(_mws.mws_kruskal, short_block=0))
    stressed = pp.mutex_watershed(affs, offsets, 2, use_affogato=False)
    np.testing.assert_array_equal(stressed, default)
    np.testing.assert_array_equal(stressed, reference_mws(affs, offsets, 2))


@pytest.mark.parametrize("seed", range(3))
def test_mws_with_more_repulsive_channels_than_one_bit_word(seed):
    """18 repulsive channels give 36 edge directions per pixel, more than the 31 bits
    of one word of active edges: the second word must be read as well."""
    rng = np.random.default_rng(300 + seed)
    offsets = ((-1, 0), (0, -1)) + tuple((dy, dx) for dy in (-3, -2, -1) for dx in (-3, -2, -1, 1, 2, 3))
    assert len(offsets) - 2 == 18
    shape = (9, 10)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    if seed == 2:
        affs = np.round(affs * 4) / 4
    ours = pp.mutex_watershed(affs, offsets, 2, use_affogato=False)
    np.testing.assert_array_equal(ours, reference_mws(affs, offsets, 2))
    assert 1 < ours.max() < ours.size  # neither one cluster nor all singletons


def test_mws_recovers_instances_from_clean_affinities():
    from affcons_lib.data import make_nuclei_image

    _, labels = make_nuclei_image((96, 96), n_nuclei=15, seed=4)
    affs, _ = affinity.affinities_from_labels(labels, affinity.OFFSETS_2D, background_is_instance=True)
    seg = pp.mutex_watershed(affs, affinity.OFFSETS_2D, 2, mask=labels > 0)
    assert metrics.voi(seg, labels) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert (seg[labels == 0] == 0).all() and seg.max() == len(np.unique(labels)) - 1


@pytest.mark.skipif(not pp.HAVE_AFFOGATO, reason="affogato (conda-forge) is not importable here")
@pytest.mark.parametrize("seed", range(5))
def test_mws_agrees_with_affogato(seed):  # pragma: no cover - conda environments
    rng = np.random.default_rng(seed)
    affs = rng.random((len(affinity.OFFSETS_2D), 40, 40)).astype(np.float32)  # continuous: no ties
    ours = pp.mutex_watershed(affs, affinity.OFFSETS_2D, 2, use_affogato=False)
    theirs = pp.mutex_watershed(affs, affinity.OFFSETS_2D, 2, use_affogato=True)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(affs=np.zeros((3, 8, 8), np.float32)), "3 channels do not match the 10 offsets"),
        (dict(affs=np.full((10, 8, 8), np.nan, np.float32)), "NaN"),
        (dict(mask=np.ones((7, 8), bool)), r"mask: shape \(7, 8\) does not match"),
        (dict(n_attractive=0), "n_attractive"),
        (dict(strides=(2,)), "strides"),
        (dict(affs=np.zeros((10, 8, 8), np.int64)), "floating-point"),
    ],
)
def test_mws_bad_input(kwargs, match):
    args = dict(affs=np.random.default_rng(0).random((10, 8, 8)).astype(np.float32),
                offsets=affinity.OFFSETS_2D, n_attractive=2)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        pp.mutex_watershed(args.pop("affs"), args.pop("offsets"), args.pop("n_attractive"), **args)


def test_rounding_above_one_is_accepted_but_real_overflow_is_not():
    affs = np.full((10, 8, 8), 1.0000001, np.float32)  # a cosine of unit vectors, rounded
    assert pp.mutex_watershed(affs, affinity.OFFSETS_2D, 2).max() == 1
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        pp.mutex_watershed(affs * 1.5, affinity.OFFSETS_2D, 2)


def test_mws_affogato_forced_without_it():
    if pp.HAVE_AFFOGATO:
        pytest.skip("affogato is importable here")
    with pytest.raises(ImportError, match="affogato"):
        pp.mutex_watershed(np.zeros((2, 4, 4), np.float32), [(-1, 0), (0, -1)], 1, use_affogato=True)


def test_mws_default_is_ours_even_with_affogato(monkeypatch):
    """A conda user with affogato must get the pip user's segmentation: affogato
    only when asked for."""
    def refuse(*args, **kwargs):
        raise AssertionError("affogato was called without use_affogato=True")

    monkeypatch.setattr(pp, "HAVE_AFFOGATO", True)
    monkeypatch.setattr(pp, "_affogato_mws", refuse)
    affs = np.random.default_rng(0).random((10, 32, 32)).astype(np.float32)
    seg = pp.mutex_watershed(affs, affinity.OFFSETS_2D, 2)
    assert seg.shape == (32, 32)
    with pytest.raises(AssertionError, match="without use_affogato"):
        pp.mutex_watershed(affs, affinity.OFFSETS_2D, 2, use_affogato=True)


# -------------------------------------------------------------------------- waterz
@pytest.fixture(scope="module")
def em_case():
    from affcons_lib.data import make_em_volume

    _, gt = make_em_volume((8, 64, 64), n_neurites=10, seed=2)
    affs, _ = affinity.affinities_from_labels(affinity.widen_borders(gt), affinity.OFFSETS_3D)
    rng = np.random.default_rng(0)
    noisy = np.clip(0.1 + 0.8 * affs + rng.normal(0, 0.05, affs.shape), 0, 1).astype(np.float32)
    return noisy, gt


def test_scoring_names():
    """``median`` is the field's median (histograms start empty); the paper's
    release string leaves InitWithMax at true: kept as ``median_release``."""
    assert pp.SCORING["median"].replace(" ", "").endswith("256,false>>")
    assert pp.SCORING["median_release"] == "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>"


def test_agglomerate_thresholds_monotone_and_better_than_the_floors(em_case):
    affs, gt = em_case
    segs = pp.agglomerate(affs, [0.9, 0.1, 0.5])  # any order in, same order out
    counts = [len(np.unique(s)) for s in segs]
    assert counts[1] >= counts[2] >= counts[0]  # higher threshold merges more
    # agglomeration improves on the fragments it starts from, and on merging all
    best = min(sum(metrics.voi(s, gt)) for s in segs)
    assert best < 0.5 * sum(metrics.voi(fragments.fragments(affs), gt))
    assert best < sum(metrics.voi(np.ones_like(gt), gt))


def test_agglomerate_scorings_and_fragment_sources(em_case):
    affs, gt = em_case
    one_object = sum(metrics.voi(np.ones_like(gt), gt))
    alone = sum(metrics.voi(fragments.fragments(affs), gt))
    at_low = set()
    for scoring in ("median", "median_release", "mean", "quantile_75"):
        segs = pp.agglomerate(affs, [0.3, 0.5, 0.9, 0.99], scoring=scoring)
        counts = [len(np.unique(s)) for s in segs]
        assert counts == sorted(counts, reverse=True), (scoring, counts)  # a higher threshold merges more
        voi = sum(metrics.voi(segs[1], gt))
        assert voi < 0.5 * min(one_object, alone), (scoring, voi)  # fragments merged into bodies, not into one
        at_low.add(segs[0].tobytes())
    assert len(at_low) > 1  # the scoring is used: mean and the median disagree at 0.3
    (own,) = pp.agglomerate(affs, [0.5], fragments="waterz")
    assert sum(metrics.voi(own, gt)) < one_object  # waterz's own fragments, agglomerated
    given = fragments.fragments(affs)
    kept = given.copy()
    (from_given,) = pp.agglomerate(affs, [0.5], fragments=given)
    np.testing.assert_array_equal(given, kept)  # the caller's fragments are not overwritten
    np.testing.assert_array_equal(from_given, pp.agglomerate(affs, [0.5])[0])
    assert own.shape == gt.shape


def test_agglomerate_bad_input(em_case):
    affs, gt = em_case
    with pytest.raises(ValueError, match="scoring"):
        pp.agglomerate(affs, [0.5], scoring="medianish")
    with pytest.raises(ValueError, match="NaN"):
        bad = affs.copy()
        bad[0, 0, 0, 0] = np.nan
        pp.agglomerate(bad, [0.5])
    with pytest.raises(ValueError, match="at least 3 channels"):
        pp.agglomerate(affs[:2], [0.5])
    with pytest.raises(ValueError, match="fragments: shape"):
        pp.agglomerate(affs, [0.5], fragments=np.ones((2, 2, 2), np.uint64))


# ------------------------------------------------------------------------- helpers
def test_merge_small_objects():
    seg = np.zeros((1, 6, 8), np.int64)
    seg[0, :, :4] = 1
    seg[0, :, 4:] = 2
    seg[0, 2:4, 3:5] = 3  # a 4-pixel speck on the border
    seg[0, 0, 0] = 0
    out = pp.merge_small_objects(seg, min_size=5)
    assert set(np.unique(out)) == {0, 1, 2}
    assert out[0, 0, 0] == 0  # background untouched
    assert (out[seg == 1] == 1).all() and (out[seg == 2] == 2).all()
    np.testing.assert_array_equal(pp.merge_small_objects(seg, min_size=1), seg)
    with pytest.raises(ValueError, match="heightmap"):
        pp.merge_small_objects(seg, 5, heightmap=np.zeros((2, 2)))


def test_edge_order_matches_lexsort():
    """The key sort gives decreasing weight, ties by increasing id."""
    from affcons_lib.segmentation._mws import edges_by_decreasing_weight

    rng = np.random.default_rng(0)
    n_pixels, n_attr = 150_000, 2
    affs = (np.round(rng.random(4 * n_pixels) * 50) / 50).astype(np.float32)  # many ties
    edge_ids = np.sort(rng.choice(4 * n_pixels, 500_000, replace=False)).astype(np.int64)
    w = np.where(edge_ids < n_attr * n_pixels, affs[edge_ids], np.float32(1) - affs[edge_ids])
    want = edge_ids[np.lexsort((edge_ids, -w))]
    np.testing.assert_array_equal(edges_by_decreasing_weight(affs, n_pixels, n_attr, edge_ids), want)
    np.testing.assert_array_equal(edges_by_decreasing_weight(affs, n_pixels, n_attr, edge_ids.astype(np.int32)),
                                  want)


def test_end_of_attractive_cuts_only_trailing_repulsive_edges():
    from affcons_lib.segmentation._mws import end_of_attractive

    ids = np.array([5, 1, 7, 2, 8, 9], np.int32)  # ids below 3 are attractive
    assert end_of_attractive(ids, 3) == 4
    assert end_of_attractive(np.array([5, 7], np.int32), 3) == 0
    assert end_of_attractive(np.array([], np.int32), 3) == 0
    assert end_of_attractive(np.array([0], np.int32), 3) == 1
