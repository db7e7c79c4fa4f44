"""A result to look at: predict + segment an array without ground truth, written
as one zarr container of layers that napari's zarr reader opens array by array."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from affcons_lib import data
from affcons_lib.companion import layers
from affcons_lib.training import train
from affcons_lib.training.config import load_config

TINY = dict(widths=(4, 8), patch=(4, 32, 32), batch=1, progress=False, log_every=1, iterations=2,
            checkpoint_every=2, min_size=1, sparsity=0.3, voxel_budget=None, precision="fp32", threads=1,
            dataset="synthetic", method="crac")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train.train(load_config(None, {**TINY, "out_dir": str(out)}))["checkpoint"]


def test_layers_of_a_volume_without_labels(tiny_run, tmp_path):
    raw, _ = data.make_em_volume((12, 40, 48), seed=5)
    result = layers.segment_raw(tiny_run, raw)
    assert result["affinities"].shape == (12, 12, 40, 48)
    path = layers.write_layers(tmp_path / "view.zarr", raw=raw, resolution=(40, 4, 4), **result)
    back = layers.read_layers(path)
    assert list(back) == list(layers.LAYERS)
    np.testing.assert_array_equal(back["raw"], raw)
    np.testing.assert_array_equal(back["segmentation"], result["segmentation"])
    assert back["segmentation"].dtype == np.uint32 and back["segmentation"].min() >= 1
    import zarr

    attrs = zarr.open_group(str(path), mode="r")["affinities"].attrs
    assert attrs["resolution"] == [40, 4, 4] and attrs["axis_names"] == ["c^", "z", "y", "x"]
    with pytest.raises(FileExistsError, match="view.zarr: exists"):
        layers.write_layers(path, raw=raw)
    with pytest.raises(ValueError, match="segmentation: expected shape \\(12, 40, 48\\)"):
        layers.write_layers(tmp_path / "bad.zarr", raw=raw, segmentation=result["segmentation"][:3])
    assert not (tmp_path / "bad.zarr").exists() and not (tmp_path / "bad.zarr.part").exists()
    with pytest.raises(ValueError, match="3D and expects a 3D array"):
        layers.segment_raw(tiny_run, raw[0])


def test_predict_layers_command(tiny_run, tmp_path):
    raw, _ = data.make_em_volume((8, 32, 32), seed=1)
    with h5py.File(tmp_path / "raw.h5", "w") as f:
        f["stack"] = (raw * 255).astype(np.uint8)
    out = subprocess.run([sys.executable, "-m", "affcons_lib", "predict", tiny_run, "--raw",
                          f"{tmp_path / 'raw.h5'}:stack", "--layers", str(tmp_path / "v.zarr")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "segments" in out.stdout and set(layers.read_layers(tmp_path / "v.zarr")) == set(layers.LAYERS)


def test_open_in_napari_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "napari", None)  # as where napari is not installed
    with pytest.raises(ImportError, match="pip install 'napari\\[all\\]'"):
        layers.open_in_napari(tmp_path / "view.zarr")


def test_napari_builtin_reader_opens_each_layer(tmp_path):
    """napari's own zarr reader (napari_builtins), where napari is installed, reads
    each array of the container as one layer (checked here with napari 0.9.2)."""
    reader = pytest.importorskip("napari_builtins.io._read", reason="napari is an optional extra, not installed")
    raw = np.random.default_rng(0).random((4, 16, 16), dtype=np.float32)
    seg = np.arange(4 * 16 * 16, dtype=np.uint32).reshape(4, 16, 16)
    path = layers.write_layers(tmp_path / "view.zarr", raw=raw, segmentation=seg)
    for name, array in (("raw", raw), ("segmentation", seg)):
        image, shape = reader.read_zarr_dataset(str(path / name))
        assert tuple(shape) == array.shape
        np.testing.assert_array_equal(np.asarray(image), array)
