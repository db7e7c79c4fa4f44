"""The front page and the book say what the records say: their generated parts are what
affcons_lib.companion.documents writes from data/ now, the front page is short, its words
are defined, and it types no measured number."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from affcons_lib.companion import breadth, documents

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BOOK = ROOT / "notebooks" / "book"


def test_generated_parts_are_what_the_records_give():
    """Regenerate every part from data/ and compare with what is committed."""
    assert documents.stale_parts() == [], "run `python -m affcons_lib book --documents` and commit"


def test_the_front_page_is_short_and_opens_with_the_verdicts():
    lines = README.splitlines()
    assert len(lines) <= 200
    first_screen = "\n".join(lines[:60])
    assert documents.CLAIMS_START in first_screen and breadth.HEADLINE_START in first_screen
    for comparison in documents.COMPARISONS:
        assert f"| {comparison} | notebook 01 defaults:" in first_screen


def test_claims_rows_are_computed_from_the_records(tmp_path):
    """The scale cell and the verdicts follow the record: another record, other rows."""
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(ROOT / "data" / "reproduce", data / "reproduce")
    shutil.copytree(ROOT / "data" / "reference" / "paired", data / "reference" / "paired",
                    ignore=shutil.ignore_patterns("*.pt", "*.csv"))
    (data / "reference" / "time_to_claim").mkdir()
    for repeat in (data / "reproduce").glob("*/01_claims.json"):  # fp32/, avx2/: no repeats, no verdict unstable
        repeat.unlink()
    record = json.loads((data / "reproduce" / "01_claims.json").read_text())
    record["iterations"] = 77
    record["claims"] = [dict(c, verdict="does not hold") if c["claim"] == "crac beats sparse_only" else c
                        for c in record["claims"]]
    (data / "reproduce" / "01_claims.json").write_text(json.dumps(record))
    block = documents.claims_block(data)
    row = next(line for line in block.splitlines() if line.startswith("| crac beats sparse_only | notebook 01"))
    assert "× 77 iterations" in row and row.count("does not hold") == 5 and "unstable" not in row


def test_notebook_01_has_repeats_to_check_stability_against():
    assert len(documents.notebook_01_repeats()) >= 2


def test_time_to_claim_table_is_the_recorded_one():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "time_to_claim.py"), "--table", "--out",
                          str(ROOT / "data" / "reference" / "time_to_claim")], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() in (BOOK / "time_to_claim.md").read_text()


def _glossary_terms() -> set[str]:
    return {line[3:].strip() for line in (BOOK / "glossary.md").read_text().splitlines() if line.startswith("## ")}


def test_every_glossary_link_names_a_term():
    """Links to glossary.md#anchor (front page, pages, notebooks) land on a term's heading."""
    anchors = {re.sub(r"[^\w\- ]", "", t.lower()).strip().replace(" ", "-") for t in _glossary_terms()}
    sources = [ROOT / "README.md", *BOOK.glob("*.md")]
    texts = [p.read_text() for p in sources]
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "book/glossary.md" in text, f"{path.name} does not link the glossary"
        texts.append(text)
    for text in texts:
        for anchor in re.findall(r"glossary\.md#([\w\-]+)", text):
            assert anchor in anchors, anchor


def test_the_front_pages_terms_are_in_the_glossary():
    terms = {t.lower() for t in _glossary_terms()}
    for used in ("affinity", "labeled region", "floor", "ceiling", "instrument", "VOI", "ARAND", "boundary AP",
                 "waterz", "paired draw", "entropy filter", "CPSN", "bf16", "sparse instance annotation"):
        assert any(used.lower() in t for t in terms), f"the glossary does not define {used}"


#: Numbers prose may type, each a name or a definition rather than a measurement: the
#: branches, the dimensionality, the precisions, notebook numbers, dataset and paper names
#: with their years, the paper's tables, figures and sections, the notebooks' figures, the
#: trivial answers "every affinity 1" and "every affinity 0", the confidence level and the
#: zero an interval is read against, ordered-list markers, issue numbers, names of data
#: sets, number formats and GPUs.
ALLOWED_NUMBERS = re.compile(r"f\(θ[12]\)|\b[23]D\b|\bbf16\b|\bfp32\b|\b0\db?\b|\bISBI 2012\b|\bICCV 2023\b|"
                             r"\bTables? \d\b|\bFigs?\. \d(–\d)?|\bFigures? \d+b?\.\d+( and \d+b?\.\d+)?\b|§\d+|\b95 %|\b0 on\b|\bexcludes 0\b|"
                             r"every affinity [01]\b|^\s*\d+\. |\b(contains?|side of|lies below|lies above)\s+0\b|#\d+\b|AVX512-BF16|\b(DSB2018|BBBC039|HDF5|A1|AC3|AC4|SNEMI3D's|float32|TF32|H100|H200|FIB-25)\b", re.M)

#: The front page and every page of the book. (The data page, data/README.md, is left
#: out: its table describes the external data sets, their sizes, licences and versions.)
CHECKED_PROSE = (ROOT / "README.md",) + tuple(sorted(BOOK.glob("*.md")))


def _prose(text: str) -> str:
    """``text`` without its generated parts, code, inline code, link targets and the
    numbers :data:`ALLOWED_NUMBERS` names."""
    text = re.sub(r"<!-- (\w[\w ]*): generated.*?<!-- \1: end -->", "", text, flags=re.S)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return ALLOWED_NUMBERS.sub("", text)


