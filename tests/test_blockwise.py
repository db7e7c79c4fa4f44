"""Blockwise prediction and segmentation with daisy: equal to the in-memory
results, resumable after a kill, clear errors on bad input."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from affcons_lib.method import affinity
from affcons_lib.segmentation import agglomeration, fragments, postprocess
from affcons_lib.blockwise import predict as blockwise_predict, score as blockwise_score, segment as blockwise_segment
from affcons_lib.data import open_volume
from affcons_lib import data
from affcons_lib.segmentation.recipe import Recipe
from affcons_lib.evaluation import evaluate, metrics
from affcons_lib.training import inference, train
from affcons_lib.training.checkpoint import load_checkpoint
from affcons_lib.training.config import load_config
from affcons_lib.training.sampling import prepare_data
from affcons_lib.companion.reference import noisy_targets

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    cfg = load_config(None, ["widths=4,8", "patch=4,32,32", "dataset=synthetic", "iterations=2",
                                   f"out_dir={out}", "progress=false"])
    train.train(cfg)
    return out / "last.pt"


@pytest.fixture(scope="module")
def raw_h5(tmp_path_factory):
    raw, _ = data.make_em_volume((24, 100, 140), n_neurites=10, seed=1)
    raw = (raw * 200 + 20).astype(np.uint8)
    path = tmp_path_factory.mktemp("raw") / "raw.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("volumes/raw", data=raw, chunks=(8, 64, 64))
    return path, raw


def _in_memory(checkpoint, raw, result):
    nets, cfg, _ = load_checkpoint(checkpoint)
    lo, hi = result["raw_range"]
    scaled = np.clip((raw.astype(np.float32) - lo) / (hi - lo), 0, 1)
    return inference.predict_affinities(nets["embedding"], scaled, affinity.OFFSETS_3D, tile=tuple(result["tile"]),
                                        stride=tuple(result["stride"]), with_entropy=False)


def test_blockwise_prediction_equals_in_memory(checkpoint, raw_h5, tmp_path):
    path, raw = raw_h5
    result = blockwise_predict.predict_blockwise(checkpoint, f"{path}:volumes/raw", tmp_path / "affs.zarr",
                                         block=(8, 48, 48), tile=(8, 32, 32), workers=2)
    assert result["blocks"]["predict"] == {"blocks": 27, "done": 27, "skipped": 0}
    assert result["peak_mb_worker"] > 50 and result["peak_mb_main"] > 50  # noted by the workers themselves
    got = zarr.open_array(str(tmp_path / "affs.zarr"))
    assert got.chunks == (12, 8, 48, 48) and got.attrs["offsets"] == [list(o) for o in affinity.OFFSETS_3D]
    np.testing.assert_allclose(got[:], _in_memory(checkpoint, raw, result), atol=1e-6)


def test_blockwise_prediction_reads_zarr_too(checkpoint, raw_h5, tmp_path):
    _, raw = raw_h5
    zarr.create_array(store=str(tmp_path / "raw.zarr"), data=raw, chunks=(8, 64, 64))
    result = blockwise_predict.predict_blockwise(checkpoint, tmp_path / "raw.zarr", tmp_path / "affs.zarr",
                                         block=(24, 64, 64), tile=(8, 32, 32), workers=0, raw_range=(30, 217))
    assert result["raw_range"] == [30, 217]
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "affs.zarr"))[:], _in_memory(checkpoint, raw, result),
                               atol=1e-6)


def _chunk_files(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file() and "c" in p.relative_to(path).parts[:1])


def test_killed_blockwise_prediction_resumes(checkpoint, raw_h5, tmp_path):
    path, raw = raw_h5
    out = tmp_path / "affs.zarr"
    cmd = [sys.executable, "-m", "affcons_lib", "predict", str(checkpoint), "--blockwise", "--raw",
           f"{path}:volumes/raw", "--out", str(out), "--block", "8", "32", "32", "--tile", "8", "32", "32",
           "--workers", "1", "--raw-range", "30", "217"]
    proc = subprocess.Popen(cmd, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline, killed = time.time() + 120, False
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and _chunk_files(out) >= 6:
            os.killpg(proc.pid, signal.SIGKILL)  # the scheduler and its workers
            proc.wait()
            killed = True
            break
        time.sleep(0.02)
    if not killed:
        pytest.skip("the run finished before it could be killed mid-way (machine too fast)")
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    counts = json.loads(rerun.stdout)["blocks"]["predict"]
    assert counts["skipped"] >= 1 and counts["done"] + counts["skipped"] == counts["blocks"] == 60
    result = json.loads(rerun.stdout)
    np.testing.assert_allclose(zarr.open_array(str(out))[:], _in_memory(checkpoint, raw, result), atol=1e-6)


@pytest.fixture(scope="module")
def em_affs(tmp_path_factory):
    _, labels = data.make_em_volume((32, 256, 256), n_neurites=50, seed=2)
    labels = affinity.widen_borders(labels)
    affs, _ = affinity.affinities_from_labels(labels, affinity.OFFSETS_3D[:3])
    rng = np.random.default_rng(0)
    affs = np.clip(0.1 + 0.8 * affs + rng.normal(0, 0.15, affs.shape), 0, 1).astype(np.float32)
    path = tmp_path_factory.mktemp("affs") / "affs.zarr"
    zarr.create_array(store=str(path), data=affs, chunks=(3, 32, 128, 128))
    return path, affs


def test_graph_agglomeration_equals_waterz_without_ties():
    """The library's agglomeration is waterz's: on affinities without ties (no
    clipping) and mean scoring, the same segmentation at every threshold. (With
    ties -- clipped values, or the 256 levels of a median -- the two merge equal
    scores in other orders.)"""
    _, labels = data.make_em_volume((16, 96, 96), n_neurites=12, seed=2)
    target, _ = affinity.affinities_from_labels(affinity.widen_borders(labels), affinity.OFFSETS_3D[:3])
    noisy = 0.1 + 0.8 * target + np.random.default_rng(0).normal(0, 0.15, target.shape)
    affs = (1 / (1 + np.exp(-6 * (noisy - 0.5)))).astype(np.float32)
    frags = fragments.fragments(affs)
    ours = agglomeration.agglomerate_fragments(affs, frags, [0.3, 0.5, 0.7], scoring="mean")
    theirs = postprocess.agglomerate(affs, [0.3, 0.5, 0.7], scoring="mean", fragments=frags)
    for a, b in zip(ours, theirs):
        assert metrics.voi(a, b) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert len(np.unique(ours[0])) > len(np.unique(ours[2])) > 1  # the thresholds do differ


def test_whole_volume_block_equals_in_memory_recipe(em_affs, tmp_path):
    """One block: the blockwise path is the in-memory recipe, exactly."""
    path, affs = em_affs
    blockwise_segment.segment_blockwise(path, tmp_path / "seg", threshold=0.5, block=affs.shape[1:], workers=0)
    seg = zarr.open_array(str(tmp_path / "seg" / "segmentation"))[:]
    ref = evaluate.segment_3d(affs, threshold=0.5)
    assert metrics.voi(seg, ref) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_blockwise_segmentation_equals_in_memory(em_affs, tmp_path):
    """Eight blocks (chains cross their faces): the fragments are the whole
    volume's exactly, and so is the segmentation (median scoring)."""
    path, affs = em_affs
    result = blockwise_segment.segment_blockwise(path, tmp_path / "seg", threshold=0.5, block=(16, 128, 128),
                                         context=(0, 64, 64), workers=2)
    assert result["blocks"]["fragments"]["blocks"] == 8 and result["blocks"]["edges"]["done"] == 8
    assert result["context"][0] == fragments.context()[0]  # raised to what the fragments need
    assert result["exits"] > 0
    ends = zarr.open_array(str(tmp_path / "seg" / "fragments"))[:]
    ex = np.load(tmp_path / "seg" / "exits.npz")
    np.testing.assert_array_equal(fragments.look_up(ends, ex["ids"], ex["roots"]),
                                  fragments.fragments(affs, sequential=False))
    seg = zarr.open_array(str(tmp_path / "seg" / "segmentation"))[:]
    assert metrics.voi(seg, evaluate.segment_3d(affs, threshold=0.5)) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert (seg > 0).all()
    # a second run finds everything done (in this process: the tracking is the workers' count-free record)
    again = blockwise_segment.segment_blockwise(path, tmp_path / "seg", threshold=0.5, block=(16, 128, 128),
                                                context=(0, 64, 64), workers=0)
    assert all(c["done"] == 0 and c["skipped"] == c["blocks"] for c in again["blocks"].values())
    # another context would mix two fragment layouts in one output: refused, naming it; overwrite starts afresh
    with pytest.raises(ValueError, match=r"seg/fragments: exists, made with other settings \(context: \[21, 64, 64\]"):
        blockwise_segment.segment_blockwise(path, tmp_path / "seg", threshold=0.5, block=(16, 128, 128), context=(0, 32, 32),
                                    workers=0)
    fresh = blockwise_segment.segment_blockwise(path, tmp_path / "seg", threshold=0.5, block=(16, 128, 128),
                                        context=(0, 32, 32), workers=0, overwrite=True)
    assert fresh["blocks"]["fragments"]["done"] == 8


