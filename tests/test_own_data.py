"""A newcomer's own data from the command line: raw and labels in separate files
under other keys, a separate test volume, HDF5 / zarr / TIFF; scales, threads,
where runs and figures go, and JupyterLab (``make lab``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest

from affcons_lib.training import checkpoint, config, sampling
from affcons_lib import data, runs_dir
from affcons_lib.companion import viz
from affcons_lib.data import DataFormatError

ROOT = Path(__file__).resolve().parents[1]
# tiny volumes: a share of the instances and no size floor (the default floor, 1000 voxels, is larger than them)
TINY = ["widths=4,8", "patch=4,32,32", "batch=1", "progress=false", "log_every=1", "sparsity=0.3", "min_size=1"]


def _write_pair(folder: Path, stem: str, shape, seed: int, key: str = "stack"):
    """Raw (uint8) and labels (uint32) of a generated volume in two HDF5 files, one
    dataset each under ``key``, as public FIB-SEM pairs come."""
    raw, labels = data.make_em_volume(shape, seed=seed)
    with h5py.File(folder / f"{stem}-image.h5", "w") as f:
        f[key] = (raw * 255).astype(np.uint8)
    with h5py.File(folder / f"{stem}-labels.h5", "w") as f:
        f[key] = labels.astype(np.uint32)
    return raw, labels


def _cli(module, *args, cwd):
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_train_predict_evaluate_separate_files_and_test_volume(tmp_path):
    """The README's own-data walk-through, command by command."""
    _write_pair(tmp_path, "train", (24, 64, 64), seed=1)
    _, test_labels = _write_pair(tmp_path, "test", (12, 64, 64), seed=2)
    keys = ["dataset=train-image.h5", "labels=train-labels.h5", "raw_key=stack", "labels_key=stack",
            "test_dataset=test-image.h5", "test_labels=test-labels.h5"]
    sets = sum([["--set", s] for s in keys + TINY + ["iterations=3", "out_dir=run", "progress=true"]], [])
    printed = _cli("affcons_lib", "train", *sets, cwd=tmp_path)
    # the start-of-training summary: the two volumes, the annotation, the patches
    assert "test: test-image.h5 (12, 64, 64)" in printed
    assert "train part (24, 64, 64); test part (12, 64, 64)" in printed
    assert "annotated:" in printed and "of the voxels" in printed and "labeled edges per random" in printed
    _cli("affcons_lib", "predict", "run/last.pt", "--out", "pred.h5", cwd=tmp_path)
    with h5py.File(tmp_path / "pred.h5") as f:  # the test volume, whole, with its own labels
        assert f["affinities"].shape == (12, 12, 64, 64)
        np.testing.assert_array_equal(f["labels"][...], test_labels)
    scores = json.loads(_cli("affcons_lib", "evaluate", "pred.h5", "--thresholds", "0.5", cwd=tmp_path))
    floors = {row["name"]: row["voi"] for row in scores["reference"]}
    assert 0 <= scores["voi"] < floors["every voxel alone"]
    # the same prediction scored against labels given on the command line
    again = json.loads(_cli("affcons_lib", "evaluate", "pred.h5", "--labels", "test-labels.h5:stack",
                            "--thresholds", "0.5", "--no-floors", cwd=tmp_path))
    assert again["voi"] == pytest.approx(scores["voi"], abs=1e-12)
    # the run's checkpoint pointed at another volume by --set
    _cli("affcons_lib", "predict", "run/last.pt", "--out", "other.h5", "--set", "test_dataset=train-image.h5",
         "--set", "test_labels=train-labels.h5", cwd=tmp_path)
    with h5py.File(tmp_path / "other.h5") as f:
        assert f["affinities"].shape == (12, 24, 64, 64)


