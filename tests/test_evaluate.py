"""The 3D instrument: perfect affinities must score near 0, trivial ones far from it.

Acceptance of the evaluation (issue "The instrument"): noisy ground-truth targets,
``clip(0.9 t + 0.05 + N(0, 0.1))``, border-widened or not, score VOI <= 0.5 through
``evaluate_3d`` with its defaults, by both pipelines; an all-merged and an
all-split prediction score VOI >= 1.5.
"""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from affcons_lib.method import affinity
from affcons_lib import data
from affcons_lib.evaluation import evaluate, metrics
from affcons_lib.data import make_em_volume
from affcons_lib.segmentation.recipe import THRESHOLDS, Recipe
from affcons_lib.companion.reference import noisy_targets


def check_instrument(gt, scored=None):
    """``scored``: {widen: (noisy targets, their evaluate_3d scores by the recipe)}, when
    already computed."""
    for widen in (True, False):
        affs, known = scored[widen] if scored else (noisy_targets(gt, widen), None)
        for method in evaluate.METHODS_3D:
            r = known if known is not None and method == "waterz" else evaluate.evaluate_3d(affs, gt, method=method)
            assert r["voi"] <= 0.5, (widen, method, r["voi_split"], r["voi_merge"])
            assert r["voi"] == pytest.approx(r["voi_split"] + r["voi_merge"])
    # All merged (every affinity 1): one object, so merge = H(gt), the entropy of
    # the body sizes -- >= 1.5 bits whenever no body holds most of the voxels.
    # All split (every affinity 0): no edge links two voxels, nothing can grow.
    for value in (1.0, 0.0):
        affs = np.full((len(affinity.OFFSETS_3D),) + gt.shape, value, np.float32)
        for method in evaluate.METHODS_3D:
            r = evaluate.evaluate_3d(affs, gt, method=method)
            assert r["voi"] >= 1.5, (value, method, r["voi"])
            if value == 1.0:
                assert r["n_segments"] == 1 and r["voi_split"] == pytest.approx(0.0, abs=1e-9)
            elif method == "mutex_watershed":
                assert r["voi_merge"] < 0.1 < 1.5 < r["voi_split"]  # every voxel its own segment


def test_instrument_on_generated_volume():
    """Isotropic neurites (like the FIB-SEM volume): border widening in-plane
    disconnects thin bodies between sections, which only the border tolerance
    forgives; strongly anisotropic generated paths would be cut into pieces no
    affinity pipeline can join (their widened targets are 0 across)."""
    _, gt = make_em_volume((24, 96, 96), anisotropy=1.0, seed=1)
    check_instrument(gt)


@pytest.mark.real_data
@pytest.mark.slow
def test_instrument_on_fibsem_test_part(fibsem_test_part_noisy):
    """The test part the notebooks score: the last 50 slices, whole (250 x 250)."""
    check_instrument(*fibsem_test_part_noisy)


def test_reference_scores_bracket_the_methods():
    _, gt = make_em_volume((16, 64, 64), anisotropy=1.0, seed=2)
    rows = {r["name"]: r for r in evaluate.reference_scores(gt)}
    one, alone, ceiling = rows["one object"], rows["every voxel alone"], rows["ground-truth targets (ceiling)"]
    scored = metrics.ignore_borders(gt, 1)
    assert one["voi_split"] == pytest.approx(0.0, abs=1e-9)
    assert one["voi_merge"] == pytest.approx(metrics.voi(np.ones_like(gt), scored)[1])
    assert alone["voi_merge"] == pytest.approx(0.0, abs=1e-9) and alone["arand"] == pytest.approx(1.0)
    assert ceiling["voi"] < 0.5 * one["voi"]
    # the ceiling runs the same pipeline: other options give other ceilings
    other = {r["name"]: r for r in evaluate.reference_scores(gt, method="mutex_watershed")}
    assert other["ground-truth targets (ceiling)"]["voi"] != ceiling["voi"]


def test_border_tolerance_and_fragments_alone():
    _, gt = make_em_volume((16, 64, 64), anisotropy=1.0, seed=2)
    affs = noisy_targets(gt, widen=True)
    strict = evaluate.evaluate_3d(affs, gt, border_tolerance=0)
    lenient = evaluate.evaluate_3d(affs, gt, border_tolerance=2)
    assert strict["border_tolerance"] == 0 and lenient["border_tolerance"] == 2
    assert lenient["voi"] < strict["voi"]  # the widened rims are where the errors are
    # fragments alone over-segment: agglomeration must improve on them
    assert strict["fragments"]["voi_split"] > strict["voi_split"]
    assert strict["voi"] < strict["fragments"]["voi"]
    assert [r["threshold"] for r in strict["rows"]] == list(THRESHOLDS)