def test_region_graph_counts_each_boundary_edge_once():
    frag = np.array([[[1, 1, 2], [1, 3, 2]]], dtype=np.uint64)  # (1, 2, 3)
    affs = np.ones((3,) + frag.shape, np.float32) * 0.5
    u, v, sums, counts = agglomeration.region_graph(frag, affs)
    got = {(int(a), int(b)): int(c) for a, b, c in zip(u, v, counts)}
    assert got == {(1, 2): 1, (1, 3): 2, (2, 3): 1}
    np.testing.assert_allclose(sums, 0.5 * counts)


def test_region_graphs_of_blocks_with_margins_add_up_to_the_whole():
    rng = np.random.default_rng(0)
    frag = rng.integers(0, 6, (4, 9, 11)).astype(np.uint64)  # 0: background, no edges
    affs = rng.random((3,) + frag.shape).astype(np.float32)

    def as_dict(u, v, s, c, into=None):
        into = {} if into is None else into
        for a, b, x, n in zip(u.tolist(), v.tolist(), s.tolist(), c.tolist()):
            old = into.get((a, b), (0.0, 0))
            into[(a, b)] = (old[0] + x, old[1] + n)
        return into

    whole = as_dict(*agglomeration.region_graph(frag, affs))
    pooled = as_dict(*agglomeration.region_graph(frag[:, :, :5], affs[:, :, :, :5]))
    as_dict(*agglomeration.region_graph(frag[:, 3:, 4:], affs[:, :, 4:, 5:], interior=(0, 1, 1)), pooled)
    as_dict(*agglomeration.region_graph(frag[:, :4, 4:], affs[:, :, :4, 5:], interior=(0, 0, 1)), pooled)
    assert whole.keys() == pooled.keys() and all(0 not in k for k in whole)
    for k in whole:
        assert pooled[k][1] == whole[k][1] and pooled[k][0] == pytest.approx(whole[k][0])


