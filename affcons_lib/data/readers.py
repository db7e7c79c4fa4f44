"""Readers for the real formats the paper uses.

Every reader returns plain numpy arrays with documented axes, in the file's own
dtype (raw is not normalised here; see :func:`affcons_lib.data.normalize_raw`),
and fails with :class:`DataFormatError` (or ``FileNotFoundError``) naming the
file, key and what was expected.

| dataset          | reader              | raw                        | labels              |
|------------------|---------------------|----------------------------|---------------------|
| CREMI (A/B/C)    | :func:`read_cremi`  | (Z, Y, X) uint8            | (Z, Y, X) uint64    |
| AC3/AC4, SNEMI3D | :func:`read_snemi`  | (Z, Y, X) uint8            | (Z, Y, X) integer   |
| BBBC039 v1       | :func:`read_bbbc039`| list of (Y, X) uint16      | list of (Y, X) int32|
| CVPPP A1         | :func:`read_cvppp`  | list of (Y, X, 3) uint8    | list of (Y, X) int32|
| ISBI 2012        | :func:`read_isbi2012` | (Z, Y, X) uint8          | (Z, Y, X) int32, 0 = membrane |
| 2D TIFF/PNG pair | :func:`read_image_pair` | (Y, X[, C])            | (Y, X) integer      |
| any one array    | :func:`read_array`  | HDF5 / zarr ``PATH[:KEY]``, TIFF stack     |                     |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "HDF5_SUFFIXES",
    "DataFormatError",
    "split_path_key",
    "open_volume",
    "read_array",
    "read_raw_and_labels",
    "read_cremi",
    "read_snemi",
    "read_bbbc039",
    "read_cvppp",
    "read_isbi2012",
    "read_image_pair",
    "read_label_image",
]

CREMI_RAW = "volumes/raw"
CREMI_LABELS = "volumes/labels/neuron_ids"


class DataFormatError(ValueError):
    """A data file exists but does not hold what the reader expects."""


def _existing(path, what: str = "file") -> Path:
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and labels.size and np.all(labels == np.round(labels)):
            hint = " (the values are whole numbers: convert them with .astype(np.uint64) first)"
        else:
            hint = ""
        raise DataFormatError(f"{where}: expected an integer label array, got dtype {labels.dtype}{hint}")
    if np.issubdtype(labels.dtype, np.signedinteger) and labels.size and labels.min() < 0:
        raise DataFormatError(f"{where}: labels must be non-negative, found {labels.min()}")
    return labels


def _check_same_shape(raw_shape, labels_shape, where: str, spatial: int | None = None) -> None:
    rs = tuple(raw_shape[:spatial]) if spatial else tuple(raw_shape)
    if rs != tuple(labels_shape):
        raise DataFormatError(f"{where}: image shape {tuple(raw_shape)} does not match label shape {tuple(labels_shape)}")


def _h5_dataset(f, key: str, path: Path):
    if key not in f:
        found = []
        f.visit(lambda name: found.append(name) if hasattr(f[name], "shape") else None)
        raise DataFormatError(f"{path}: no dataset '{key}'; datasets in the file: {found or 'none'}")
    ds = f[key]
    if not hasattr(ds, "shape"):
        raise DataFormatError(f"{path}: '{key}' is a group, not a dataset")
    return ds


def read_cremi(
    path,
    *,
    raw_key: str = CREMI_RAW,
    labels_key: str | None = CREMI_LABELS,
    roi: Sequence[slice] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a CREMI-layout HDF5 volume.

    Parameters
    ----------
    path : str or Path
        An HDF5 file such as CREMI's ``sample_C_20160501.hdf`` or the shared
        ``neuroproof_training_sample2.h5``.
    raw_key, labels_key : str
        Datasets to read; ``labels_key=None`` reads only the raw data.
    roi : tuple of 3 slices, optional
        Read only this region (h5py reads just those chunks).

    Returns
    -------
    raw : ndarray, shape (Z, Y, X), the file's dtype (uint8 for EM)
    labels : ndarray of unsigned int, shape (Z, Y, X), or None
        Instance ids, 0 = no instance. In CREMI's *padded* files the labels cover
        a sub-region of the raw data given by their ``offset`` attribute (nm); raw
        is then cropped to that region.

    Raises
    ------
    FileNotFoundError, DataFormatError
    """
    import h5py

    p = _existing(path, "CREMI volume")
    roi = tuple(roi) if roi is not None else (slice(None),) * 3
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise DataFormatError(f"{p}: not a readable HDF5 file ({err})") from err
    with f:
        raw_ds = _h5_dataset(f, raw_key, p)
        if raw_ds.ndim != 3:
            raise DataFormatError(f"{p}:{raw_key}: expected a 3D (Z, Y, X) volume, got shape {raw_ds.shape}")
        if labels_key is None:
            return raw_ds[roi], None
        lab_ds = _h5_dataset(f, labels_key, p)
        _check_labels(np.empty(0, lab_ds.dtype), f"{p}:{labels_key}")
        if lab_ds.shape != raw_ds.shape:
            offset = lab_ds.attrs.get("offset")
            res = raw_ds.attrs.get("resolution")
            if offset is None or res is None:
                _check_same_shape(raw_ds.shape, lab_ds.shape, f"{p} ({raw_key} vs {labels_key})")
            start = [int(round(o / r)) for o, r in zip(offset, res)]
            crop = tuple(slice(s, s + n) for s, n in zip(start, lab_ds.shape))
            raw = raw_ds[crop][roi]
        else:
            raw = raw_ds[roi]
        labels = _check_labels(lab_ds[roi], f"{p}:{labels_key}")
    return raw, labels