@pytest.mark.parametrize("document", CHECKED_PROSE, ids=lambda p: p.name)
def test_prose_types_no_measured_number(document):
    typed = re.findall(r"\S*\d\S*", _prose(document.read_text()))
    assert typed == [], f"numbers typed in {document.name}'s prose (generate them from a record): {typed}"


NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _notebook_prose(path: Path) -> str:
    """A notebook's markdown without its equations ($...$), its title's number, citation
    years and the tables that quote the paper (a header naming "the paper's")."""
    cells = nbformat.read(path, as_version=4).cells
    text = "\n\n".join(c.source for c in cells if c.cell_type == "markdown")
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"\$[^$\n]*\$", "", text)
    text = re.sub(r"^# \d+b? · ", "# ", text, flags=re.M)
    text = re.sub(r"\(\d{4}\)", "", text)
    text = re.sub(r"^\|[^\n]*the paper's[^\n]*\|\n(\|[^\n]*\|\n?)*", "", text, flags=re.M)
    return _prose(text)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_prose_types_no_measured_number(path):
    """What a run found is written by the run (its last cell, from its own numbers); the
    answers to the questions say what one sees, and the numbers come from running it."""
    typed = re.findall(r"\S*\d\S*", _notebook_prose(path))
    assert typed == [], f"numbers typed in {path.name}'s markdown (let the run print them): {typed}"


def test_prose_filter_finds_a_typed_number():
    text = "VOI fell to 2.31 in 3D `x=1` [a](b1.md) (Table 2)\n<!-- t: generated -->9<!-- t: end -->"
    assert re.findall(r"\S*\d\S*", _prose(text)) == ["2.31"]


def _time_to_claim_record(root, name, minutes, provenance):
    """A setting's record and runs as benchmarks/time_to_claim.py writes them: two draws,
    crac 0.1 below sparse_only on every measure, the test error at its floor."""
    import json

    import pandas as pd

    rows = [dict(method=m, seed=s, train_seconds=10.0 * (1 + (m == "crac")) * (1 + (name == "b")),
                 test_error=0.3 - 0.1 * (m == "crac") + 0.01 * s, test_ap=0.5, unlabeled_error=0.2,
                 unlabeled_ap=0.4 + 0.1 * (m == "crac") + 0.01 * s * s) for m in ("sparse_only", "crac") for s in (0, 1)]
    pd.DataFrame(rows).to_csv(root / f"{name}.csv", index=False)
    claim = lambda measure, mean, verdict: dict(claim="crac beats sparse_only", measure=measure, mean=mean,
                                                low=mean - 0.01, high=mean + 0.01, pairs=2, verdict=verdict)
    record = {"name": name, "set": [f"lr={minutes}"], "seeds": [0, 1], "methods": ["sparse_only", "crac"], "threads": 1,
              "minutes": minutes,
              "beyond_floors": {"test_error": ["crac"], "unlabeled_ap": ["crac", "sparse_only"]},
              "claims": [claim("test_error", -0.1, "holds"), claim("-unlabeled_ap", -0.1, "holds")],
              "provenance": provenance}
    (root / f"{name}.json").write_text(json.dumps(record))


def test_time_to_claim_table_counts_beyond_the_floor_and_names_the_maker(tmp_path):
    made = dict(commit="abcdef1234", cpu="Some CPU", native_bf16=False)
    _time_to_claim_record(tmp_path, "b", 2.0, made)
    _time_to_claim_record(tmp_path, "a", 1.0, {"recorded": False, "committed_in": "1234567"})
    rows = documents.time_to_claim_table(tmp_path).splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == ["a", "b"]  # shortest first
    assert "-0.100 [-0.110, -0.090] holds (at the floor)" in rows[0]  # only crac beats the test floor
    assert "| 1 of 1 |" in rows[0]
    assert rows[0].endswith("not recorded (added in `1234567`) |")
    assert rows[1].endswith("Some CPU, bf16 not native, `abcdef12` |")


def test_setting_difference_pairs_by_method_and_draw(tmp_path):
    _time_to_claim_record(tmp_path, "a", 1.0, {})
    _time_to_claim_record(tmp_path, "b", 2.0, {})
    d = documents.setting_difference(tmp_path, [("a", "b")])
    assert d["pairs"] == 4
    assert d["difference"]["test_error"].mean == pytest.approx(0.0)  # the same scores in both settings
    assert d["time_ratio"] == pytest.approx({"crac": 0.5, "sparse_only": 0.5})  # b trains twice as long


def test_time_to_claim_remake_runs_each_recorded_setting_again(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("time_to_claim", ROOT / "benchmarks" / "time_to_claim.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for name, minutes in (("short", 1.0), ("long", 2.0)):
        _time_to_claim_record(tmp_path, name, minutes, {})
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: calls.append((argv, kw["env"]["OMP_NUM_THREADS"]))
                        or subprocess.CompletedProcess(argv, 0, "", ""))
    script.main(["--remake", "--workers", "1", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")])
    assert [argv[2] for argv, _ in calls] == ["long", "short"]  # longest first, each at one thread
    argv, threads = calls[0]
    assert threads == "1" and argv[argv.index("--seeds") + 1] == "0,1" and argv[argv.index("--set") + 1] == "lr=2.0"
    assert argv[argv.index("--methods") + 1:argv.index("--out")] == ["sparse_only", "crac"]
    with pytest.raises(SystemExit, match="no record"):
        script.main(["--remake", "nope", "--out", str(tmp_path)])
