"""Shared fixtures. Real data comes from AFFCONS_DATA_DIR (the Makefile points it
at ../shared/data when present); tests that need it skip with the reason."""

from __future__ import annotations

import pytest

from affcons_lib.data import (FIBSEM_FILE, ISBI_DIR, NUCLEI_DIR, data_dir, real_image_dir, real_isbi_dir, real_volume_path)

#: session fixtures that cost tens of seconds: under pytest-xdist (``make test`` runs
#: ``-n 2 --dist loadgroup``) every test that uses one goes to the same worker, which
#: computes it once; each other test goes with its file, so a module fixture is built once too
SHARED_FIXTURES = ("smoke_runs", "fibsem_test_part_noisy")


#: the groups that take longest, in the order the workers get them (each group's seconds
#: summed over its tests in a run of the suite): longest first, so that short groups fill
#: the end and the two workers finish together instead of one waiting on a long group dealt last
LONGEST_GROUPS = ("smoke_runs", "test_blockwise", "test_own_data", "test_distributed", "test_train",
                  "fibsem_test_part_noisy", "test_reference", "test_side_by_side", "test_sweep", "test_reproduce")


def _group(item) -> str:
    """The group of a test under ``--dist loadgroup``: the first shared fixture it uses, or its file."""
    shared = [name for name in SHARED_FIXTURES if name in getattr(item, "fixturenames", ())]
    return shared[0] if shared else item.path.stem


def pytest_itemcollected(item):
    # marked as each test is collected, before xdist's pytest_collection_modifyitems reads the
    # groups into the test ids (in a worker, whose option dist reads "no" and loadgroup True)
    if getattr(item.config.option, "loadgroup", False):
        item.add_marker(pytest.mark.xdist_group(_group(item)))


def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` the longest groups first (:data:`LONGEST_GROUPS`); the
    scheduler deals the groups out in the order of their first test. Otherwise the
    collection order stays."""
    if getattr(config.option, "loadgroup", False):
        rank = {name: i for i, name in enumerate(LONGEST_GROUPS)}
        items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: the rest as collected


def pytest_configure(config):
    """Workers of pytest-xdist share the cores: each runs torch at its share of them
    (two workers on two cores: one thread each) instead of every worker at all of them."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // workers))


@pytest.fixture(scope="session")
def fibsem_path():
    p = real_volume_path()
    if p is None:
        pytest.skip(f"real FIB-SEM volume not found at {data_dir() / FIBSEM_FILE} (set AFFCONS_DATA_DIR)")
    return p


@pytest.fixture(scope="session")
def fibsem_test_part_noisy(fibsem_path):
    """The FIB-SEM test part the notebooks score (its last 50 slices) and, for noisy
    ground-truth targets widened and not (``reference.noisy_targets``), the targets and
    their in-memory instrument scores (``evaluate_3d``, the recipe): computed once for the
    instrument tests of test_evaluate.py and test_blockwise.py."""
    from affcons_lib.companion.reference import noisy_targets
    from affcons_lib.data import read_cremi
    from affcons_lib.evaluation import evaluate

    gt = read_cremi(fibsem_path)[1][200:]
    scored = {}
    for widen in (True, False):
        affs = noisy_targets(gt, widen)
        scored[widen] = (affs, evaluate.evaluate_3d(affs, gt))
    return gt, scored


@pytest.fixture(scope="session")
def nuclei_dir():
    p = real_image_dir()
    if p is None:
        pytest.skip(f"real DSB2018 nuclei sample not found at {data_dir() / NUCLEI_DIR} (set AFFCONS_DATA_DIR)")
    return p


@pytest.fixture(scope="session")
def isbi_dir():
    p = real_isbi_dir()
    if p is None:
        pytest.skip(f"real ISBI 2012 sections not found at {data_dir() / ISBI_DIR} (set AFFCONS_DATA_DIR)")
    return p


#: the smoke runs' order, longest first, so that two at a time finish together
_SMOKE_ORDER = ("06_blockwise", "01_training", "02_size_distribution", "07_breadth", "04_complexity",
                "00_data_and_affinities", "05_cpsn", "00b_crac_step", "03_entropy_maps", "08_own_annotation")


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """Every notebook executed once at its smoke parameters (notebooks/smoke.yaml),
    two at a time, each by papermill in a process of its own at one thread, with
    its own runs, results and figures folders (and the committed reference runs in sight, as
    a reader's run has them).
    A notebook whose cells are marked NBVAL_CHECK_OUTPUT is then checked by nbval.
    Returns {notebook name: (folder, the last completed process)}; the folder holds the
    executed copy, ``work`` (runs, ``work/results``) and ``figures``.
    tests/test_notebooks.py checks each run; tests/test_reference.py exports
    notebook 01's as paired reference runs."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import yaml

    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    smoke = yaml.safe_load((notebooks / "smoke.yaml").read_text())
    base = tmp_path_factory.mktemp("smoke")
    names = sorted(smoke, key=lambda n: _SMOKE_ORDER.index(n[:-6]) if n[:-6] in _SMOKE_ORDER else len(_SMOKE_ORDER))

    def run(name):
        folder = base / name[:-6]
        folder.mkdir()
        (folder / "parameters.yaml").write_text(yaml.safe_dump(smoke[name]))
        env = {**os.environ, "AFFCONS_RUNS_DIR": str(folder / "work"), "AFFCONS_RESULTS_DIR": str(folder / "work" / "results"),
               "AFFCONS_FIGURES_DIR": str(folder / "figures"), "AFFCONS_STATIC": "1", "OMP_NUM_THREADS": "1",
               "NUMBA_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-m", "papermill", str(notebooks / name), str(folder / name), "-f",
                               str(folder / "parameters.yaml"), "--cwd", str(notebooks), "-k", "python3",
                               "--no-progress-bar"], capture_output=True, text=True, env=env)
        if done.returncode == 0 and "NBVAL_CHECK_OUTPUT" in (notebooks / name).read_text():
            # deterministic outputs: nbval executes the executed copy again and compares the
            # outputs of the cells marked NBVAL_CHECK_OUTPUT (parameter counts, MACs, shapes)
            env["AFFCONS_FIGURES_DIR"] = str(folder / "nbval_figures")
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
                                   "--rootdir", str(folder), str(folder / name)],
                                  capture_output=True, text=True, cwd=str(notebooks), env=env)
        return name, (folder, done)

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(run, names))
