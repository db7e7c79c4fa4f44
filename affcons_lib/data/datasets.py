"""Where data is found, and the dataset names the notebooks and configs accept.

The project finds data through the environment variable ``AFFCONS_DATA_DIR``
(default ``data/``). The Makefile and CI point it at ``../shared/data`` when that
folder exists. Nothing here downloads: see :mod:`affcons_lib.data.fetch`.

Dataset names
-------------
3D (:func:`load_volume`)
    ``auto``       the real FIB-SEM volume if present, else generated data;
    ``fibsem``     the real FIB-SEM volume (error if absent);
    ``synthetic``  :func:`~affcons_lib.data.make_em_volume`;
    a path        any CREMI-layout HDF5 file, or with ``raw_key`` / ``labels`` /
                  ``labels_key`` any HDF5, zarr or TIFF volume and its labels.
2D image collections (:func:`load_image_collection`)
    ``isbi2012``   the real ISBI 2012 EM sections (``isbi2012/`` under a data folder;
                  sections 1-24 train, 25-30 test), or a folder holding
                  ``train-volume.tif`` + ``train-labels.tif``; a BBBC039 or CVPPP folder.
2D (:func:`load_image`)
    ``auto``       the real DSB2018 nuclei image if present, else generated data;
    ``nuclei``     the real DSB2018 image (error if absent);
    ``synthetic``  :func:`~affcons_lib.data.make_nuclei_image`;
    a path        a folder with ``img2d.tif`` + ``mask2d.tif``, or an image file
                  with ``labels`` (and keys, for HDF5 / zarr).

``auto`` never falls back to generated data silently: it warns, naming the
folders it searched (:func:`data_dirs`) and how to point it at the real data.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._paths import project_root
from .readers import (CREMI_LABELS, CREMI_RAW, HDF5_SUFFIXES, ISBI_LABELS, ISBI_VOLUME, read_bbbc039, read_cremi, read_cvppp, read_image_pair, read_isbi2012, read_raw_and_labels, split_path_key)
from .synthetic import make_em_volume, make_nuclei_image

__all__ = [
    "data_dir",
    "data_dirs",
    "FIBSEM_FILE",
    "NUCLEI_DIR",
    "real_volume_path",
    "real_image_dir",
    "ISBI_DIR",
    "real_isbi_dir",
    "CREMI_SPARSE_DIR",
    "real_cremi_sparse_dir",
    "Dataset",
    "load_volume",
    "load_image",
    "normalize_raw",
    "check_finite",
    "ImageCollection",
    "load_image_collection",
    "is_image_collection",
    "split_sections",
]


def is_image_collection(dataset: str) -> bool:
    """Whether ``dataset`` names ISBI 2012 or a BBBC039, CVPPP or ISBI 2012 folder
    (trained on many images)."""
    if str(dataset) == "isbi2012":
        return True
    p = Path(str(dataset)).expanduser()
    return p.is_dir() and (((p / "images").is_dir() and (p / "masks").is_dir()) or any(p.glob("*_rgb.png"))
                           or (p / ISBI_VOLUME).is_file())


FIBSEM_FILE = "neuroproof_training_sample2.h5"
NUCLEI_DIR = "dsb2018_nuclei_sample"
ISBI_DIR = "isbi2012"


def data_dir() -> Path:
    """The data folder: ``$AFFCONS_DATA_DIR``, else the repository's ``data/``
    (found from the current directory, so notebooks/ works too), else ``./data``.
    Fetched data goes here."""
    env = os.environ.get("AFFCONS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    root = project_root()
    return (root if root is not None else Path.cwd()) / "data"


def data_dirs() -> list[Path]:
    """Where real data is looked for, in order: ``$AFFCONS_DATA_DIR`` when set
    (then only there); else the repository's ``data/`` and the project machines'
    shared folder beside the checkout (``../shared/data``), so a notebook run
    outside ``make`` finds the same data as ``make reproduce``."""
    if os.environ.get("AFFCONS_DATA_DIR"):
        return [data_dir()]
    dirs = [data_dir()]
    root = project_root()
    if root is not None:
        dirs.append(root.parent / "shared" / "data")
    return dirs


def _looked_in() -> str:
    return ", ".join(str(d) for d in data_dirs())


def real_volume_path() -> Path | None:
    """Path of the real FIB-SEM volume (first of :func:`data_dirs`), or None."""
    return next((d / FIBSEM_FILE for d in data_dirs() if (d / FIBSEM_FILE).is_file()), None)


def real_image_dir() -> Path | None:
    """Folder of the real DSB2018 nuclei sample (first of :func:`data_dirs`), or None."""
    return next((d / NUCLEI_DIR for d in data_dirs()
                 if (d / NUCLEI_DIR / "img2d.tif").is_file() and (d / NUCLEI_DIR / "mask2d.tif").is_file()), None)


def real_isbi_dir() -> Path | None:
    """Folder of the real ISBI 2012 training data (first of :func:`data_dirs`), or None."""
    return next((d / ISBI_DIR for d in data_dirs()
                 if (d / ISBI_DIR / ISBI_VOLUME).is_file() and (d / ISBI_DIR / ISBI_LABELS).is_file()), None)


CREMI_SPARSE_DIR = "cremi_sparse"


def real_cremi_sparse_dir() -> Path | None:
    """Folder of the painted CREMI-C crop (``python -m affcons_lib fetch
    cremi-sparse --dest data/``), in :func:`data_dirs` or the repository's ``data/``;
    None where absent."""
    root = project_root()
    places = data_dirs() + ([root / "data"] if root is not None else [])
    return next((d / CREMI_SPARSE_DIR for d in places if (d / CREMI_SPARSE_DIR / "cremi_labels.tif").is_file()
                 and (d / CREMI_SPARSE_DIR / "cremi_image.tif").is_file()), None)


def _warn_generated(what: str, name: str, fetch: str) -> None:
    warnings.warn(f"dataset='auto': no {what} ({name}) in {_looked_in()}; using generated data instead. "
                  f"Point AFFCONS_DATA_DIR at the folder that holds it, or fetch it with "
                  f"`python -m affcons_lib fetch {fetch} --dest data/`.", UserWarning, stacklevel=3)


def split_sections(raw: np.ndarray, labels: np.ndarray, train_fraction: float) -> tuple[list, list, list, list]:
    """A stack of 2D sections (Z, Y, X) split by sections, no section in both parts:
    the first ``round(train_fraction * Z)`` (at least one) train, the rest test.
    Returns lists of sections: train raw, train labels, test raw, test labels."""
    k = max(1, int(round(train_fraction * labels.shape[0])))
    return list(raw[:k]), list(labels[:k]), list(raw[k:]), list(labels[k:])


@dataclass
class ImageCollection:
    """A folder dataset of 2D images (BBBC039, CVPPP): lists of float32 images in
    [0, 1] ((Y, X) or (Y, X, 3)) with dense instance labels, split into train and
    test parts."""

    train_images: list
    train_labels: list
    test_images: list
    test_labels: list
    source: str
    # what label 0 is: "instance" (the dark background of nuclei images, a region of its
    # own) or "boundary" (the membrane between EM cells: every edge touching it is a cut)
    background: str = "instance"


def load_image_collection(folder, train_fraction: float = 0.8) -> ImageCollection:
    """A BBBC039 or CVPPP A1 folder as train / test image lists.

    BBBC039 (``images/``, ``masks/``, ``metadata/``): the official ``training`` and
    ``test`` lists when ``metadata/`` holds them, else the first ``train_fraction``
    of the images by name. CVPPP A1 (``plantNNN_rgb.png`` + ``plantNNN_label.png``): no
    official labelled test split exists, so the first ``train_fraction`` by name
    train and the rest test. RGB images keep 3 channels.
    """
    if str(folder) == "isbi2012":
        found = real_isbi_dir()
        if found is None:
            raise FileNotFoundError(f"dataset='isbi2012': {ISBI_DIR}/ with {ISBI_VOLUME} and {ISBI_LABELS} not found "
                                    f"in {_looked_in()}; set AFFCONS_DATA_DIR (data/README.md says where to get it)")
        folder = found
    folder = Path(folder).expanduser()
    background = "instance"
    if (folder / ISBI_VOLUME).is_file():
        tr_i, tr_l, te_i, te_l = split_sections(*read_isbi2012(folder), train_fraction)
        kind, background = "ISBI 2012 EM sections", "boundary"
    elif (folder / "images").is_dir() and (folder / "masks").is_dir():
        if (folder / "metadata" / "training.txt").is_file() and (folder / "metadata" / "test.txt").is_file():
            tr_i, tr_l, _ = read_bbbc039(folder, "training")
            te_i, te_l, _ = read_bbbc039(folder, "test")
        else:
            images, labels, _ = read_bbbc039(folder)
            k = max(1, int(round(train_fraction * len(images))))
            tr_i, tr_l, te_i, te_l = images[:k], labels[:k], images[k:], labels[k:]
        kind = "BBBC039"
    elif any(folder.glob("*_rgb.png")):
        images, labels, _ = read_cvppp(folder)
        k = max(1, int(round(train_fraction * len(images))))
        tr_i, tr_l, te_i, te_l = images[:k], labels[:k], images[k:], labels[k:]
        kind = "CVPPP"
    else:
        raise FileNotFoundError(f"{folder}: neither a BBBC039 folder (images/, masks/), a CVPPP A1 folder "
                                f"(*_rgb.png, *_label.png) nor an ISBI 2012 folder ({ISBI_VOLUME}, {ISBI_LABELS})")
    if not te_i:
        raise ValueError(f"{folder}: no test images (only {len(tr_i)} images in all)")

    def norm(im):
        im = np.asarray(im)
        if im.ndim == 3:  # RGB: each channel on its own range
            return np.stack([normalize_raw(im[..., c]) for c in range(im.shape[-1])], axis=-1)
        return normalize_raw(im)

    return ImageCollection([norm(i) for i in tr_i], list(tr_l), [norm(i) for i in te_i], list(te_l),
                           f"{kind} {folder.name}: {len(tr_i)} train / {len(te_i)} test images", background)


@dataclass
class Dataset:
    """Raw data with dense labels and a word on where they came from."""

    raw: np.ndarray  # float32 in [0, 1]
    labels: np.ndarray  # uint64 / uint32 instance ids, 0 = background
    source: str  # human-readable origin, for captions
    real: bool


def check_finite(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` unchanged if every value is finite; else a ValueError naming
    ``name`` (a file and key), how many values are NaN or infinite and the first
    one's position. One NaN voxel in a raw volume makes every loss NaN from the first
    iteration and every saved weight NaN, without a word: refuse it at the door."""
    array = np.asarray(array)
    if array.dtype.kind in "fc":
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
            raise ValueError(f"{name}: {int(bad.sum())} non-finite values (NaN or infinite) in an array of shape "
                             f"{array.shape}, the first at {first}; expected finite grey values (repair or mask them)")
    return array