def split_path_key(spec, key: str | None = None) -> tuple[Path, str | None]:
    """``FILE.h5:volumes/raw`` -> (FILE.h5, "volumes/raw"). A path that exists as
    written is never split (a colon may belong to its name); an explicit ``key``
    wins over one in the text."""
    text = os.fspath(spec)
    if key is None and ":" in text and not Path(text).expanduser().exists():
        text, key = text.rsplit(":", 1)
    return Path(text).expanduser(), (key or None)


HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_TIFF = (".tif", ".tiff")


def _only_array(names: list[str], where: str, key_word: str) -> str:
    if len(names) == 1:
        return names[0]
    raise DataFormatError(f"{where}: holds {len(names)} arrays {names or ''}; name one as PATH:KEY "
                          f"(or the config's {key_word})")


def read_array(spec, key: str | None = None, *, key_word: str = "raw_key / labels_key") -> np.ndarray:
    """One array from an HDF5 file, a zarr store or a TIFF stack, whole.

    Parameters
    ----------
    spec : str or Path
        ``PATH`` or ``PATH:KEY``. HDF5 (``.h5``, ``.hdf5``, ``.hdf``) and zarr
        (``.zarr`` or any folder) name the array by ``KEY``; a file holding a
        single array needs no key. TIFF (``.tif``, ``.tiff``; multi-page = a stack
        of sections) has no keys.
    key : str, optional
        The array's key; wins over one in ``spec``.
    key_word : str
        How the caller's users name the key, for error messages.

    Returns
    -------
    ndarray in the file's dtype and axis order.

    Raises
    ------
    FileNotFoundError, DataFormatError
        Naming the file, the key and the arrays the file does hold.
    """
    path, key = split_path_key(spec, key)
    path = _existing(path, "array file")
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise DataFormatError(f"{path}: not a readable HDF5 file ({err})") from err
        with f:
            if key is None:
                found = []
                f.visit(lambda name: found.append(name) if hasattr(f[name], "shape") else None)
                key = _only_array(found, str(path), key_word)
            return _h5_dataset(f, key, path)[...]
    if suffix in _TIFF:
        import tifffile

        if key is not None:
            raise DataFormatError(f"{path}: a TIFF file has no keys, got key {key!r}")
        try:
            return tifffile.imread(path)
        except Exception as err:  # tifffile raises several types for a broken file
            raise DataFormatError(f"{path}: not a readable TIFF file ({err})") from err
    if path.is_dir():  # zarr v2 / v3 store
        import zarr

        try:
            node = zarr.open(store=str(path), mode="r")
        except Exception as err:  # zarr raises several types for "not a store"
            raise DataFormatError(f"{path}: not a zarr store ({err})") from None
        if key is not None:
            try:
                node = node[key]
            except Exception:
                raise DataFormatError(f"{path}: no zarr array {key!r}; arrays: {_zarr_arrays(node)}") from None
        elif not hasattr(node, "shape"):
            node = node[_only_array(_zarr_arrays(node), str(path), key_word)]
        if not hasattr(node, "shape"):
            raise DataFormatError(f"{path}:{key}: a zarr group, not an array; arrays: {_zarr_arrays(node)}")
        return np.asarray(node[...])
    raise DataFormatError(f"{path}: unknown format '{suffix}'; expected HDF5 (.h5, .hdf5, .hdf), "
                          "a zarr folder or a TIFF stack (.tif, .tiff)")