def test_separate_test_volume_is_normalised_on_its_own(tmp_path):
    """Raw is stretched per volume: a darker test volume is not read on the
    training volume's range."""
    raw, labels = data.make_em_volume((8, 32, 32), seed=0)
    for name, scale in (("a.h5", 1.0), ("b.h5", 0.25)):
        with h5py.File(tmp_path / name, "w") as f:
            f["raw"] = (raw * 200 * scale).astype(np.uint8)
            f["gt"] = labels.astype(np.uint32)
    cfg = config.load_config(None, TINY + [f"dataset={tmp_path / 'a.h5'}", f"test_dataset={tmp_path / 'b.h5'}",
                                           "raw_key=raw", "labels_key=gt"])
    prepared = sampling.prepare_data(cfg)
    (raw_train,), (raw_test,) = prepared.raw_train, prepared.raw_test
    assert raw_train.shape == raw_test.shape == (8, 32, 32)
    assert raw_test.max() == pytest.approx(1.0) and raw_train.max() == pytest.approx(1.0)
    np.testing.assert_allclose(raw_test, raw_train, atol=0.03)
    np.testing.assert_array_equal(prepared.labels_test[0], labels)


def test_read_array_formats_and_keys(tmp_path):
    import tifffile
    import zarr

    a = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f["only"] = a
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["x/raw"] = a
        f["y"] = a + 1
    tifffile.imwrite(tmp_path / "stack.tif", a, photometric="minisblack")
    z = zarr.open_group(str(tmp_path / "vol.zarr"), mode="w")
    z.create_array("raw", shape=a.shape, dtype=a.dtype)[...] = a
    np.testing.assert_array_equal(data.read_array(tmp_path / "one.h5"), a)  # one array: no key needed
    np.testing.assert_array_equal(data.read_array(f"{tmp_path / 'two.h5'}:x/raw"), a)
    np.testing.assert_array_equal(data.read_array(tmp_path / "two.h5", "y"), a + 1)
    np.testing.assert_array_equal(data.read_array(tmp_path / "stack.tif"), a)
    np.testing.assert_array_equal(data.read_array(f"{tmp_path / 'vol.zarr'}:raw"), a)
    np.testing.assert_array_equal(data.read_array(tmp_path / "vol.zarr"), a)
    with pytest.raises(DataFormatError, match=r"two\.h5: holds 2 arrays \['x/raw', 'y'\]; name one"):
        data.read_array(tmp_path / "two.h5")
    with pytest.raises(DataFormatError, match=r"no dataset 'z'; datasets in the file: \['x/raw', 'y'\]"):
        data.read_array(tmp_path / "two.h5", "z")
    with pytest.raises(DataFormatError, match="no zarr array 'labels'; arrays: \\['raw'\\]"):
        data.read_array(tmp_path / "vol.zarr", "labels")
    with pytest.raises(FileNotFoundError, match="nothere.h5"):
        data.read_array(tmp_path / "nothere.h5")


def test_raw_and_labels_errors_name_the_files(tmp_path):
    import tifffile

    raw, labels = data.make_em_volume((4, 16, 16), seed=0)
    stack = dict(photometric="minisblack")  # sections, not colour planes
    tifffile.imwrite(tmp_path / "raw.tif", (raw * 255).astype(np.uint8), **stack)
    tifffile.imwrite(tmp_path / "lab.tif", labels[:, :8].astype(np.uint16), **stack)
    tifffile.imwrite(tmp_path / "float.tif", labels.astype(np.float32) + 0.5, **stack)
    with h5py.File(tmp_path / "both.h5", "w") as f:
        f["raw"], f["gt"] = raw, labels.astype(np.uint32)
    with pytest.raises(DataFormatError, match="a TIFF file holds one array; give the labels' own file"):
        data.read_raw_and_labels(tmp_path / "raw.tif")
    with pytest.raises(DataFormatError, match=r"raw\.tif vs .*lab\.tif: image shape \(4, 16, 16\) does not match"):
        data.read_raw_and_labels(tmp_path / "raw.tif", tmp_path / "lab.tif")
    with pytest.raises(DataFormatError, match="float.tif: expected an integer label array"):
        data.read_raw_and_labels(tmp_path / "raw.tif", tmp_path / "float.tif")
    with pytest.raises(DataFormatError, match="name their array"):
        data.read_raw_and_labels(tmp_path / "both.h5", raw_key="raw")
    r, lab = data.read_raw_and_labels(tmp_path / "both.h5", raw_key="raw", labels_key="gt")
    np.testing.assert_array_equal(lab, labels)
    with pytest.raises(ValueError, match="config.test_labels=.*given without test_dataset"):
        config.load_config(None, ["test_labels=x.h5"])