def test_ignore_borders_by_hand():
    gt = np.array([[1, 1, 1, 2, 2, 2],
                   [1, 1, 1, 2, 2, 2],
                   [3, 3, 3, 3, 3, 3]], np.uint32)
    out = metrics.ignore_borders(gt, 1)  # pixels with a 4-neighbour of another label
    np.testing.assert_array_equal(out, [[1, 1, 0, 0, 2, 2],
                                        [0, 0, 0, 0, 0, 0],
                                        [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(metrics.ignore_borders(gt, 0), gt)
    stack = metrics.ignore_borders(np.stack([gt, np.full_like(gt, 5)]), 1)  # per section
    np.testing.assert_array_equal(stack[1], 5)
    with pytest.raises(ValueError, match="width"):
        metrics.ignore_borders(gt, -1)
    with pytest.raises(TypeError, match="gt"):
        metrics.ignore_borders(gt.astype(float), 1)


def test_evaluate_3d_bad_input():
    _, gt = make_em_volume((8, 32, 32), seed=0)
    affs = noisy_targets(gt, widen=False)
    with pytest.raises(ValueError, match="method"):
        evaluate.evaluate_3d(affs, gt, method="watershed")
    with pytest.raises(ValueError, match="affs: expected shape"):
        evaluate.evaluate_3d(affs[:, :4], gt)
    with pytest.raises(ValueError, match="mode"):
        evaluate.evaluate_3d(affs, gt, fragment_mode="iso")


def test_evaluate_command_line_3d(tmp_path):
    _, gt = make_em_volume((12, 48, 48), anisotropy=1.0, seed=4)
    affs = noisy_targets(gt, widen=True)
    pred = tmp_path / "pred.h5"
    with h5py.File(pred, "w") as f:
        f.create_dataset("affinities", data=affs).attrs["offsets"] = np.asarray(affinity.OFFSETS_3D)
        f.create_dataset("labels", data=gt)
    out = tmp_path / "scores.json"
    r = subprocess.run([sys.executable, "-m", "affcons_lib", "evaluate", str(pred), "--method", "mutex_watershed",
                        "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    scores = json.loads(out.read_text())
    direct = evaluate.evaluate_3d(affs, gt, method="mutex_watershed")
    assert scores["voi"] == pytest.approx(direct["voi"])
    names = [row["name"] for row in scores["reference"]]
    assert names == ["one object", "every voxel alone", "ground-truth targets (ceiling)"]
    r = subprocess.run([sys.executable, "-m", "affcons_lib", "evaluate", str(pred), "--fragments", "slab"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--fragments" in r.stderr


def test_affinity_scores_floors_and_ceiling():
    """Perfect affinities: no wrong edge, every cut ranked first; a constant gets
    every cut wrong and ranks at chance (the share of cuts); the unlabeled region
    is the valid edges outside the labeled region."""
    from affcons_lib.method import affinity
    from affcons_lib import data
    from affcons_lib.evaluation import evaluate

    _, labels = data.make_em_volume((8, 64, 64), seed=0)
    target, valid = affinity.affinities_from_labels(affinity.widen_borders(labels), affinity.OFFSETS_3D)
    perfect = evaluate.affinity_scores(target.astype(float), labels, affinity.OFFSETS_3D)
    assert perfect["affinity_error"] == 0 and perfect["boundary_ap"] == 1 and perfect["edges"] == valid.sum()
    flat = evaluate.affinity_scores(np.full(target.shape, 0.7), labels, affinity.OFFSETS_3D)
    assert flat["affinity_error"] == pytest.approx(flat["boundary_share"])
    assert flat["boundary_ap"] == pytest.approx(flat["boundary_share"])
    sparse = data.annotate_instances(labels, "random", fraction=0.3, seed=0)
    unlabeled = valid & ~affinity.labeled_region_mask(sparse, affinity.OFFSETS_3D)
    region = evaluate.affinity_scores(target.astype(float), labels, affinity.OFFSETS_3D, sparse_labels=sparse)
    assert region["edges"] == unlabeled.sum() < valid.sum()
    with pytest.raises(ValueError, match=r"affs: expected shape \(12, 8, 64, 64\)"):
        evaluate.affinity_scores(target[:3].astype(float), labels, affinity.OFFSETS_3D)


def test_recipe_sweep_finds_the_ground_truth_from_its_own_targets():
    """Targets of two touching boxes: some threshold gives them back exactly
    (VOI 0), and that is the one the sweep picks; keep_all keeps one per threshold."""
    gt = np.ones((8, 24, 24), np.uint32)
    gt[:, :, 12:] = 2
    affs = affinity.training_targets(gt, affinity.OFFSETS_3D[:3], widen=False)[0].astype(np.float32)
    recipe = Recipe(border_tolerance=0)
    sweep = evaluate.recipe_sweep(affs, gt, recipe, keep_all=True)
    assert sweep.voi[sweep.best_index] == 0.0 and sweep.arand[sweep.best_index] == 0.0
    assert len(np.unique(sweep.best_segmentation)) == 2
    assert len(sweep.segmentations) == len(recipe.thresholds) == len(sweep.as_rows())
    with pytest.raises(ValueError, match="scored_gt: shape"):
        evaluate.recipe_sweep(affs, gt[:2], recipe)