def _zarr_arrays(group) -> list[str]:
    names = []

    def walk(g, prefix):
        for name, item in g.members():
            if hasattr(item, "shape"):
                names.append(prefix + name)
            else:
                walk(item, prefix + name + "/")
    if not hasattr(group, "shape"):
        walk(group, "")
    return names


def read_raw_and_labels(raw, labels=None, *, raw_key: str | None = None, labels_key: str | None = None,
                        ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Raw data and dense instance labels from any pair of arrays on disk.

    Parameters
    ----------
    raw : str or Path
        ``PATH[:KEY]`` of the raw array (see :func:`read_array`).
    labels : str or Path, optional
        ``PATH[:KEY]`` of the labels; default: the raw file itself.
    raw_key, labels_key : str, optional
        Keys inside HDF5 / zarr files (win over ``:KEY``). In a file holding both,
        ``labels_key`` defaults to CREMI's ``volumes/labels/neuron_ids`` when
        ``raw_key`` is CREMI's too; a file holding one array needs no key.
    ndim : 2 or 3
        Spatial dimensions: (Z, Y, X) volumes or (Y, X) images (raw may add a
        trailing colour axis); with 2, raw and labels of one 3D shape are a stack
        of sections (Z, Y, X), each an image.

    Returns
    -------
    raw : ndarray, (Z, Y, X) or (Y, X[, C]), the file's dtype
    labels : ndarray of integers, the raw data's spatial shape; 0 = no instance

    Raises
    ------
    FileNotFoundError, DataFormatError
    """
    raw_path, raw_key = split_path_key(raw, raw_key)
    raw_array = read_array(raw_path, raw_key, key_word="raw_key")
    if raw_array.ndim not in (ndim, ndim + 1) or (raw_array.ndim == ndim + 1 and ndim == 3):
        axes = "(Z, Y, X)" if ndim == 3 else "(Y, X) or (Y, X, C)"
        raise DataFormatError(f"{raw_path}{':' + raw_key if raw_key else ''}: expected a {ndim}D raw array {axes}, "
                              f"got shape {raw_array.shape}")
    if labels is None:
        labels_path = raw_path
        if labels_key is None and raw_key == CREMI_RAW:
            labels_key = CREMI_LABELS
    else:
        labels_path, labels_key = split_path_key(labels, labels_key)
    if labels_path == raw_path and raw_path.suffix.lower() in _TIFF:
        raise DataFormatError(f"{raw_path}: a TIFF file holds one array; give the labels' own file (labels=PATH)")
    if labels_path == raw_path and labels_key in (None, raw_key):
        raise DataFormatError(f"{raw_path}: the labels would be read from the raw array's file; name their array "
                              "(labels_key, or labels=PATH:KEY) or their own file (labels=PATH)")
    where = f"{labels_path}{':' + labels_key if labels_key else ''}"
    label_array = _check_labels(read_array(labels_path, labels_key, key_word="labels_key"), where)
    if ndim == 2 and raw_array.ndim == 3 and label_array.shape == raw_array.shape:
        return raw_array, label_array  # a stack of 2D sections (Z, Y, X), each an image of its own
    _check_same_shape(raw_array.shape, label_array.shape, f"{raw_path} vs {where}", spatial=ndim)
    return raw_array, label_array


def _read_array(path: Path, key: str) -> np.ndarray:
    """:func:`read_array` for readers whose default key (``main``) means nothing to TIFF."""
    return read_array(path, None if path.suffix.lower() in _TIFF else key)


def read_snemi(raw_path, labels_path=None, *, raw_key: str = "main", labels_key: str = "main"):
    """Read AC3/AC4 (Kasthuri et al.; SNEMI3D) volumes, from HDF5 or TIFF stacks.

    The field's copies store AC3/AC4 as HDF5 files with one dataset (``main`` by
    convention) or, for SNEMI3D, as multi-page TIFFs (``train-input.tif``,
    ``train-labels.tif``).

    Parameters
    ----------
    raw_path, labels_path : str or Path
        ``.h5``/``.hdf5``/``.hdf`` or ``.tif``/``.tiff``; ``labels_path`` optional.
    raw_key, labels_key : str
        Dataset names inside HDF5 files.

    Returns
    -------
    raw : ndarray, shape (Z, Y, X)
    labels : ndarray of int, shape (Z, Y, X), or None
    """
    rp = _existing(raw_path, "raw volume")
    raw = _read_array(rp, raw_key)
    if raw.ndim != 3:
        raise DataFormatError(f"{rp}: expected a 3D (Z, Y, X) volume, got shape {raw.shape}")
    if labels_path is None:
        return raw, None
    lp = _existing(labels_path, "label volume")
    labels = _check_labels(_read_array(lp, labels_key), str(lp))
    _check_same_shape(raw.shape, labels.shape, f"{rp} vs {lp}")
    return raw, labels


def read_label_image(path) -> np.ndarray:
    """Read a 2D instance-label image (PNG or TIFF) as int32 ids, 0 = background.

    * palette or gray PNG / TIFF: the stored values are the ids (CVPPP, DSB2018);
    * RGB(A) PNG: each colour is an id, and connected regions of one colour are
      distinct instances -- BBBC039 encodes touching nuclei by different colours.
    """
    p = _existing(path, "label image")
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        lab = tifffile.imread(p)
    else:
        from PIL import Image

        with Image.open(p) as im:
            lab = np.asarray(im)  # mode 'P' gives palette indices, not colours
    if lab.ndim == 3:
        from skimage.measure import label as connected

        rgb = lab[..., :3].astype(np.int64)
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        return connected(code, background=0, connectivity=1).astype(np.int32)
    if lab.ndim != 2:
        raise DataFormatError(f"{p}: expected a 2D label image, got shape {lab.shape}")
    return _check_labels(lab, str(p)).astype(np.int32)


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode in ("P", "RGBA", "CMYK") else im)


def read_image_pair(image_path, label_path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 2D image and its instance labels (TIFF or PNG), e.g. the DSB2018
    sample ``img2d.tif`` / ``mask2d.tif``.

    Returns
    -------
    image : ndarray, shape (Y, X) or (Y, X, C), the file's dtype
    labels : ndarray of int32, shape (Y, X)
    """
    ip = _existing(image_path, "image")
    image = _read_image(ip)
    labels = read_label_image(label_path)
    _check_same_shape(image.shape, labels.shape, f"{ip} vs {label_path}", spatial=2)
    return image, labels


