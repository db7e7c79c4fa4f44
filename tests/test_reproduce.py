"""make reproduce: every notebook run, its numbers and run times recorded with their
provenance, and the figures a reader browses without running anything."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from affcons_lib import cli

ROOT = Path(__file__).resolve().parents[1]


def _saved_figure_names() -> set[str]:
    """Every figure name a notebook passes to ``viz.save_figure``."""
    names = set()
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            names.update(re.findall(r"save_figure\(fig, \"([\w.-]+)\"\)", cell.source))
    return names


def test_committed_figures_are_the_ones_the_notebooks_save():
    """figures/ holds one PNG per figure the notebooks save (make reproduce rewrites them
    all), no stale ones, and stays small enough to clone."""
    names = _saved_figure_names()
    assert len(names) >= 10, names  # the pattern above still finds the notebooks' figures
    pngs = {p.stem: p for p in (ROOT / "figures").glob("*.png")}
    assert set(pngs) == names, (f"figures/ and the notebooks disagree: missing {sorted(names - set(pngs))}, "
                                f"stale {sorted(set(pngs) - names)}; run make reproduce and commit figures/*.png")
    for p in pngs.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    assert sum(p.stat().st_size for p in pngs.values()) < 6 * 2**20


def test_readers_page_shows_committed_figures():
    text = (ROOT / "notebooks" / "book" / "readers.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\(\.\./\.\./(figures/[^)]+)\)", text)
    assert len(shown) >= 5, "the readers' page shows the key figures"
    for rel in shown:
        assert (ROOT / rel).is_file(), f"readers.md shows {rel}, which is not in the repository"


def test_reproduce_records_results_and_run_times(tmp_path, monkeypatch):
    """make reproduce --record: the numbers a notebook recorded and each notebook's
    run time are copied where the README's verdicts point (data/reproduce/)."""
    import nbformat


    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("answer = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from affcons_lib.companion import viz\nviz.record_results('00_x', {'answer': answer})")]
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "00_x.ipynb")
    monkeypatch.delenv("AFFCONS_RESULTS_DIR", raising=False)
    assert cli.main(["reproduce", "--notebooks", str(tmp_path / "nb"), "--runs", str(tmp_path / "runs"), "--figures",
                           str(tmp_path / "fig"), "--record", str(tmp_path / "rec"), "-p", "answer", "42"]) == 0
    recorded = json.loads((tmp_path / "rec" / "00_x.json").read_text())
    assert recorded["answer"] == 42 and set(recorded) == {"answer", "provenance"}
    assert {"commit", "date", "torch", "cpu", "native_bf16", "threads"} <= set(recorded["provenance"])
    times = json.loads((tmp_path / "rec" / "run_times.json").read_text())
    assert set(times["seconds"]) == {"00_x"} and times["seconds"]["00_x"] > 0 and times["parameters"] == {"answer": 42}
    assert times["provenance"]["cpu"] and "native_bf16" in times["provenance"]
    nbformat.write(nb, tmp_path / "nb" / "01_y.ipynb")  # --only runs the notebooks named, no other
    assert cli.main(["reproduce", "--notebooks", str(tmp_path / "nb"), "--runs", str(tmp_path / "runs"), "--figures",
                           str(tmp_path / "fig"), "--record", str(tmp_path / "only"), "--only", "01"]) == 0
    assert set(json.loads((tmp_path / "only" / "run_times.json").read_text())["seconds"]) == {"01_y"}
    # a run of some notebooks into a whole run's record keeps the whole run's times
    assert cli.main(["reproduce", "--notebooks", str(tmp_path / "nb"), "--runs", str(tmp_path / "runs"), "--figures",
                     str(tmp_path / "fig"), "--record", str(tmp_path / "rec"), "--only", "01"]) == 0
    kept = json.loads((tmp_path / "rec" / "run_times.json").read_text())
    assert kept["seconds"] == times["seconds"] and kept["provenance"] == times["provenance"]
    assert set(kept["reruns"]) == {"01_y"} and kept["reruns"]["01_y"]["seconds"] > 0
    with pytest.raises(SystemExit, match="--only 09: no notebook"):
        cli.main(["reproduce", "--notebooks", str(tmp_path / "nb"), "--only", "09"])