def test_bad_input(checkpoint, raw_h5, tmp_path):
    path, raw = raw_h5
    with pytest.raises(FileNotFoundError, match="none.h5"):
        open_volume(tmp_path / "none.h5", "raw")
    with pytest.raises(KeyError, match="volumes/raw"):
        open_volume(path, "volumes/nothing")
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f["img"] = np.zeros((10, 10), np.uint8)
    with pytest.raises(ValueError, match="expected a 3D volume"):
        open_volume(tmp_path / "flat.h5", "img")
    with pytest.raises(ValueError, match="block"):
        blockwise_predict.predict_blockwise(checkpoint, f"{path}:volumes/raw", tmp_path / "a.zarr", block=(8, 0, 8))
    zarr.create_array(store=str(tmp_path / "taken.zarr"), shape=(12, 5, 5, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="taken.zarr: exists with shape"):
        blockwise_predict.predict_blockwise(checkpoint, f"{path}:volumes/raw", tmp_path / "taken.zarr", block=(8, 32, 32),
                                    tile=(8, 32, 32), workers=0)
    # a rerun with another raw range (or checkpoint, tiling) would mix two predictions: refused, naming it
    # (on one block of the volume: the refusal does not depend on its size)
    with h5py.File(tmp_path / "one_block.h5", "w") as f:
        f["raw"] = raw[:8, :32, :32]
    one_block = f"{tmp_path / 'one_block.h5'}:raw"
    first = dict(block=(8, 32, 32), tile=(8, 32, 32), workers=0)
    blockwise_predict.predict_blockwise(checkpoint, one_block, tmp_path / "p.zarr", raw_range=(30, 217), **first)
    with pytest.raises(ValueError, match=r"p.zarr: exists, made with other settings \(raw_range: \[30, 217\] -> \[0, 255\]"):
        blockwise_predict.predict_blockwise(checkpoint, one_block, tmp_path / "p.zarr", raw_range=(0, 255), **first)
    again = blockwise_predict.predict_blockwise(checkpoint, one_block, tmp_path / "p.zarr", raw_range=(0, 255),
                                                overwrite=True, **first)
    assert again["blocks"]["predict"]["skipped"] == 0
    with pytest.raises(ValueError, match="threshold"):
        blockwise_segment.segment_blockwise(tmp_path / "taken.zarr", tmp_path / "s", threshold=1.5)
    r = subprocess.run([sys.executable, "-m", "affcons_lib", "blockwise", "segment", str(tmp_path / "none.zarr"),
                        "--out", str(tmp_path / "s")], capture_output=True, text=True, env=ENV)
    assert r.returncode == 2 and "none.zarr" in r.stderr


def reference_agglomeration(n_nodes, u, v, sums, counts, threshold):
    """The obvious version: regions as sets, boundaries as a dict of (sum, count)
    per pair of regions, the lowest score merged first, everything recomputed."""
    region = {i: i for i in range(n_nodes)}
    members = {i: {i} for i in range(n_nodes)}
    stats = {}
    for a, b, s, c in zip(u, v, sums, counts):
        stats[frozenset((int(a), int(b)))] = [float(s), float(c)]
    while stats:
        pair, (s, c) = min(stats.items(), key=lambda kv: 1.0 - kv[1][0] / kv[1][1])
        if 1.0 - s / c >= threshold:
            break
        a, b = tuple(pair)
        del stats[pair]
        for other in list(stats):
            if b in other:
                (n,) = other - {b}
                moved = stats.pop(other)
                mine = stats.setdefault(frozenset((a, n)), [0.0, 0.0])
                mine[0] += moved[0]
                mine[1] += moved[1]
        for x in members.pop(b):
            region[x] = a
            members[a].add(x)
    return np.array([region[i] for i in range(n_nodes)])


@pytest.mark.parametrize("seed", range(8))
def test_graph_agglomeration_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    pairs = {tuple(sorted(p)) for p in rng.integers(0, n, (3 * n, 2)).tolist() if p[0] != p[1]}
    u, v = np.array(sorted(pairs)).T
    counts = rng.integers(1, 20, len(u))
    sums = counts * rng.random(len(u))  # mean affinities in [0, 1), no ties
    threshold = float(rng.uniform(0.2, 0.9))
    got = agglomeration.agglomerate_graph(n, u, v, sums, counts, threshold)
    ref = reference_agglomeration(n, u, v, sums, counts, threshold)
    assert metrics.voi(got + 1, ref + 1) == pytest.approx((0.0, 0.0), abs=1e-12)


def test_graph_agglomeration_bad_input():
    with pytest.raises(ValueError, match="one length"):
        agglomeration.agglomerate_graph(3, [0], [1, 2], [0.5], [1], 0.5)
    with pytest.raises(ValueError, match="distinct node ids"):
        agglomeration.agglomerate_graph(3, [0], [3], [0.5], [1], 0.5)
    with pytest.raises(ValueError, match="positive edge counts"):
        agglomeration.agglomerate_graph(3, [0], [1], [0.5], [0], 0.5)


def test_launched_workers_give_the_same_segmentation(em_affs, tmp_path):
    """Workers started by a launcher command (here ``env``; on a cluster ``srun
    ...``) connect back to the scheduler and process the blocks as the scheduler's
    own process does (daisy's worker processes give that too:
    test_blockwise_segmentation_equals_in_memory)."""
    path, affs = em_affs
    small = tmp_path / "small.zarr"
    zarr.create_array(store=str(small), data=affs[:, :16, :96, :96], chunks=(3, 8, 48, 48))
    own = blockwise_segment.segment_blockwise(small, tmp_path / "own", block=(8, 48, 48), workers=0)
    launched = blockwise_segment.segment_blockwise(small, tmp_path / "launched", block=(8, 48, 48), workers=1, launcher="env")
    assert launched["blocks"]["fragments"]["done"] == own["blocks"]["fragments"]["blocks"] == 8
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "launched" / "segmentation"))[:],
                                  zarr.open_array(str(tmp_path / "own" / "segmentation"))[:])
    with pytest.raises(ValueError, match="launcher='env': launched workers need workers >= 1"):
        blockwise_segment.segment_blockwise(small, tmp_path / "serial", block=(8, 48, 48), workers=0, launcher="env")