def _split_names(root: Path, split: str) -> list[str]:
    f = root / "metadata" / f"{split}.txt"
    if not f.exists():
        raise FileNotFoundError(f"BBBC039 split list not found: {f} (from metadata.zip)")
    return [Path(line.strip()).stem for line in f.read_text().splitlines() if line.strip()]


def read_bbbc039(root, split: str | None = None):
    """Read BBBC039 v1 (nuclei of U2OS cells, fluorescence).

    Layout as unpacked from the Broad's ``images.zip``, ``masks.zip`` and
    ``metadata.zip``: ``root/images/*.tif`` (520×696, uint16), ``root/masks/*.png``
    (touching nuclei in different colours) and ``root/metadata/{training,
    validation,test}.txt`` (100 / 50 / 50 names).

    Parameters
    ----------
    root : str or Path
    split : {'training', 'validation', 'test'}, optional
        Read only the images of that split; all images by default.

    Returns
    -------
    images : list of ndarray, each (Y, X) uint16
    labels : list of ndarray, each (Y, X) int32
    names : list of str
    """
    root = _existing(root, "BBBC039 folder")
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"BBBC039 sub-folder not found: {d}")
    if split is None:
        names = sorted(p.stem for p in mask_dir.glob("*.png"))
    elif split in ("training", "validation", "test"):
        names = _split_names(root, split)
    else:
        raise ValueError(f"split: expected 'training', 'validation', 'test' or None, got {split!r}")
    if not names:
        raise DataFormatError(f"{mask_dir}: no *.png masks found")
    images, labels = [], []
    for name in names:
        img, lab = read_image_pair(img_dir / f"{name}.tif", mask_dir / f"{name}.png")
        images.append(img)
        labels.append(lab)
    return images, labels, names