def normalize_raw(raw: np.ndarray, value_range: tuple[float, float] | None = None, *, name: str = "raw") -> np.ndarray:
    """Scale raw data of any dtype to float32 in [0, 1] by a contrast stretch
    between its 0.1th and 99.9th percentiles (robust to 16-bit images that use a
    fraction of their range, and to a few hot pixels), or between the given
    ``value_range`` (lo, hi): one range for all blocks of a large volume. Raw data
    with a NaN or an infinite value are refused (:func:`check_finite`, naming
    ``name``)."""
    raw = check_finite(raw, name)
    x = raw.astype(np.float32)
    if value_range is not None:
        lo, hi = (float(v) for v in value_range)
    else:
        lo, hi = (float(v) for v in np.percentile(x, [0.1, 99.9])) if x.size else (0.0, 1.0)
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32, copy=False)


def load_volume(dataset: str = "auto", *, raw_key: str | None = None, labels: str | None = None,
                labels_key: str | None = None, roi=None, synthetic_shape=(32, 128, 128), seed: int = 0) -> Dataset:
    """Load a 3D EM volume by name (see the module docstring), raw normalised on
    its own range (:func:`normalize_raw`).

    Parameters
    ----------
    dataset : str
        ``auto``, ``fibsem``, ``synthetic``, or the raw volume's ``PATH[:KEY]``
        (HDF5, zarr or TIFF stack).
    raw_key, labels, labels_key : str, optional
        For a path: the raw array's key, the labels' own file ``PATH[:KEY]``
        (default: the raw file), the labels' key. With none of them an HDF5 file
        is read with CREMI's layout (``volumes/raw``, ``volumes/labels/neuron_ids``,
        padded files cropped to the labels).
    roi : tuple of 3 slices, optional
        Crop of a real volume to read.
    synthetic_shape : (Z, Y, X)
        Shape of generated data.
    seed : int
        Seed of generated data.
    """
    if dataset in ("auto", "fibsem", "synthetic"):
        path = real_volume_path() if dataset != "synthetic" else None
        if path is None and dataset == "fibsem":
            raise FileNotFoundError(
                f"dataset='fibsem': {FIBSEM_FILE} not found in {_looked_in()}; set AFFCONS_DATA_DIR "
                "or run `python -m affcons_lib fetch fibsem --dest data/`"
            )
        if path is None:
            if dataset == "auto":
                _warn_generated("real FIB-SEM volume", FIBSEM_FILE, "fibsem")
            raw, lab = make_em_volume(synthetic_shape, seed=seed)
            return Dataset(raw, lab, f"generated EM-like volume {tuple(synthetic_shape)}, seed {seed}", False)
        raw, lab = read_cremi(path, roi=roi)
        return Dataset(normalize_raw(raw), lab, f"FIB-SEM (FlyEM NeuroProof sample 2) {raw.shape}", True)

    path, key = split_path_key(dataset, raw_key)
    if not path.exists():
        raise FileNotFoundError(
            f"dataset={dataset!r}: not 'auto', 'fibsem', 'synthetic', nor an existing HDF5, zarr or TIFF volume"
        )
    if labels is None and key in (None, CREMI_RAW) and labels_key in (None, CREMI_LABELS) \
            and path.suffix.lower() in HDF5_SUFFIXES:
        raw, lab = read_cremi(path, roi=roi)
    else:
        raw, lab = read_raw_and_labels(path, labels, raw_key=key, labels_key=labels_key, ndim=3)
        if roi is not None:
            raw, lab = raw[tuple(roi)], lab[tuple(roi)]
    return Dataset(normalize_raw(raw, name=f"{path}" + (f":{key}" if key else "")), lab, f"{path.name} {raw.shape}",
                   True)