def _noisy_targets(gt, widen):
    """The instrument's noisy targets (``reference.noisy_targets``), nearest-neighbour channels."""
    return noisy_targets(gt, widen)[:3]


def _blockwise_matches_the_instrument(gt, block, tmp_path, scored=None):
    """Noisy ground-truth targets, widened and not, through the blockwise path
    with its defaults and scored block by block, against evaluate_3d in memory
    (``scored``: {widen: (targets, their evaluate_3d scores)} when already computed)."""
    labels = tmp_path / "labels.zarr"
    zarr.create_array(store=str(labels), data=gt, chunks=block)
    for widen in (False, True):
        affs, ref = scored[widen] if scored else (_noisy_targets(gt, widen), None)
        affs = affs[:3]  # the recipe reads the nearest-neighbour channels
        store = tmp_path / f"affs_{widen}.zarr"
        zarr.create_array(store=str(store), data=affs, chunks=(3,) + tuple(block))
        blockwise_segment.segment_blockwise(store, tmp_path / f"seg_{widen}", block=block, workers=0)
        got = blockwise_score.evaluate_blockwise(tmp_path / f"seg_{widen}", str(labels))
        ref = ref if ref is not None else evaluate.evaluate_3d(affs, gt)
        assert got["voi"] <= 0.5, (widen, got["voi_split"], got["voi_merge"])
        assert abs(got["voi"] - ref["voi"]) <= 0.05, (widen, got["voi"], ref["voi"])
        assert [r["threshold"] for r in got["rows"]] == list(ref["recipe"]["thresholds"])
        # the same recipe, so the same numbers, threshold by threshold
        np.testing.assert_allclose([r["voi"] for r in got["rows"]], [r["voi"] for r in ref["rows"]], atol=1e-9)