def test_failed_start_leaves_no_run_folder(tmp_path):
    out = subprocess.run([sys.executable, "-m", "affcons_lib", "train", "--set", f"out_dir={tmp_path / 'run'}",
                          "--set", f"dataset={tmp_path / 'missing.h5'}"], capture_output=True, text=True)
    assert out.returncode == 2 and "missing.h5" in out.stderr
    assert not (tmp_path / "run").exists()


def test_scales_and_the_cli_defaults():
    small = config.load_config(None, [])
    assert (small.widths, small.patch, small.lr, small.iterations) == ((8, 16, 32), (8, 64, 64), 1e-3, 200)
    assert config.TrainConfig().widths == small.widths  # the dataclass defaults are the small scale
    paper = config.load_config(None, ["scale=paper"])
    assert (paper.widths, paper.patch, paper.lr, paper.iterations) == ((28, 36, 48, 64, 80), (18, 160, 160), 1e-4,
                                                                       200_000)
    mixed = config.load_config(None, {"scale": "paper", "iterations": 10, "dim": 2})
    assert mixed.iterations == 10 and mixed.patch == (256, 256) and mixed.widths == paper.widths
    assert config.load_config(None, ["dim=2"]).patch == (128, 128)
    with pytest.raises(ValueError, match="scale='huge'"):
        config.load_config(None, ["scale=huge"])
    printed = subprocess.run([sys.executable, "-m", "affcons_lib", "train", "--print-config"], capture_output=True,
                             text=True, check=True).stdout
    assert json.loads(printed)["widths"] == [8, 16, 32]
    helptext = subprocess.run([sys.executable, "-m", "affcons_lib", "train", "--help"], capture_output=True,
                              text=True, check=True).stdout
    assert "full_supervision. Defaults are a small CPU run; --set scale=paper" in " ".join(helptext.split())


def test_as_sizes_reads_papermill_text():
    assert config.as_sizes("(16, 128, 128)", "input_size") == (16, 128, 128)
    assert config.as_sizes("16,128,128", "input_size") == (16, 128, 128)
    assert config.as_sizes([8, 16], "widths") == (8, 16)
    assert config.as_sizes(None, "test_crop") is None
    with pytest.raises(ValueError, match='input_size=.*-y "input_size: \\[8, 64, 64\\]"'):
        config.as_sizes("sixteen", "input_size")