def test_run_times_table_reads_each_record(tmp_path):
    """One row per record with notebook 01 and a provenance; where its runs' time went
    (prediction apart where the record has it); its verdict counts only the measures both
    methods beat the floor of."""
    from affcons_lib.companion import reproduce

    prov = dict(cpu="Some CPU", cores=2, threads="2", native_bf16=False, commit="0123456789abcdef")
    held = dict(prov, kernels="AVX2", kernel_caps={"ATEN_CPU_CAPABILITY": "avx2"})  # make reproduce-avx2
    for sub, minutes, made in (("", 10.0, prov), ("fp32", 12.0, prov), ("avx2", 14.0, held)):
        d = tmp_path / "data" / "reproduce" / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "run_times.json").write_text(json.dumps({"seconds": {"01_training": 60 * minutes},
                                                      "total_minutes": minutes, "provenance": made}))
        claims = [dict(claim="crac beats sparse_only", measure=m, mean=-0.1, low=-0.2, high=v, verdict=verdict)
                  for m, v, verdict in (("test_error", -0.05, "holds"), ("-test_ap", 0.01, "inconclusive"),
                                        ("unlabeled_error", -0.01, "holds"), ("voi", -0.05, "holds"))]
        (d / "01_claims.json").write_text(json.dumps({"claims": claims, "precision": "fp32", "beyond_floors": {
            "test_error": ["sparse_only", "crac"], "test_ap": ["sparse_only", "crac"], "unlabeled_error": ["crac"]}}))
        # 6 s training, 1 s prediction, 3 s scoring a run; the fp32 record from before prediction was timed apart
        seconds = dict(train_seconds=6.0, score_seconds=3.0, **({} if sub else dict(predict_seconds=1.0)))
        (d / "01_training.json").write_text(json.dumps({"scores": [{"seed": s, **seconds} for s in range(10)]}))
    (tmp_path / "data" / "reproduce" / "old").mkdir()  # a record without provenance: left out
    (tmp_path / "data" / "reproduce" / "old" / "run_times.json").write_text(json.dumps({"seconds": {"01_training": 1}}))
    block = reproduce.run_times_block(tmp_path / "data" / "reproduce")
    rows = [line for line in block.splitlines() if line.startswith("| `data/")]
    assert len(rows) == 3
    assert rows[0].startswith("| `data/reproduce/` | Some CPU (2, 2) | no | fp32, 10 | 10.0 | 60%, 10%, 30% | "
                              "holds on 1 of 2; VOI -0.100 [-0.200, -0.050] holds |")
    assert rows[1].startswith("| `data/reproduce/avx2/` | Some CPU (2, 2), as without AVX-512 (AVX2 kernels) | no |")
    assert "| `data/reproduce/fp32/` |" in rows[2] and "| 12.0 | 67%, 33% (prediction and scoring together) |" in rows[2]
    assert "| `01_training` | 10.0 | 14.0 | 12.0 |" in block  # each notebook's minutes per record
    front = reproduce.notebook_01_minutes_block(tmp_path / "data" / "reproduce").splitlines()[2:-2]  # the front page's
    assert front == [
        "- Some CPU (2 cores, bf16 not native), fp32: **10.0 min** for 10 paired draws (1.00 min a draw, so 10 in "
        "ten minutes); `crac` beats `sparse_only` holds on 1 of 2 affinity-level measures, VOI holds (`data/reproduce/`)",
        "- Some CPU as without AVX-512 (AVX2 kernels, no bf16), fp32: **14.0 min** for 10 paired draws (1.40 min a "
        "draw, so 7 in ten minutes); `crac` beats `sparse_only` holds on 1 of 2 affinity-level measures, VOI holds "
        "(`data/reproduce/avx2/`)",
        "- Some CPU (2 cores, bf16 not native), fp32: **12.0 min** for 10 paired draws (1.20 min a draw, so 8 in ten "
        "minutes); `crac` beats `sparse_only` holds on 1 of 2 affinity-level measures, VOI holds "
        "(`data/reproduce/fp32/`)"]
