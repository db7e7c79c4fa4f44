"""affcons_lib.segmentation.labels: the one relabelling, checked by hand."""

import numpy as np
import pytest

from affcons_lib.segmentation.labels import dense_ids, relabel_consecutive


def test_dense_ids_by_hand():
    labels = np.array([[5, 3], [5, 0]], np.uint32)
    ids, index = dense_ids(labels)
    assert ids.tolist() == [0, 3, 5] and ids.dtype == np.uint32
    assert index.tolist() == [[2, 1], [2, 0]] and index.dtype == np.int64


def test_large_and_negative_ids_take_the_sort_and_agree():
    labels = np.array([1 << 40, 7, 1 << 40, 2], np.int64)  # too large for a table
    ids, index = dense_ids(labels)
    assert ids.tolist() == [2, 7, 1 << 40] and index.tolist() == [2, 1, 2, 0]
    ids, index = dense_ids(np.array([-4, 2, -4]))
    assert ids.tolist() == [-4, 2] and index.tolist() == [0, 1, 0]


def test_bool_and_empty_and_floats():
    ids, index = dense_ids(np.array([True, False, True]))
    assert ids.tolist() == [False, True] and index.tolist() == [1, 0, 1]
    ids, index = dense_ids(np.zeros((0, 3), np.uint64))
    assert ids.size == 0 and index.shape == (0, 3)
    with pytest.raises(TypeError, match="labels: expected an integer"):
        dense_ids(np.array([0.5, 1.0]))


def test_relabel_consecutive_keeps_zero_when_asked():
    labels = np.array([0, 9, 4, 9], np.uint64)
    assert relabel_consecutive(labels).tolist() == [0, 2, 1, 2]
    assert relabel_consecutive(labels, keep_zero=False).tolist() == [1, 3, 2, 3]
    assert relabel_consecutive(np.array([9, 4]), dtype=np.uint32).tolist() == [2, 1]
