"""Reference runs: the driver, the weights-only export, and the committed runs
under data/reference/ that notebooks 03 and 05 load."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from affcons_lib.training import checkpoint
from affcons_lib import cli
from affcons_lib.companion import reference
from affcons_lib.data import make_em_volume
from affcons_lib.training.config import METHODS

TINY = ["widths=4,8", "patch=4,32,32", "batch=1", "dataset=synthetic", "val_every=1", "iterations=2",
        "snapshot_iters=1,2"]


def test_weights_parameter_is_checked():
    assert reference.use_reference("reference") and not reference.use_reference("train")
    with pytest.raises(ValueError, match="weights: expected one of"):
        reference.use_reference("trained")
    with pytest.raises(ValueError, match="method"):
        reference.reference_weights("crack")


def test_missing_reference_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="make reference"):
        reference.reference_weights("crac", root=tmp_path)


def test_driver_trains_and_exports_without_optimiser(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFCONS_RUNS_DIR", str(tmp_path / "runs"))
    out = tmp_path / "reference"
    assert cli.main(["reference", "--out", str(out), "--methods", "crac", *sum((["--set", t] for t in TINY), [])]) == 0
    dest = out / "crac"
    nets, cfg, ckpt = checkpoint.load_checkpoint(reference.reference_weights("crac", root=out))
    assert set(nets) == {"embedding", "affinity"} and cfg.iterations == 2
    assert "optimizer" not in ckpt and "torch_rng" not in ckpt
    full = torch.load(tmp_path / "runs" / "reference" / "crac" / "last.pt", weights_only=False)
    for name, net in nets.items():  # the exported weights are the trained ones
        for k, v in net.state_dict().items():
            assert torch.equal(v, full["models"][name][k])
    assert sorted(p.name for p in dest.glob("snapshot_*.pt")) == ["snapshot_0000001.pt", "snapshot_0000002.pt"]
    assert list(pd.read_csv(dest / "validation.csv").iteration) == [1, 2]
    assert yaml.safe_load((dest / "config.yaml").read_text())["method"] == "crac"
    summary = json.loads((dest / "summary.json").read_text())  # no paths of this machine
    assert summary["weights"] == "weights.pt" and summary["iterations"] == 2
    assert {"commit", "cpu", "torch", "native_bf16"} <= set(summary["provenance"])  # what made it
    for name in ("summary.json", "config.yaml"):
        assert str(tmp_path) not in (dest / name).read_text(), name
    assert cfg.out_dir == "runs/reference/crac"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["03_entropy_maps.ipynb", "05_cpsn.ipynb"])
def test_notebooks_run_on_reference_weights(name, tmp_path, monkeypatch):
    """weights="reference": notebooks 03 and 05 take the reference crac run (here a
    tiny one made for the test) instead of training their own."""
    import json
    from pathlib import Path

    import papermill as pm

    monkeypatch.setenv("AFFCONS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("AFFCONS_FIGURES_DIR", str(tmp_path / "figures"))
    monkeypatch.setenv("AFFCONS_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("AFFCONS_STATIC", "1")
    monkeypatch.setenv("AFFCONS_REFERENCE_DIR", str(tmp_path / "reference"))
    assert cli.main(["reference", "--out", str(tmp_path / "reference"), "--methods", "crac",
                           *sum((["--set", t] for t in TINY), [])]) == 0
    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    params = {**yaml.safe_load((notebooks / "smoke.yaml").read_text())[name], "weights": "reference"}
    out = tmp_path / name
    pm.execute_notebook(str(notebooks / name), str(out), parameters=params, cwd=str(notebooks),
                        progress_bar=False, kernel_name="python3")
    cells = json.loads(out.read_text())["cells"]
    text = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                   for c in cells for o in c.get("outputs", []))
    assert not [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not (tmp_path / "runs" / "05_cpsn" / "segmentation").exists()  # no bank trained here
    assert not (tmp_path / "runs" / "03_entropy" / "3d").exists()  # no 3D run trained here
    if name.startswith("03"):
        assert "reference weights crac: 2 iterations" in text


def test_learning_curves_read_every_method(tmp_path):
    for method, rows in (("crac", "100,2.5\n200,2.0\n"), ("sparse_only", "200,3.0\n100,3.5\n")):
        (tmp_path / method).mkdir()
        (tmp_path / method / "validation.csv").write_text("iteration,val_voi\n" + rows)
    table = reference.learning_curves(tmp_path)
    assert list(table.columns) == ["method", "iteration", "val_voi"]
    assert table.values.tolist() == [["crac", 100, 2.5], ["crac", 200, 2.0],
                                     ["sparse_only", 100, 3.5], ["sparse_only", 200, 3.0]]
    with pytest.raises(FileNotFoundError, match="make reference"):
        reference.learning_curves(tmp_path / "empty")


@pytest.mark.parametrize("method", METHODS)
def test_committed_reference_runs_match_their_config(method):
    """The runs under data/reference/ are what data/reference/config.yaml makes:
    small weights of the right method, trained to the end, with their curves."""
    import dataclasses

    root = reference.REFERENCE_DIR
    dest = root / method
    nets, cfg, _ = checkpoint.load_checkpoint(reference.reference_weights(method, root=root))
    assert cfg.method == method
    for key, value in yaml.safe_load((root / "config.yaml").read_text()).items():
        got = getattr(cfg, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    exported = yaml.safe_load((dest / "config.yaml").read_text())
    loaded = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    assert exported == {k: v for k, v in loaded.items() if k in exported}
    # keys added to TrainConfig after the export load as the runs had them: today's defaults
    defaults = {f.name: f.default for f in dataclasses.fields(type(cfg))}
    assert all(loaded[k] == defaults[k] for k in set(loaded) - set(exported)), set(loaded) - set(exported)
    curve = pd.read_csv(dest / "validation.csv")
    assert list(curve.iteration) == list(range(cfg.val_every, cfg.iterations + 1, cfg.val_every))
    assert curve.drop(columns="iteration").notna().all().all()
    assert (dest / "weights.pt").stat().st_size < 2_000_000  # small enough to commit
    if method == "crac":
        assert set(nets) == {"embedding", "affinity"}
        assert sorted(p.name for p in dest.glob("snapshot_*.pt")) == [f"snapshot_{t:07d}.pt" for t in
                                                                      sorted(cfg.snapshot_iters)]


@pytest.mark.slow
def test_paired_export_round_trip_and_notebook_shows_it(tmp_path, monkeypatch, smoke_runs):
    """make reference-paired: notebook 01 run (here at smoke scale, the run
    tests/test_notebooks.py checks), exported without optimiser or machine paths, read
    back as Claim records marked 'reference', with every field notebook 01 shows; and
    the smoke run itself, a reader's run, showed the committed paired runs' verdict and
    drew their paired plots (Figure 1.5)."""
    import matplotlib

    matplotlib.use("Agg")
    from pathlib import Path

    import matplotlib.pyplot as plt

    from affcons_lib.companion import viz

    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    params = yaml.safe_load((notebooks / "smoke.yaml").read_text())["01_training.ipynb"]
    smoke, done = smoke_runs["01_training.ipynb"]
    assert done.returncode == 0, done.stderr[-3000:]
    # the smoke run showed the committed paired runs (data/reference/paired/), as a reader's run does
    shown = "".join("".join(o.get("text", "")) for c in json.loads((smoke / "01_training.ipynb").read_text())["cells"]
                    for o in c.get("outputs", []))
    assert reference.paired_results()[2]["central"] in shown
    assert (smoke / "figures" / "01_reference_pairs.png").is_file()
    work = smoke / "work"
    monkeypatch.setenv("AFFCONS_REFERENCE_DIR", str(tmp_path / "reference"))
    with pytest.raises(FileNotFoundError, match="make reference-paired"):
        reference.paired_results()
    assert cli.main(["reference", "--out", str(tmp_path / "reference"), "--export-paired", str(work),
                           "--parameters", json.dumps(params)]) == 0
    scores, claims, record = reference.paired_results()
    trained = json.loads((work / "results" / "01_claims.json").read_text())
    assert [c.as_record() for c in claims] == [{**c, "source": "reference"} for c in trained["claims"]]
    assert record["parameters"] == params and record["central"].endswith(trained["central"].split(" train). ")[1])
    assert sorted(zip(scores.method, scores.seed)) == sorted((m, s) for m in params["methods"] for s in params["seeds"])
    dest = tmp_path / "reference" / "paired"
    for f in dest.rglob("*"):
        if f.suffix in (".json", ".csv"):
            assert str(tmp_path) not in f.read_text() and str(smoke) not in f.read_text(), f
    nets, cfg, ckpt = checkpoint.load_checkpoint(dest / "crac_seed0" / "weights.pt")
    assert "optimizer" not in ckpt and set(nets) == {"embedding", "affinity"}
    # what notebook 01's paired-runs cell reads of an export, and its Figure 1.5 drawn from it
    assert {"training_minutes", "precision", "floors", "reference_scores"} <= set(record)
    plt.close(viz.paired_panels(scores.to_dict("records"), params["methods"], record["floors"],
                                record["reference_scores"]))
    # another setting beside it (make reference-paired PAIRED_NAME=...)
    assert cli.main(["reference", "--out", str(tmp_path / "reference"), "--export-paired", str(work),
                     "--paired-name", "paired_long", "--parameters", json.dumps(params)]) == 0
    assert (tmp_path / "reference" / "paired_long" / "scores.csv").read_text() == (dest / "scores.csv").read_text()


def test_instrument_table_on_known_inputs():
    """The instrument's record: floors above everything, noisy targets near the ceiling,
    every affinity 1 is one object, and the mutex watershed leaves all-0 voxels alone."""
    _, gt = make_em_volume((12, 48, 48), anisotropy=1.0, seed=3)
    rows = {(r["method"], r["input"]): r for r in reference.instrument_table(gt)}
    for method in ("waterz", "mutex_watershed"):
        one = rows[method, "one object (floor)"]["voi"]
        assert rows[method, "every affinity 1"]["voi"] == pytest.approx(one)
        assert rows[method, "every voxel alone (floor)"]["voi"] > one
        assert rows[method, "noisy targets, unwidened labels"]["voi"] < 0.5 < one
        assert rows[method, "ground-truth targets, widened borders (ceiling)"]["voi"] < one
    assert rows["mutex_watershed", "every affinity 0"]["voi_split"] > rows["waterz", "every affinity 0"]["voi_split"]