def test_blockwise_scores_as_the_instrument_on_a_generated_volume(tmp_path):
    _, gt = data.make_em_volume((50, 100, 200), n_neurites=20, anisotropy=1.0, seed=5)
    _blockwise_matches_the_instrument(gt, (25, 50, 100), tmp_path)


@pytest.mark.real_data
@pytest.mark.slow
def test_blockwise_scores_as_the_instrument_on_the_fibsem_test_part(fibsem_test_part_noisy, tmp_path):
    gt, scored = fibsem_test_part_noisy
    _blockwise_matches_the_instrument(gt, (25, 125, 125), tmp_path, scored)


def test_evaluate_command_scores_a_blockwise_segmentation(tmp_path):
    _, gt = data.make_em_volume((16, 64, 64), n_neurites=8, anisotropy=1.0, seed=1)
    with h5py.File(tmp_path / "gt.h5", "w") as f:
        f.create_dataset("labels", data=gt)
    zarr.create_array(store=str(tmp_path / "affs.zarr"), data=_noisy_targets(gt, False), chunks=(3, 8, 32, 32))
    blockwise_segment.segment_blockwise(tmp_path / "affs.zarr", tmp_path / "seg", block=(8, 32, 32), workers=0)
    cmd = [sys.executable, "-m", "affcons_lib", "evaluate", "--segmentation", str(tmp_path / "seg"), "--labels",
           f"{tmp_path / 'gt.h5'}:labels", "--json", str(tmp_path / "scores.json")]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["voi"] < 0.5 and len(scores["rows"]) == 9
    # the written segmentation (one threshold) scores as its row of the sweep
    one = blockwise_score.evaluate_blockwise(tmp_path / "seg" / "segmentation", gt)
    row = next(r for r in scores["rows"] if r["threshold"] == 0.5)
    assert one["voi"] == pytest.approx(row["voi"], abs=1e-9)
    bad = subprocess.run(cmd[:6] + ["--labels", f"{tmp_path / 'gt.h5'}:nothing"], capture_output=True, text=True,
                         env=ENV, timeout=300)
    assert bad.returncode == 2 and "nothing" in bad.stderr
    no_labels = subprocess.run(cmd[:6], capture_output=True, text=True, env=ENV, timeout=300)
    assert no_labels.returncode == 2 and "--labels" in no_labels.stderr