def load_image(dataset: str = "auto", *, raw_key: str | None = None, labels: str | None = None,
               labels_key: str | None = None, synthetic_shape=(256, 256), seed: int = 0) -> Dataset:
    """Load a 2D nuclei image by name (see the module docstring); ``raw_key``,
    ``labels`` and ``labels_key`` as in :func:`load_volume`, for an image file."""
    if dataset in ("auto", "nuclei", "synthetic"):
        folder = real_image_dir() if dataset != "synthetic" else None
        if folder is None and dataset == "nuclei":
            raise FileNotFoundError(
                f"dataset='nuclei': {NUCLEI_DIR}/ with img2d.tif and mask2d.tif not found in {_looked_in()}; "
                "set AFFCONS_DATA_DIR or run `python -m affcons_lib fetch dsb2018 --dest data/`"
            )
        if folder is None:
            if dataset == "auto":
                _warn_generated("real nuclei image", NUCLEI_DIR, "dsb2018")
            raw, lab = make_nuclei_image(synthetic_shape, seed=seed)
            return Dataset(raw, lab, f"generated nuclei image {tuple(synthetic_shape)}, seed {seed}", False)
        img, lab = read_image_pair(folder / "img2d.tif", folder / "mask2d.tif")
        return Dataset(normalize_raw(img), lab, f"DSB2018 nuclei sample {img.shape}", True)

    path, key = split_path_key(dataset, raw_key)
    if path.is_dir() and (path / "img2d.tif").is_file():
        img, lab = read_image_pair(path / "img2d.tif", path / "mask2d.tif")
    elif path.exists() and (labels is not None or labels_key is not None):
        img, lab = read_raw_and_labels(path, labels, raw_key=key, labels_key=labels_key, ndim=2)
    else:
        raise FileNotFoundError(
            f"dataset={dataset!r}: not 'auto', 'nuclei', 'synthetic', a folder with img2d.tif + mask2d.tif, "
            "nor an existing image file with its labels (labels=PATH)"
        )
    return Dataset(normalize_raw(img, name=f"{path}" + (f":{key}" if key else "")), lab, f"{path.name} {img.shape}",
                   True)


def mirror_to_shape(array: np.ndarray, shape) -> np.ndarray:
    """``array`` repeated with alternate mirror images along each axis until it
    reaches ``shape`` (then cut to it): a larger volume with no seams, for
    benchmarks and demonstrations of blockwise processing. Mirrored copies of one
    body keep its id."""
    array = np.asarray(array)
    shape = tuple(int(n) for n in shape)
    if len(shape) != array.ndim or min(shape) < 1:
        raise ValueError(f"shape: expected {array.ndim} positive sizes, got {shape}")
    for axis, n in enumerate(shape):
        copies = [array, np.flip(array, axis)]
        array = np.concatenate([copies[i % 2] for i in range(-(-n // array.shape[axis]))], axis=axis)
        array = np.take(array, np.arange(n), axis=axis)
    return np.ascontiguousarray(array)
