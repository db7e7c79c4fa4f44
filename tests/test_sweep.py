import json

import pytest

from affcons_lib.companion.sweep import _rows, run_sweep

NOTEBOOK = {
    "cells": [
        {"id": "params", "cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
         "source": "a = 1\nb = 2\n"},
        {"id": "record", "cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": "from affcons_lib.companion import viz\n"
                   "viz.record_results('toy', {'a': a, 'scores': [{'method': 'x', 'v': a * b}, {'method': 'y', 'v': a + b}]})\n"},
    ],
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "nbformat": 4, "nbformat_minor": 5,
}


def test_sweep_collects_recorded_numbers(tmp_path):
    nb = tmp_path / "toy.ipynb"
    nb.write_text(json.dumps(NOTEBOOK))
    csv = run_sweep({"notebook": str(nb), "out": str(tmp_path / "out"), "fixed": {"b": 10},
                     "grid": {"a": [1, 2, 3]}, "metric": "v"})
    import pandas as pd

    table = pd.read_csv(csv)
    assert len(table) == 6 and set(table.method) == {"x", "y"}
    assert table[(table.a == 3) & (table.method == "x")].v.item() == 30
    assert (tmp_path / "out" / "v_vs_a.png").is_file()


def test_sweep_rejects_undeclared_parameter(tmp_path):
    nb = tmp_path / "toy.ipynb"
    nb.write_text(json.dumps(NOTEBOOK))
    with pytest.raises(ValueError, match="does not declare parameter"):
        run_sweep({"notebook": str(nb), "grid": {"c": [1]}})


def test_rows_flatten():
    assert _rows({"k": 1, "t": [{"a": 1}, {"a": 2}]}) == [{"k": 1, "a": 1}, {"k": 1, "a": 2}]
    assert _rows({"k": 1}) == [{"k": 1}]