def test_blockwise_prediction_tiles_as_predict_part(checkpoint, tmp_path):
    """Default tiles: predict_part's (one tile per plane, the plane padded by
    reflection to a multiple of the network's divisor), so the same network gives
    the same affinities in memory and blockwise."""
    raw, _ = data.make_em_volume((12, 69, 91), n_neurites=6, seed=4)  # odd: no divisor divides them
    raw = (raw * 200 + 20).astype(np.uint8)
    zarr.create_array(store=str(tmp_path / "raw.zarr"), data=raw, chunks=(6, 35, 45))
    result = blockwise_predict.predict_blockwise(checkpoint, tmp_path / "raw.zarr", tmp_path / "affs.zarr",
                                         block=(6, 35, 45), workers=0, raw_range=(20, 220))
    nets, cfg, _ = load_checkpoint(checkpoint)
    tile, stride = inference.part_tiling(raw.shape, cfg.patch, nets["embedding"].divisor)
    assert tuple(result["tile"]) == tile and tile[1] > 69 and tile[2] > 91  # covered: padded, not cut
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "affs.zarr"))[:], _in_memory(checkpoint, raw, result),
                               atol=1e-6)
    np.testing.assert_array_equal(blockwise_predict.read_reflected(raw, (slice(0, 12), slice(60, 80), slice(80, 96))),
                                  np.pad(raw, ((0, 0), (0, 11), (0, 5)), mode="reflect")[:, 60:80, 80:96])


@pytest.mark.real_data
@pytest.mark.slow
def test_trained_network_blockwise_equals_its_in_memory_evaluation(tmp_path):
    """The reference crac network on a quarter of the shared test part: blockwise prediction,
    segmentation and block-by-block scores against predict_part + evaluate_3d."""
    from affcons_lib.training import predict
    from affcons_lib.companion import reference

    weights = reference.reference_weights("crac")
    _, cfg, _ = load_checkpoint(weights)
    prepared = prepare_data(cfg)
    if "FIB-SEM" not in prepared.source:
        pytest.skip(f"the shared FIB-SEM volume is not here (the run's data: {prepared.source})")
    # a quarter of the test part (25 of 50 sections, half its rows) and two blocks: the same checks
    raw, labels = prepared.raw_test[0][:25, :125], prepared.labels_test[0][:25, :125]
    half = dataclasses.replace(prepared, raw_test=[raw], labels_test=[labels])
    pred = predict.predict_part(weights, prepared=half, with_entropy=False)
    zarr.create_array(store=str(tmp_path / "raw.zarr"), data=raw, chunks=(25, 125, 125))
    zarr.create_array(store=str(tmp_path / "labels.zarr"), data=labels, chunks=(25, 125, 125))
    blockwise_predict.predict_blockwise(weights, tmp_path / "raw.zarr", tmp_path / "affs.zarr", block=(25, 125, 125),
                                workers=0, raw_range=(0.0, 1.0))  # raw as prepare_data scaled it
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "affs.zarr"))[:], pred.affinities[0], atol=1e-4)
    blockwise_segment.segment_blockwise(tmp_path / "affs.zarr", tmp_path / "seg", block=(25, 125, 125), workers=0)
    got = blockwise_score.evaluate_blockwise(tmp_path / "seg", str(tmp_path / "labels.zarr"))
    ref = evaluate.evaluate_3d(pred.affinities[0], labels)
    assert abs(got["voi"] - ref["voi"]) <= 0.05, (got["voi"], ref["voi"])
    one_object = sum(metrics.voi(np.ones_like(labels), metrics.ignore_borders(labels, 1)))
    assert got["voi"] < 0.75 * one_object, (got["voi"], one_object)  # a network the instrument can see


def test_a_sweep_scores_the_scoring_of_the_written_segmentation(tmp_path):
    _, gt = data.make_em_volume((16, 64, 64), n_neurites=8, anisotropy=1.0, seed=2)
    zarr.create_array(store=str(tmp_path / "affs.zarr"), data=_noisy_targets(gt, True), chunks=(3, 8, 32, 32))
    median = blockwise_segment.segment_blockwise(tmp_path / "affs.zarr", tmp_path / "seg", block=(8, 32, 32), workers=0)
    first = blockwise_score.evaluate_blockwise(tmp_path / "seg", gt)
    # a rerun with the mean reuses fragments and edges, keeps its own tables, and is what is scored next
    blockwise_segment.segment_blockwise(tmp_path / "affs.zarr", tmp_path / "seg", block=(8, 32, 32), workers=0,
                                recipe=Recipe(scoring="mean"))
    second = blockwise_score.evaluate_blockwise(tmp_path / "seg", gt)
    assert {r["scoring"] for r in first["rows"]} == {"median"} and {r["scoring"] for r in second["rows"]} == {"mean"}
    assert len(second["rows"]) == len(first["rows"]) == len(median["thresholds"])
    ref = evaluate.evaluate_3d(_noisy_targets(gt, True), gt, scoring="mean")
    np.testing.assert_allclose([r["voi"] for r in second["rows"]], [r["voi"] for r in ref["rows"]], atol=0.05)
