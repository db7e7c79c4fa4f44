"""The breadth grids: which runs a declared grid makes, and what its export says,
on made-up score rows (no training)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from affcons_lib.companion import breadth

SPEC = {"base": {"iterations": 2},
        "grids": {"budgets": {"tag": "vol", "data": {"dim": 3}, "budgets": [0.01, 0.1]},
                  "parts": {"tag": "vol", "data": {"dim": 3}, "budget": 0.1,
                            "variants": {"no_filter": {"alpha0": 0.0}}}}}


def test_grid_runs_pair_draws_and_share_runs():
    runs = breadth.grid_runs(SPEC, "budgets")
    assert len(runs) == 10 * (2 * 2 + 1)  # per draw: two budgets x two sparse methods, one dense run
    first = runs[:5]
    assert {r.draw for r in first} == {0} and {r.method for r in first} == {"sparse_only", "crac", "full_supervision"}
    assert dict(runs[0].overrides)["annotation_seed"] == dict(runs[0].overrides)["seed"] == 0
    parts = {r.key for r in breadth.grid_runs(SPEC, "parts")}
    shared = parts & {r.key for r in runs}  # crac, sparse_only at 10 % and the dense runs: trained once for both
    assert shared == {f"{m}_b0.1_{m}_d{d}" for m in ("sparse_only", "crac") for d in range(10)} | \
        {f"full_supervision_dense_full_supervision_d{d}" for d in range(10)}
    with pytest.raises(ValueError, match="grid 'nope'"):
        breadth.grid_runs(SPEC, "nope")


def fake_rows(crac_gain: float, rng) -> list[dict]:
    """Scores where crac closes a known share of the gap: sparse 0.30, dense 0.20."""
    rows = []
    for d in range(10):
        noise = rng.normal(0, 0.002)
        base = dict(test_cut_share=0.35, test_ap=0.6, voi=3.0)
        for budget in (0.01, 0.1):
            rows.append(dict(method="sparse_only", budget=budget, variant="sparse_only", seed=d, test_error=0.30 + noise,
                             **base))
            rows.append(dict(method="crac", budget=budget, variant="crac", seed=d,
                             test_error=0.30 - crac_gain * 0.10 + noise, **base))
        rows.append(dict(method="full_supervision", budget=None, variant="full_supervision", seed=d,
                         test_error=0.20 + noise, **base))
    return rows


def test_export_states_verdicts_and_gap_shares(tmp_path, monkeypatch):
    monkeypatch.setattr(breadth, "instrument", lambda spec, name: [])
    rows = fake_rows(0.25, np.random.default_rng(0))
    dest = breadth.export(SPEC, "budgets", rows, tmp_path / "budgets_3d", minutes=1.5)  # where readme_block looks
    record = json.loads((dest / "claims.json").read_text())
    assert [s["setting"] for s in record["settings"]] == ["0.01", "0.1"]
    first = record["settings"][0]
    claim = next(c for c in first["claims"] if c["claim"] == "crac beats sparse_only" and c["measure"] == "test_error")
    assert claim["verdict"] == "holds" and claim["pairs"] == 10 and claim["voxel_budget"] == 0.01
    share = next(g for g in first["gap_shares"] if g["measure"] == "test_error")
    assert share["share"] == pytest.approx(0.25) and share["low"] <= 0.25 <= share["high"]
    assert record["provenance"]["minutes"] == 1.5 and "10 paired draws" in record["protocol"]
    table = breadth.verdict_table(record)
    assert table["test_error"].iloc[0].endswith("holds") and table.iloc[0, -1].startswith("25% [")
    assert "0.01: 1 of 2" in breadth.readme_block(tmp_path)  # test error holds; AP, equal for all, does not
    with pytest.raises(ValueError, match="crac draw 9"):
        breadth.export(SPEC, "budgets", [r for r in rows if not (r["method"] == "crac" and r["seed"] == 9)],
                       tmp_path / "again")


SIZES = {"base": {"iterations": 2},
         "grids": {"sizes": {"tag": "vol", "data": {"dim": 3}, "budget": 0.01,
                             "annotations": ["small", "random", "large"]}}}


def test_size_grid_trains_crac_on_each_set_and_claims_random_beats_each_other(tmp_path):
    runs = breadth.grid_runs(SIZES, "sizes")
    assert len(runs) == 10 * 3 and {r.method for r in runs} == {"crac"}  # no dense run: no gap to share
    keys = {r.variant: dict(r.overrides) for r in runs[:3]}
    assert {k: v["annotation"] for k, v in keys.items()} == {"small": "small", "random": "random", "large": "large"}
    assert all(v["seed"] == v["annotation_seed"] == 0 and v["voxel_budget"] == 0.01 for v in keys.values())
    assert breadth.grid_claims(SIZES["grids"]["sizes"]) == ("random beats small", "random beats large")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"base": {}, "grids": {"x": {"budgets": [0.1], "annotations": ["small"]}}}))
    with pytest.raises(ValueError, match="grid 'x': expected exactly one of budgets, variants, annotations"):
        breadth.load_grids(path)


def test_size_grid_export_judges_the_sets(tmp_path, monkeypatch):
    monkeypatch.setattr(breadth, "instrument", lambda spec, name: [])
    rng = np.random.default_rng(1)
    # random better than small by 0.05 (steady), equal to large up to noise
    error = {"small": 0.35, "random": 0.30, "large": 0.30}
    rows = [dict(method="crac", budget=0.01, variant=a, seed=d, test_error=error[a] + rng.normal(0, 0.01),
                 test_cut_share=0.35, test_ap=0.6, voi=3.0) for d in range(10) for a in error]
    record = json.loads((breadth.export(SIZES, "sizes", rows, tmp_path / "sizes_3d", minutes=2.0) / "claims.json").read_text())
    assert record["claims"] == ["random beats small", "random beats large"]
    (setting,) = record["settings"]
    verdict = {c["claim"]: c["verdict"] for c in setting["claims"] if c["measure"] == "test_error"}
    assert verdict["random beats small"] == "holds" and verdict["random beats large"] == "inconclusive"
    assert set(setting["means"]) == {"small", "random", "large"}
    assert breadth.holds_count(setting, "random beats small") == (1, 2)  # test error holds; AP, equal for all, does not
    block = breadth.readme_block(tmp_path)
    assert "`random` beats `small` and `random` beats `large` holds on" in block
    assert "| 0.01: random beats small |" in block and "| 0.01: random beats large |" in block
    assert "- **which instances to annotate (3D, 1 %, crac)**: holds on `random beats small` 1 of 2" in \
        breadth.readme_headline(tmp_path)