ISBI_VOLUME, ISBI_LABELS = "train-volume.tif", "train-labels.tif"


def read_isbi2012(folder):
    """Read the ISBI 2012 EM segmentation challenge's training data.

    Layout as the challenge ships it: ``folder/train-volume.tif`` (30 serial-section
    TEM sections, uint8, multi-page TIFF) and ``folder/train-labels.tif`` (255 inside
    a cell, 0 on the membrane). The sections are 50 nm apart and 4 nm pixels wide,
    too anisotropic to link instances across them: an instance is a 4-connected
    component of 255 within one section.

    Returns
    -------
    raw : ndarray of uint8, shape (Z, Y, X)
    labels : ndarray of int32, shape (Z, Y, X)
        Instance ids, unique over the stack (section by section); 0 = membrane,
        the boundary between cells (not a region of its own).
    """
    import tifffile
    from scipy import ndimage

    folder = _existing(folder, "ISBI 2012 folder")
    raw = np.asarray(tifffile.imread(_existing(folder / ISBI_VOLUME, "ISBI 2012 raw volume")))
    membrane = np.asarray(tifffile.imread(_existing(folder / ISBI_LABELS, "ISBI 2012 labels")))
    if raw.ndim != 3:
        raise DataFormatError(f"{folder / ISBI_VOLUME}: expected a stack of sections (Z, Y, X), got shape {raw.shape}")
    _check_same_shape(raw.shape, membrane.shape, f"{folder / ISBI_VOLUME} vs {folder / ISBI_LABELS}")
    values = np.unique(membrane)
    if not set(values.tolist()) <= {0, 255}:
        raise DataFormatError(f"{folder / ISBI_LABELS}: expected 0 (membrane) and 255 (cell) only, got values "
                              f"{values[:8].tolist()}{' ...' if values.size > 8 else ''}")
    labels = np.zeros(membrane.shape, np.int32)
    top = 0
    for z in range(membrane.shape[0]):
        section, n = ndimage.label(membrane[z] == 255)  # 4-connectivity
        labels[z] = np.where(section > 0, section + top, 0)
        top += n
    return raw, labels


def read_cvppp(folder):
    """Read CVPPP A1 (Arabidopsis rosettes): ``plantNNN_rgb.png`` with
    ``plantNNN_label.png`` (palette PNG, one index per leaf, 0 = background).

    Returns
    -------
    images : list of ndarray, each (Y, X, 3) uint8
    labels : list of ndarray, each (Y, X) int32
    names : list of str (``plantNNN``)
    """
    folder = _existing(folder, "CVPPP folder")
    rgbs = sorted(folder.glob("*_rgb.png"))
    if not rgbs:
        raise DataFormatError(f"{folder}: no *_rgb.png images found (expected CVPPP A1 layout)")
    images, labels, names = [], [], []
    for rgb in rgbs:
        name = rgb.name[: -len("_rgb.png")]
        img, lab = read_image_pair(rgb, folder / f"{name}_label.png")
        images.append(img[..., :3])
        labels.append(lab)
        names.append(name)
    return images, labels, names


def open_volume(path: str, key: str | None = None, mode: str = "r"):
    """A chunked array on disk, read lazily by slicing: an HDF5 dataset or a zarr
    array (``path:key`` or ``key=``). Raises with the file and key when either is
    missing or the array is not 3D."""
    path, key = split_path_key(path, key)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    if p.suffix.lower() in (".h5", ".hdf", ".hdf5", ".n5h5"):
        import h5py

        f = h5py.File(p, mode)
        if not key or key not in f:
            keys = []
            f.visit(lambda k: keys.append(k) if isinstance(f[k], h5py.Dataset) else None)
            f.close()
            raise KeyError(f"{p}: dataset {key!r} not found; datasets: {keys}")
        arr = f[key]
    else:
        import zarr

        try:
            arr = zarr.open_array(store=str(p / key) if key else str(p), mode=mode)
        except Exception as err:  # zarr raises several types for "not an array"
            raise KeyError(f"{p}: no zarr array at {key or '/'!r} ({err})") from None
    if arr.ndim not in (3, 4):
        raise ValueError(f"{p}:{key}: expected a 3D volume (Z, Y, X) or (C, Z, Y, X), got shape {arr.shape}")
    return arr
