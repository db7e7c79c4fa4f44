"""Every notebook runs (at its smoke parameters), is committed clean, and starts
with its papermill parameters cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
SMOKE = yaml.safe_load((ROOT / "notebooks" / "smoke.yaml").read_text()) or {}


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_parameters_first(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cell"
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), \
        f"{path.name}: the first code cell must be tagged 'parameters'"
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not dirty, f"{path.name}: code cells {dirty} were committed with outputs; clear them"
    # narrative: every code cell after the parameters is preceded by a markdown cell
    cells = nb["cells"]
    for i, c in enumerate(cells):
        if c["cell_type"] == "code" and c is not code[0]:
            assert i > 0 and cells[i - 1]["cell_type"] == "markdown", \
                f"{path.name}: code cell {i} has no markdown cell before it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ends_with_questions_for_a_class(path):
    """Two markdown cells close every notebook: the questions, visible, and their
    measured answers, collapsed (JupyterLab's ``source_hidden``) so a student tries first."""
    questions, answers = json.loads(path.read_text())["cells"][-2:]
    for cell in (questions, answers):
        assert cell["cell_type"] == "markdown" and "class-questions" in cell["metadata"].get("tags", []), \
            f"{path.name}: the last two cells must be the tagged questions and answers"
    assert "".join(questions["source"]).startswith("## Questions for a class")
    assert "\n1. " in "".join(questions["source"]) and "\n1. " in "".join(answers["source"])
    assert not questions["metadata"].get("jupyter", {}).get("source_hidden")
    assert answers["metadata"].get("jupyter", {}).get("source_hidden") is True, f"{path.name}: answers not collapsed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path):
    """papermill's parser (``--help-notebook``, the parameter table of a batch run)
    gives up on a line whose comment holds ``=``: every assignment must parse."""
    import ast

    from papermill.translators import PythonTranslator

    nb = json.loads(path.read_text())
    source = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    assigned = [t.id for node in ast.parse(source).body if isinstance(node, ast.Assign) for t in node.targets]
    parsed = [p.name for p in PythonTranslator.inspect({"source": source})]
    assert parsed == assigned, f"{path.name}: papermill reads {parsed}, the cell assigns {assigned}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_at_smoke_scale(path, smoke_runs):
    assert path.name in SMOKE, f"{path.name}: add its smoke parameters to notebooks/smoke.yaml"
    folder, done = smoke_runs[path.name]  # run two at a time (tests/conftest.py)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-4000:]  # papermill, then nbval where marked
    out, figures = folder / path.name, folder / "figures"
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    figs = list(figures.glob("*.png"))
    assert figs, f"{path.name} wrote no figure"
    assert all(f.with_suffix(".pdf").exists() for f in figs)


def test_some_notebooks_check_deterministic_outputs():
    assert [p.name for p in NOTEBOOKS if "NBVAL_CHECK_OUTPUT" in p.read_text()] == [
        "00_data_and_affinities.ipynb", "04_complexity.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_ends_with_what_this_run_found(path):
    """Before the questions, a "What this run found" heading and a code cell that
    writes the findings from the run's numbers (viz.show_findings), not typed prose."""
    cells = json.loads(path.read_text())["cells"]
    heads = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"
             and "".join(c["source"]).lstrip().startswith("## What this run found")]
    assert len(heads) == 1, f"{path.name}: expected one '## What this run found' cell"
    found = cells[heads[0] + 1]
    assert found["cell_type"] == "code" and "viz.show_findings(" in "".join(found["source"]), \
        f"{path.name}: the cell after 'What this run found' must call viz.show_findings"
    assert heads[0] + 2 == len(cells) - 2, f"{path.name}: the findings come right before the questions"
