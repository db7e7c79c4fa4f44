import numpy as np
import pytest
import torch

from affcons_lib.method.affinity import (edge_slices, N_NEAREST_2D, N_NEAREST_3D, OFFSETS_2D, OFFSETS_3D, affinities_from_embeddings, affinities_from_labels, affinity_entropy, labeled_region_mask, widen_borders)


def _reference_affinities(labels, offsets, background_is_instance=False):
    """Obvious per-voxel loop, the definition itself."""
    affs = np.zeros((len(offsets),) + labels.shape, np.float32)
    valid = np.zeros_like(affs, dtype=bool)
    for c, o in enumerate(offsets):
        for v in np.ndindex(labels.shape):
            u = tuple(a + b for a, b in zip(v, o))
            if all(0 <= ui < n for ui, n in zip(u, labels.shape)):
                valid[(c,) + v] = True
                same = labels[v] == labels[u]
                if not background_is_instance:
                    same = same and labels[v] != 0
                affs[(c,) + v] = same
    return affs, valid


def test_paper_offsets():
    assert len(OFFSETS_3D) == 12 and len(OFFSETS_2D) == 10
    assert OFFSETS_3D[:N_NEAREST_3D] == ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
    assert OFFSETS_2D[:N_NEAREST_2D] == ((-1, 0), (0, -1))
    assert {abs(min(o)) for o in OFFSETS_2D} == {1, 3, 5, 9, 27}
    assert all(d <= 0 for o in OFFSETS_3D + OFFSETS_2D for d in o)


@pytest.mark.parametrize("bg", [False, True])
def test_affinities_match_definition_3d(bg):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, (5, 7, 6))
    offsets = [(-1, 0, 0), (0, -2, 0), (0, 0, -3), (-2, -1, 0), (0, 1, 0)]
    affs, valid = affinities_from_labels(labels, offsets, background_is_instance=bg)
    ref_a, ref_v = _reference_affinities(labels, offsets, bg)
    np.testing.assert_array_equal(affs, ref_a)
    np.testing.assert_array_equal(valid, ref_v)
    assert affs.dtype == np.float32 and valid.dtype == bool