def test_thread_setting(monkeypatch):
    import numba
    import torch

    before, before_numba = torch.get_num_threads(), numba.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert checkpoint.set_threads(0) == max(1, len(os.sched_getaffinity(0)) // 2) == torch.get_num_threads()
        assert checkpoint.set_threads(1) == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(2)  # moved since the launcher set it (numba can do that)
        assert checkpoint.set_threads(0) == 1 == torch.get_num_threads()  # the launcher's setting is kept
        monkeypatch.setenv("OMP_NUM_THREADS", "not a count")
        assert checkpoint.set_threads(0) == max(1, len(os.sched_getaffinity(0)) // 2)
    finally:
        numba.set_num_threads(before_numba)
        torch.set_num_threads(before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_kept_freed_memory_spares_the_page_faults():
    # the same 3D convolution again and again, as a forward pass makes and frees its
    # tensors: without keep_freed_memory each comes as fresh pages that the kernel faults
    # in, with it from the heap already faulted in. Fresh processes: the setting is
    # process-wide.
    code = """
import resource, sys, torch
from affcons_lib.training import checkpoint
assert checkpoint.keep_freed_memory() if sys.argv[1] == "keep" else True
x, w = torch.ones(1, 16, 16, 128, 128), torch.ones(16, 16, 3, 3, 3)
torch.nn.functional.conv3d(x, w, padding=1).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.nn.functional.conv3d(x, w, padding=1).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {}
    for mode in ("keep", "free"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert out.returncode == 0, out.stderr
        faults[mode] = int(out.stdout.split()[-1])
    # five 16 MB outputs are 20 k pages: given back and faulted in again unless kept
    assert faults["free"] > 20_000 and faults["keep"] < faults["free"] / 4, faults


def test_one_thread_stays_one_after_numba_parallel_code():
    # numba's OpenMP layer shares torch's runtime: with OMP_NUM_THREADS set, its first
    # parallel call used to raise torch to every core (a fresh process, as a launcher starts one)
    code = """
import numpy as np, torch
from affcons_lib.evaluation import metrics
from affcons_lib.training import checkpoint
assert checkpoint.set_threads(1) == 1
torch.randn(1000, 1000).sum()  # torch's OpenMP pool first, as in a training step
rng = np.random.default_rng(0)
metrics.precision_recall(rng.random(500_000, dtype=np.float32), rng.random(500_000) < 0.3)
print(torch.get_num_threads())
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}  # numba: two, whatever the cores
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1"]


def test_auto_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFCONS_DATA_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match=f"no real FIB-SEM volume .* in {tmp_path}; using generated data.*"
                                         "AFFCONS_DATA_DIR"):
        data.load_volume("auto", synthetic_shape=(4, 32, 32))
    with pytest.warns(UserWarning, match="no real nuclei image"):
        data.load_image("auto", synthetic_shape=(32, 32))


def test_data_found_beside_the_checkout_without_make(tmp_path, monkeypatch):
    """A one-off papermill run outside make (no AFFCONS_DATA_DIR) finds the data
    that make finds: the repository's data/, then ../shared/data."""
    repo = tmp_path / "checkout"
    (repo / "affcons_lib").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    (repo / "notebooks").mkdir()
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    (shared / data.FIBSEM_FILE).write_bytes(b"")
    monkeypatch.delenv("AFFCONS_DATA_DIR", raising=False)
    monkeypatch.chdir(repo / "notebooks")
    assert data.data_dirs() == [repo / "data", shared]
    assert data.real_volume_path() == shared / data.FIBSEM_FILE


def test_one_off_runs_do_not_write_over_the_figures(tmp_path, monkeypatch):
    monkeypatch.delenv("AFFCONS_FIGURES_DIR", raising=False)
    monkeypatch.delenv("AFFCONS_RESULTS_DIR", raising=False)
    monkeypatch.setenv("AFFCONS_RUNS_DIR", str(tmp_path / "r"))
    assert runs_dir() == tmp_path / "r"
    assert viz.figures_dir() == tmp_path / "r" / "figures" and viz.results_dir() == tmp_path / "r" / "results"
    monkeypatch.delenv("AFFCONS_RUNS_DIR")
    monkeypatch.chdir(ROOT / "notebooks")
    assert viz.figures_dir() == ROOT / "runs" / "figures"  # not ROOT / "figures", which make reproduce owns


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".venv" / ".installed").is_file(), reason="make lab needs the project's .venv")
def test_make_lab_serves_the_notebooks_with_the_project_kernel(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_PORT={port}", "LAB_TOKEN=affcons-test"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api"
    try:
        deadline, specs = time.time() + 90, None
        while time.time() < deadline and specs is None:
            try:
                with urllib.request.urlopen(f"{base}/kernelspecs?token=affcons-test", timeout=5) as r:
                    specs = json.load(r)
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                time.sleep(1)
        assert specs is not None, "JupyterLab did not answer within 90 s"
        argv = specs["kernelspecs"][specs["default"]]["spec"]["argv"]
        assert Path(argv[0]).parent.samefile(ROOT / ".venv" / "bin")  # the project's kernel
        with urllib.request.urlopen(f"{base}/contents?token=affcons-test", timeout=5) as r:
            names = {c["name"] for c in json.load(r)["content"]}
        assert {p.name for p in (ROOT / "notebooks").glob("0*.ipynb")} <= names
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        proc.stdout.close()
