"""The compiled kernels of affcons_lib.segmentation (_kernels, _keysort, _graph),
each against a hand-computed answer or numpy's own."""

import numpy as np
import pytest

from affcons_lib.segmentation import _graph, _kernels, _keysort


def test_key_sort_is_numpys_stable_sort_for_increasing_ids():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 1 << 32, 300_000, dtype=np.uint64).astype(np.uint32)
    keys[::7] = keys[0]  # many ties: their ids must keep their order
    keys[1] = np.uint32(0xFFFFFFFF)  # the largest key, packed into the high half
    order = np.argsort(keys, kind="stable")
    for ids in (np.arange(keys.size), np.arange(keys.size, dtype=np.int32)):
        got_keys, got_ids = _keysort.sort_by_key(keys, ids)
        np.testing.assert_array_equal(got_keys, keys[order])
        np.testing.assert_array_equal(got_ids, order)
        assert got_ids.dtype == ids.dtype
    # ties ordered by payload, whatever their input order; a payload past 32 bits too
    tied = np.array([3, 1, 3, 1], np.uint32)
    for payload in (np.array([9, 8, 7, 6]), np.array([9, 8, 7, 6]) + (1 << 40)):
        got_keys, got_payload = _keysort.sort_by_key(tied, payload)
        np.testing.assert_array_equal(got_keys, [1, 1, 3, 3])
        np.testing.assert_array_equal(got_payload - payload.min() + 6, [6, 8, 7, 9])
    np.testing.assert_array_equal(_keysort.sort_by_key(tied, np.array([1, 0, 0, 1], bool))[1], [0, 1, 0, 1])
    with pytest.raises(ValueError, match="one length"):
        _keysort.sort_by_key(keys, np.arange(3))
    with pytest.raises(ValueError, match="integers"):
        _keysort.sort_by_key(tied, np.ones(4))


def test_hash_table_insert_contains_and_grow():
    table = np.full(8, _kernels.EMPTY, np.int64)
    assert _kernels.insert(table, 5) and not _kernels.insert(table, 5)
    assert _kernels.insert(table, 1 << 40)
    assert _kernels.contains(table, 5) and not _kernels.contains(table, 6)
    bigger = _kernels.grown(table)
    assert bigger.size == 16 and sorted(bigger[bigger != _kernels.EMPTY].tolist()) == [5, 1 << 40]
    values = np.zeros(8, np.int64)
    values[_kernels.probe(table, 5)] = 7
    keys, kept = _kernels.grown_with(table, values)
    assert kept[_kernels.probe(keys, 5)] == 7 and kept[_kernels.probe(keys, 1 << 40)] == 0


def test_find_root_compresses_the_path():
    parent = np.array([0, 0, 1, 2, 3])
    assert _kernels.find_root(parent, 4) == 0
    assert parent.tolist() == [0, 0, 0, 0, 0]


def test_graph_agglomeration_by_hand():
    """Three fragments; edges 0-1 (affinity 0.9), 1-2 (0.4), 0-2 (0.3), mean scoring
    (score = 1 - mean affinity). 0-1 merges first at 0.1; then {0, 1}-2 pools to a
    mean of 0.35, score 0.65: merged below a threshold of 0.66, not below 0.65."""
    u, v = np.array([0, 1, 0]), np.array([1, 2, 2])
    sums, counts = np.array([0.9, 0.4, 0.3]), np.ones(3)
    hist = np.zeros((3, 256), np.int32)
    a, b, score = _graph.agglomerate(3, u, v, sums, counts, hist, -1, 0.65)
    assert len(a) == 1 and {a[0], b[0]} == {0, 1} and score[0] == pytest.approx(0.1)
    a, b, score = _graph.agglomerate(3, u, v, sums, counts, hist, -1, 0.66)
    assert score.tolist() == pytest.approx([0.1, 0.65])
    reps = _graph.replay(3, a, b, 1)
    assert reps[0] == reps[1] != reps[2]
    assert len(set(_graph.replay(3, a, b, 2).tolist())) == 1