def test_affinities_2d_hand_case():
    labels = np.array([[1, 1, 2],
                       [1, 0, 2]])
    affs, valid = affinities_from_labels(labels, [(-1, 0), (0, -1)])
    # (-1,0): row 1 compares with row 0
    np.testing.assert_array_equal(affs[0], [[0, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(valid[0], [[0, 0, 0], [1, 1, 1]])
    # (0,-1): column x compares with x-1
    np.testing.assert_array_equal(affs[1], [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(valid[1], [[0, 1, 1], [0, 1, 1]])


def test_offset_longer_than_array_is_all_invalid():
    affs, valid = affinities_from_labels(np.ones((4, 4, 4), int), [(0, 0, -27)])
    assert not valid.any() and not affs.any()


def test_widen_borders():
    labels = np.zeros((1, 5, 6), dtype=np.int64)
    labels[0, :, :3] = 1
    labels[0, :, 3:] = 2
    wide = widen_borders(labels)
    # columns 2 and 3 touch the other id -> boundary; the rest keeps its id
    assert (wide[0, :, 2:4] == 0).all()
    assert (wide[0, :, :2] == 1).all() and (wide[0, :, 4:] == 2).all()
    # in-plane only: a change across z alone is no border
    z = np.zeros((2, 3, 3), int)
    z[1] = 5
    z[0] = 4
    np.testing.assert_array_equal(widen_borders(z), z)


def test_labeled_region_mask_rules():
    # 1D-like row: [A A u u B], A annotated, B annotated, u unannotated
    sparse = np.array([[1, 1, 0, 0, 2]])
    m = labeled_region_mask(sparse, [(0, -1)])[0, 0]
    # edge x links x-1 -> x; x=0 leaves the array
    # x=1: A-A known; x=2: u-A crosses A's boundary, known; x=3: u-u unknown; x=4: B-u known
    np.testing.assert_array_equal(m, [False, True, True, False, True])


def test_sparse_targets_on_labeled_region_equal_dense_targets():
    from affcons_lib.data import annotate_instances, make_em_volume

    _, dense = make_em_volume((6, 40, 40), n_neurites=8, seed=3)
    sparse = annotate_instances(dense, "random", fraction=0.4, seed=1)
    a_dense, valid = affinities_from_labels(widen_borders(dense), OFFSETS_3D)
    a_sparse, _ = affinities_from_labels(widen_borders(sparse), OFFSETS_3D)
    m = labeled_region_mask(sparse, OFFSETS_3D)
    assert m.any() and (~m & valid).any()
    np.testing.assert_array_equal(a_sparse[m], a_dense[m])


def test_embeddings_cosine_and_gradient():
    torch.manual_seed(0)
    emb = torch.randn(2, 16, 4, 9, 9, requires_grad=True)
    offs = OFFSETS_3D[:6]
    affs = affinities_from_embeddings(emb, offs, clip_negative=False)
    assert affs.shape == (2, 6, 4, 9, 9)
    e = torch.nn.functional.normalize(emb.detach(), dim=1)
    # channel 4 is (0, -3, 0): voxel (b, :, z, y, x) with (z, y-3, x)
    want = (e[1, :, 2, 5, 7] * e[1, :, 2, 2, 7]).sum()
    assert torch.allclose(affs[1, 4, 2, 5, 7], want, atol=1e-6)
    assert affs[0, 4, :, :3].abs().sum() == 0  # neighbour outside -> 0
    affs.sum().backward()
    assert emb.grad is not None and torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    clipped = affinities_from_embeddings(emb, offs)
    assert clipped.min() >= 0 and clipped.max() <= 1
    same = affinities_from_embeddings(torch.full((1, 16, 2, 9, 9), 0.3), offs)
    assert same.max() <= 1.0  # never above 1, whatever the rounding


def _plain_autograd_cosine(emb, offsets, low):
    """The formula as written, left to autograd: the reference for the library's
    hand-written backward."""
    e = torch.nn.functional.normalize(emb, p=2, dim=1, eps=1e-6)
    shape, every = tuple(e.shape[2:]), (slice(None), slice(None))
    out = e.new_zeros((e.shape[0], len(offsets)) + shape)
    for c, o in enumerate(offsets):
        at_v, at_nb = edge_slices(o, shape)
        out[(slice(None), c) + at_v] = (e[every + at_v] * e[every + at_nb]).sum(1).clamp(low, 1.0)
    return out


@pytest.mark.parametrize("by_channel", [False, True])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("offsets, shape", [(OFFSETS_3D, (2, 16, 4, 11, 11)), (OFFSETS_2D, (1, 16, 30, 30))])
def test_embeddings_gradient_is_plain_autograds(clip, offsets, shape, by_channel, monkeypatch):
    """Both ways of the forward (one product and sum; channel by channel, which
    the CPU takes from 2**17 voxels on) against autograd of the plain formula."""
    import affcons_lib.method.affinity as affinity_module

    monkeypatch.setattr(affinity_module, "_BY_CHANNEL_FROM", 0 if by_channel else 2 ** 62)
    torch.manual_seed(0)
    emb = torch.randn(*shape, dtype=torch.float64)
    emb[:, :, :2] = emb[:, :, :1]  # equal vectors: cosines of 1, where the clamp's edge is
    emb = emb.requires_grad_(True)
    weights = torch.randn((shape[0], len(offsets)) + shape[2:], dtype=torch.float64)
    got = affinities_from_embeddings(emb, offsets, clip_negative=clip)
    (got * weights).sum().backward()
    grad, emb.grad = emb.grad, None
    want = _plain_autograd_cosine(emb, offsets, 0.0 if clip else -1.0)
    (want * weights).sum().backward()
    assert (want.detach() < 0).any() != clip  # negative cosines present, clipped or not
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, emb.grad, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda e: affinities_from_embeddings(e, offsets[:3], clip_negative=False), emb[:1, :4, :3, :5].detach()
        .clone().requires_grad_(True))


def test_embeddings_identical_vectors_give_one_and_numpy_in_numpy_out():
    emb = np.ones((16, 5, 5), np.float32)
    affs = affinities_from_embeddings(emb, OFFSETS_2D[:2])
    assert isinstance(affs, np.ndarray)
    np.testing.assert_allclose(affs[0, 1:], 1.0, atol=1e-6)


def test_entropy():
    a = np.array([0.0, 0.5, 1.0], np.float32)
    h = affinity_entropy(a)
    assert h[1] == pytest.approx(np.log(2), rel=1e-5)
    assert h[0] < 1e-4 and h[2] < 1e-4
    ht = affinity_entropy(torch.from_numpy(a))
    np.testing.assert_allclose(ht.numpy(), h, atol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: affinities_from_labels(np.zeros((4, 4)), [(-1, 0)]), "integer label array"),
        (lambda: affinities_from_labels(np.zeros((4, 4), int), [(-1, 0, 0)]), "2 spatial axes"),
        (lambda: affinities_from_labels(np.zeros((4, 4), int), [(0, 0)]), "links a voxel to itself"),
        (lambda: affinities_from_labels(np.zeros((4, 4), int), []), "at least one offset"),
        (lambda: affinities_from_labels(np.zeros(4, int), [(-1,)]), "2D .* or 3D"),
        (lambda: affinities_from_embeddings(torch.zeros(16, 4, 4), OFFSETS_3D), "spatial axes"),
        (lambda: affinities_from_embeddings(torch.zeros(1, 16, 4, 4, dtype=torch.long), OFFSETS_2D), "floating"),
        (lambda: labeled_region_mask(np.zeros((3, 3), int), [(-1, 0, 0)]), "2 spatial axes"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
