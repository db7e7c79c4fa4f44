"""The 2D instrument: mutex watershed, the membrane convention, floors and ceiling,
on hand-made labels and on the real ISBI 2012 sections."""

from __future__ import annotations

import numpy as np
import pytest

from affcons_lib.method import affinity
from affcons_lib import data
from affcons_lib.evaluation.evaluate import evaluate_2d, evaluate_2d_many, fragments_2d, reference_scores_2d

OFFSETS = affinity.OFFSETS_2D


def membrane_cells(shape=(96, 96), step=24):
    """A grid of square cells separated by 2-pixel membranes (label 0)."""
    y, x = np.indices(shape)
    cells = (y // step) * (shape[1] // step) + x // step + 1
    membrane = (y % step < 2) | (x % step < 2)
    return np.where(membrane, 0, cells).astype(np.int32)


def test_fragments_2d_by_hand():
    affs = np.zeros((2, 3, 4), np.float32)
    affs[1, 0, 1:] = 1  # row 0: x-links join its four pixels
    affs[0, 1, 0] = 1  # (1, 0) linked to (0, 0) along y
    frags = fragments_2d(affs)
    assert frags.shape == (3, 4)
    assert len(np.unique(frags[0])) == 1 and frags[1, 0] == frags[0, 0]
    # every other pixel alone: 12 pixels - 5 joined + 1
    assert len(np.unique(frags)) == 8


def test_boundary_convention_scores_membrane_on_neither_side():
    gt = membrane_cells()
    t = affinity.affinities_from_labels(gt, OFFSETS)[0]
    boundary = evaluate_2d(t, gt, OFFSETS, background="boundary")
    assert boundary["voi"] < 0.01 and boundary["arand"] < 0.01
    assert boundary["n_true"] == 16 and boundary["dic"] == 0 and boundary["aji"] > 0.95
    # the nuclei convention on the same labels makes the membrane a region and the
    # largest segment background: the instance measures then fall
    instance = evaluate_2d(t, gt, OFFSETS, background="instance")
    assert instance["aji"] < boundary["aji"]
    with pytest.raises(ValueError, match="background"):
        evaluate_2d(t, gt, OFFSETS, background="membrane")


def test_reference_scores_2d_floors_below_ceiling():
    gt = membrane_cells()
    rows = {r["name"]: r for r in reference_scores_2d([gt, gt[::-1]], OFFSETS, background="boundary")}
    assert rows["one object"]["voi_split"] == 0 and rows["one object"]["voi_merge"] > 3.5  # log2(16) = 4
    assert rows["every pixel alone"]["voi_merge"] == 0
    ceiling = rows["ground-truth targets + noise (ceiling)"]
    assert ceiling["voi"] < 0.1 < rows["one object"]["voi"]
    assert ceiling["aji"] > rows["one object"]["aji"] + 0.5


def test_read_isbi2012_layout(tmp_path):
    import tifffile

    gt = membrane_cells((32, 32), 16)
    labels = np.stack([(gt > 0) * 255, (gt.T > 0) * 255]).astype(np.uint8)
    tifffile.imwrite(tmp_path / "train-volume.tif", np.zeros((2, 32, 32), np.uint8))
    tifffile.imwrite(tmp_path / "train-labels.tif", labels)
    raw, lab = data.read_isbi2012(tmp_path)
    assert raw.shape == lab.shape == (2, 32, 32)
    assert len(np.unique(lab[0])) == 5 and len(np.unique(lab[1])) == 5  # 4 cells + membrane per section
    assert not set(np.unique(lab[0])[1:]) & set(np.unique(lab[1])[1:])  # ids unique over the stack
    tifffile.imwrite(tmp_path / "train-labels.tif", labels // 2)
    with pytest.raises(data.DataFormatError, match="train-labels.tif.*0 \\(membrane\\) and 255"):
        data.read_isbi2012(tmp_path)
    (tmp_path / "train-labels.tif").unlink()
    with pytest.raises(FileNotFoundError, match="train-labels.tif"):
        data.read_isbi2012(tmp_path)


@pytest.mark.real_data
def test_isbi2012_instrument_sees(isbi_dir):
    """Acceptance (#38): noisy ground-truth targets of the ISBI test sections through
    the 2D pipeline score VOI <= 0.5, ARAND <= 0.1 and |DiC| <= 10 % of the cells,
    and the floors stand far below."""
    coll = data.load_image_collection(isbi_dir)
    assert coll.background == "boundary" and len(coll.train_labels) == 24 and len(coll.test_labels) == 6
    noisy = [affinity.noisy_targets(g, OFFSETS, widen=False, seed=i) for i, g in enumerate(coll.test_labels)]
    scores = evaluate_2d_many(noisy, coll.test_labels, OFFSETS, background="boundary")
    assert scores["voi"] <= 0.5 and scores["arand"] <= 0.1
    assert all(s["dic"] <= 0.1 * s["n_true"] for s in scores["per_image"])
    rows = {r["name"]: r for r in reference_scores_2d(coll.test_labels[:2], OFFSETS, background="boundary")}
    assert rows["one object"]["voi"] > 3 and rows["one object"]["arand"] > 0.5
    assert rows["ground-truth targets + noise (ceiling)"]["aji"] > 0.8 > rows["one object"]["aji"]


@pytest.mark.real_data
def test_nuclei_instrument_sees(nuclei_dir):
    """The same floors and ceiling on the shared nuclei image, label 0 a region (the
    dark background): noisy ground-truth targets score near perfect, one object far off."""
    d = data.load_image(str(nuclei_dir))
    rows = {r["name"]: r for r in reference_scores_2d([d.labels], OFFSETS, background="instance")}
    ceiling = rows["ground-truth targets + noise (ceiling)"]
    assert ceiling["aji"] > 0.95 and ceiling["voi"] < 0.1 and ceiling["dic"] <= 0.05 * ceiling["n_true"]
    assert rows["one object"]["aji"] < 0.05 and rows["one object"]["voi"] > 5
