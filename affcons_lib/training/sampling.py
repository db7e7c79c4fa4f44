"""Training data: the train / test split, the sparse annotation, and random
patches with their affinity targets and labeled-region masks.

:func:`prepare_data` loads what a config names; :class:`PatchSampler` draws the
patches of an iteration, each from its own random stream.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..method import affinity
from .. import data
from .config import TrainConfig

__all__ = ["PreparedData", "PatchSampler", "training_sampler", "prepare_data", "describe", "split_part",
           "center_crop", "crop_test_part", "crop_train_part"]


# ------------------------------------------------------------------------ data
@dataclasses.dataclass
class PreparedData:
    """A dataset ready to train on and score: its training part (raw, dense and
    sparse labels) and test part (raw, dense labels), each a list of arrays (one
    volume or image is a list of one; an image collection such as BBBC039 holds
    many), the affinity offsets and where the data came from.

    Raw arrays are float32 in [0, 1] with the labels' shape, or channels first
    (3, H, W) for RGB images; labels are integer arrays, 0 unlabeled.
    """

    raw_train: list
    labels_train: list
    sparse_train: list
    raw_test: list
    labels_test: list
    offsets: tuple
    source: str
    collection: bool = False  # the images of a folder (scored image by image), not one volume or image
    # 2D: what label 0 is, "instance" (nuclei background) or "boundary" (EM membrane); 3D: always boundary
    background: str = "instance"
    # the user's own sparse annotation (TrainConfig.labels_are_sparse): the training part has no
    # dense truth (labels_train holds the annotation), and the test part has one only where a
    # separate test_dataset with its labels was given
    sparse_given: bool = False
    dense_test: bool = True

    def __post_init__(self):
        for name in ("raw_train", "labels_train", "sparse_train", "raw_test", "labels_test"):
            value = getattr(self, name)
            setattr(self, name, list(value) if isinstance(value, (list, tuple)) else [value])
        if not (len(self.raw_train) == len(self.labels_train) == len(self.sparse_train) >= 1) \
                or not len(self.raw_test) == len(self.labels_test) >= 1:
            raise ValueError(f"PreparedData: expected as many raw as label arrays in each part, got train "
                             f"{len(self.raw_train)} / {len(self.labels_train)} / {len(self.sparse_train)}, "
                             f"test {len(self.raw_test)} / {len(self.labels_test)}")

    @property
    def dim(self) -> int:
        """2 or 3, the number of spatial axes."""
        return len(self.offsets[0])

    @property
    def n_nearest(self) -> int:
        """How many leading channels are nearest-neighbour edges."""
        return affinity.N_NEAREST_3D if self.dim == 3 else affinity.N_NEAREST_2D

    @property
    def in_channels(self) -> int:
        """Input channels of the networks: 3 for RGB images, else 1."""
        return 3 if self.raw_train[0].ndim == self.labels_train[0].ndim + 1 else 1

    def part(self, name: str) -> tuple[list, list]:
        """(raw, dense labels) of ``"train"``, ``"test"`` or ``"all"`` (both; one
        volume or image is joined along the split axis, z in 3D, x in 2D)."""
        if name == "train":
            return self.raw_train, self.labels_train
        if name == "test":
            return self.raw_test, self.labels_test
        if name != "all":
            raise ValueError(f"part: expected 'test', 'train' or 'all', got {name!r}")
        if self.collection:
            return self.raw_train + self.raw_test, self.labels_train + self.labels_test
        axis = 0 if self.dim == 3 else 1
        raw_axis = axis + (self.raw_train[0].ndim - self.labels_train[0].ndim)  # after an RGB channel axis
        return ([np.concatenate([self.raw_train[0], self.raw_test[0]], axis=raw_axis)],
                [np.concatenate([self.labels_train[0], self.labels_test[0]], axis=axis)])

    def crop_test(self, size) -> "PreparedData":
        """The test part centre-cropped in-plane to ``size`` (Y, X) for a quicker
        score; an image collection is scored whole, and ``size=None`` keeps all."""
        if size is None or self.collection:
            return self
        return dataclasses.replace(self, raw_test=[center_crop(a, size) for a in self.raw_test],
                                   labels_test=[center_crop(a, size) for a in self.labels_test])

    def crop_train(self, size) -> "PreparedData":
        """The training part (raw, dense and sparse labels) centre-cropped in-plane
        to ``size``: where to measure the affinities on the unlabeled region in
        seconds rather than minutes. Collections and ``size=None`` are kept whole."""
        if size is None or self.collection:
            return self
        crop = lambda arrays: [center_crop(a, size) for a in arrays]  # noqa: E731
        return dataclasses.replace(self, raw_train=crop(self.raw_train), labels_train=crop(self.labels_train),
                                   sparse_train=crop(self.sparse_train))


class PatchSampler:
    """Random training patches with flips, 90° in-plane rotations and intensity
    jitter; targets and masks are computed after augmentation, on the patch.

    ``raw`` and ``labels`` are one volume / image or lists of them (folder datasets
    such as BBBC039; an image is drawn with probability proportional to its area).
    Raw data have the labels' shape, or a leading channel axis (RGB).

    A patch whose labeled region covers less than ``min_labeled`` of its edges is
    drawn again: with sparse labels most random patches hold little annotation.
    """

    def __init__(self, raw, labels, offsets, *, patch, sparse: bool, background_is_instance: bool, widen: bool,
                 n_nearest: int, min_labeled: float = 0.02, augment: bool = True, max_tries: int = 200):
        raws = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        labs = list(labels) if isinstance(labels, (list, tuple)) else [labels]
        patch = tuple(int(p) for p in patch)
        if len(raws) != len(labs) or not raws:
            raise ValueError(f"raw and labels: expected lists of equal, non-zero length, got {len(raws)} and {len(labs)}")
        for r, lab in zip(raws, labs):
            if r.shape[-lab.ndim:] != lab.shape or r.ndim not in (lab.ndim, lab.ndim + 1):
                raise ValueError(f"raw {r.shape} and labels {lab.shape} do not match")
            if any(p > n for p, n in zip(patch, lab.shape)):
                raise ValueError(f"config.patch={patch} is larger than the training data {lab.shape}")
        self.raws, self.labs, self.offsets = raws, labs, offsets
        areas = np.array([lab.size for lab in labs], dtype=np.float64)
        self.weights = areas / areas.sum()
        self.patch, self.sparse, self.bg = patch, sparse, background_is_instance
        self.widen, self.n_nearest = widen, n_nearest
        self.min_labeled, self.augment, self.max_tries = min_labeled, augment, max_tries

    def draw_region(self, rng) -> tuple[int, tuple]:
        """Where the next patch lies: (which array, its slices), drawn from ``rng``
        (an array with probability proportional to its size, then a corner)."""
        k = int(rng.choice(len(self.raws), p=self.weights)) if len(self.raws) > 1 else 0
        corner = [int(rng.integers(0, n - p + 1)) for n, p in zip(self.labs[k].shape, self.patch)]
        return k, tuple(slice(c, c + p) for c, p in zip(corner, self.patch))

    def _crop(self, rng):
        k, region = self.draw_region(rng)
        return self.raws[k][(Ellipsis,) + region].copy(), self.labs[k][region].copy()

    def _augment(self, raw, lab, rng):
        if not self.augment:
            return raw, lab
        lead = raw.ndim - lab.ndim  # 1 for a channel axis
        for axis in range(lab.ndim):
            if rng.random() < 0.5:
                raw, lab = np.flip(raw, axis + lead), np.flip(lab, axis)
        if lab.shape[-1] == lab.shape[-2] and rng.random() < 0.5:
            raw, lab = np.swapaxes(raw, -1, -2), np.swapaxes(lab, -1, -2)
        contrast = rng.uniform(0.8, 1.2)
        brightness = rng.uniform(-0.1, 0.1)
        gamma = rng.uniform(0.8, 1.25)
        raw = np.clip(raw * contrast + brightness, 0, 1) ** gamma
        return np.ascontiguousarray(raw, np.float32), np.ascontiguousarray(lab)

    def sample_one(self, rng):
        for _ in range(self.max_tries):
            raw, lab = self._augment(*self._crop(rng), rng)
            target, valid, mask = affinity.training_targets(
                lab, self.offsets, widen=self.widen, background_is_instance=self.bg and not self.sparse,
                annotated=lab if self.sparse else None)
            if mask.mean() >= self.min_labeled:
                return raw, target, mask, valid
        labeled = sum(int(affinity.labeled_region_mask(lab, self.offsets).sum()) for lab in self.labs) \
            if self.sparse else 0
        edges = sum(lab.size for lab in self.labs) * len(self.offsets)
        raise RuntimeError(
            f"no patch with at least {self.min_labeled:.1%} labeled edges (config.min_labeled) in {self.max_tries} "
            f"draws of {self.patch} patches: the annotation labels {labeled:,} of {edges:,} edges "
            f"({labeled / max(1, edges):.2%}) of the training data; annotate more instances (your own labels, or "
            "sparsity / voxel_budget), use larger patches, or lower config.min_labeled"
        )

    def sample(self, seed: int, iteration: int, first: int, count: int):
        """Samples ``first … first+count-1`` of the global batch of ``iteration``,
        stacked as tensors (raw, target, mask, valid). Sample ``j`` comes from its
        own generator seeded ``(seed, iteration, j)``: a rank draws its share of the
        global batch, and the global batch is the same however it is split."""
        items = [self.sample_one(np.random.default_rng([seed, iteration, j])) for j in range(first, first + count)]
        return [torch.from_numpy(np.stack(x)) for x in zip(*items)]

    def batches(self, seed: int, start: int, stop: int, first: int, count: int, workers: int = 0):
        """The batches of iterations ``start … stop`` in order, as :meth:`sample`
        gives them, drawn in this process (``workers=0``) or ahead of the training
        step in ``workers`` processes (a ``torch.utils.data.DataLoader``). Each
        sample comes from its own stream either way, so both give the same batches.
        Workers pay off where sampling is a large share of a step (on a GPU: 300 of
        475 ms at the paper's scale); on 2 CPU cores they take cores from the step."""
        if workers < 0:
            raise ValueError(f"workers: expected 0 (in this process) or a positive count, got {workers}")
        if workers == 0:
            for t in range(start, stop + 1):
                yield self.sample(seed, t, first, count)
            return
        loader = torch.utils.data.DataLoader(_Iterations(self, seed, start, stop, first, count), batch_size=None,
                                             num_workers=workers, prefetch_factor=2)
        yield from loader


class _Iterations(torch.utils.data.Dataset):
    """Item ``i``: the batch of iteration ``start + i`` (for the DataLoader of
    :meth:`PatchSampler.batches`)."""

    def __init__(self, sampler, seed, start, stop, first, count):
        self.sampler, self.seed, self.start, self.stop = sampler, seed, start, stop
        self.first, self.count = first, count

    def __len__(self):
        return max(0, self.stop - self.start + 1)

    def __getitem__(self, i):
        return self.sampler.sample(self.seed, self.start + i, self.first, self.count)


def training_sampler(cfg: TrainConfig, prepared: PreparedData, **overrides) -> PatchSampler:
    """The sampler ``cfg.method`` trains with: the sparse annotation and its labeled
    region (``full_supervision``: the dense labels, every valid edge), borders
    widened in 3D, patches with less than ``cfg.min_labeled`` labeled edges drawn
    again. ``overrides`` replace :class:`PatchSampler` options (``augment=False``)."""
    full = cfg.method == "full_supervision"
    instance = cfg.dim == 2 and prepared.background == "instance"  # nuclei background; EM membrane is a boundary
    options = dict(patch=cfg.patch, sparse=not full, background_is_instance=instance, widen=cfg.dim == 3,
                   n_nearest=prepared.n_nearest, min_labeled=0.0 if full else cfg.min_labeled,
                   augment=cfg.augment)
    return PatchSampler(prepared.raw_train, prepared.labels_train if full else prepared.sparse_train,
                        prepared.offsets, **{**options, **overrides})


def split_part(array: np.ndarray, fraction: float, dim: int):
    """Train / test parts along z (3D) or x (2D)."""
    axis = 0 if dim == 3 else 1
    cut = int(round(array.shape[axis] * fraction))
    index = [slice(None)] * array.ndim
    index[axis] = slice(0, cut)
    train_part = array[tuple(index)]
    index[axis] = slice(cut, None)
    return train_part, array[tuple(index)]


def prepare_data(cfg: TrainConfig) -> PreparedData:
    """Load the dataset, split it (or load the separate ``test_dataset``), annotate
    the training part (:class:`PreparedData`). Raw is normalised per volume: a
    separate test volume on its own range."""
    keys = dict(raw_key=cfg.raw_key, labels=cfg.labels, labels_key=cfg.labels_key)
    if cfg.dim == 3:
        ds = data.load_volume(cfg.dataset, synthetic_shape=(64, 160, 160), seed=cfg.annotation_seed, **keys)
        offsets = affinity.OFFSETS_3D
    elif data.is_image_collection(cfg.dataset):  # BBBC039 / CVPPP folder: lists of images
        coll = data.load_image_collection(cfg.dataset, cfg.train_fraction)
        first = lambda im: np.moveaxis(im, -1, 0) if im.ndim == 3 else im  # RGB: channels first
        sparse = [_sparse_train(lab, cfg, cfg.annotation_seed + i, f"{cfg.dataset} training image {i}")
                  for i, lab in enumerate(coll.train_labels)]
        return PreparedData([first(i) for i in coll.train_images], coll.train_labels, sparse,
                            [first(i) for i in coll.test_images], coll.test_labels, affinity.OFFSETS_2D,
                            coll.source, collection=True, background=coll.background,
                            sparse_given=cfg.labels_are_sparse, dense_test=not cfg.labels_are_sparse)
    else:
        ds = data.load_image(cfg.dataset, synthetic_shape=(256, 512), seed=cfg.annotation_seed, **keys)
        offsets = affinity.OFFSETS_2D
        if ds.labels.ndim == 3:  # a stack of sections: the first train_fraction train, the rest test
            return _sections(ds, cfg)
    if cfg.test_dataset is None:
        raw_train, raw_test = split_part(ds.raw, cfg.train_fraction, cfg.dim)
        lab_train, lab_test = split_part(ds.labels, cfg.train_fraction, cfg.dim)
        source = ds.source
    else:
        test_keys = {**keys, "labels": cfg.test_labels}
        load = data.load_volume if cfg.dim == 3 else data.load_image
        test = load(cfg.test_dataset, **test_keys)
        raw_train, lab_train, raw_test, lab_test = ds.raw, ds.labels, test.raw, test.labels
        source = f"{ds.source}; test: {test.source}"
    sparse = _sparse_train(lab_train, cfg, cfg.annotation_seed, f"{cfg.labels or cfg.dataset} (training part)")
    if raw_train.ndim == lab_train.ndim + 1:  # an RGB image file: channels first, as the networks take them
        raw_train, raw_test = np.moveaxis(raw_train, -1, 0), np.moveaxis(raw_test, -1, 0)
    return PreparedData(raw_train, lab_train, sparse, raw_test, lab_test, offsets, source,
                        sparse_given=cfg.labels_are_sparse,
                        dense_test=not cfg.labels_are_sparse or cfg.test_dataset is not None)


def describe(prepared: PreparedData, cfg: TrainConfig | None = None, n_patches: int = 32) -> str:
    """A few lines on what a run trains on: the parts' shapes, the annotated
    instances (count, largest sizes, share of voxels) and, given ``cfg``, the
    share of labeled edges in random training patches (before augmentation)."""
    sparse, dense = prepared.sparse_train, prepared.labels_train
    annotated = np.concatenate([data.instance_sizes(s)[1] for s in sparse])
    n_all = sum(len(data.instance_sizes(d)[0]) for d in dense)
    voxels = sum(int((s > 0).sum()) for s in sparse) / max(1, sum(s.size for s in sparse))
    shapes = lambda arrays: ", ".join(str(r.shape) for r in arrays[:3]) + (" ..." if len(arrays) > 3 else "")
    largest = ", ".join(str(int(v)) for v in np.sort(annotated)[::-1][:8])
    lines = [f"data: {prepared.source}",
             f"train part {shapes(prepared.labels_train)}; test part {shapes(prepared.labels_test)}",
             f"annotated: {len(annotated)} of {n_all} training instances, {voxels:.1%} of the voxels"
             + (f"; largest sizes {largest}" + (" ..." if len(annotated) > 8 else "") if len(annotated) else "")]
    if cfg is not None and cfg.method != "full_supervision":
        sampler = training_sampler(cfg, prepared, min_labeled=0.0, augment=False)
        rng = np.random.default_rng(0)
        shares = []
        for _ in range(n_patches):
            _, lab = sampler._crop(rng)
            shares.append(affinity.labeled_region_mask(lab, prepared.offsets).mean())
        shares = np.array(shares)
        lines.append(f"labeled edges per random {tuple(cfg.patch)} patch: mean {shares.mean():.1%}, "
                     f"{(shares >= cfg.min_labeled).mean():.0%} of patches reach min_labeled={cfg.min_labeled} "
                     f"(annotated: {cfg.annotation_rule()})")
    return "\n".join(lines)


def _sections(ds, cfg: TrainConfig) -> PreparedData:
    """A stack of 2D sections as an image collection (EM sections annotated in 2D,
    napari's painted sections): sections split by ``train_fraction``, label 0 a
    boundary (EM). With ``labels_are_sparse`` a section may hold no annotation, as
    long as the training sections hold some."""
    raw_train, lab_train, raw_test, lab_test = data.split_sections(ds.raw, ds.labels, cfg.train_fraction)
    k = len(lab_train)
    if not raw_test:
        raise ValueError(f"{cfg.dataset}: {ds.labels.shape[0]} sections leave none to test with "
                         f"train_fraction={cfg.train_fraction}")
    where = f"{cfg.labels or cfg.dataset} (training sections 0-{k - 1})"
    if cfg.labels_are_sparse:
        data.check_sparse_annotation(np.stack(lab_train), where, min_size=cfg.min_instance_size(), border_axes=(1, 2))
        sparse = lab_train
    else:
        sparse = [_annotate(lab, cfg, cfg.annotation_seed + i) for i, lab in enumerate(lab_train)]
    return PreparedData(raw_train, lab_train, sparse, raw_test, lab_test, affinity.OFFSETS_2D,
                        f"{ds.source}: {k} train / {len(raw_test)} test sections", collection=True,
                        background="boundary", sparse_given=cfg.labels_are_sparse,
                        dense_test=not cfg.labels_are_sparse)


def _sparse_train(labels, cfg: TrainConfig, seed: int, where: str):
    """The sparse annotation of a training part: the user's own, checked
    (``labels_are_sparse``), or drawn from dense labels as the config says."""
    if cfg.labels_are_sparse:
        return data.check_sparse_annotation(labels, where, min_size=cfg.min_instance_size())
    return _annotate(labels, cfg, seed)


def _annotate(labels, cfg: TrainConfig, seed: int):
    size = cfg.min_instance_size()
    if cfg.voxel_budget is not None:
        return data.annotate_instances(labels, cfg.annotation, voxel_budget=cfg.voxel_budget, seed=seed,
                                       min_size=size)
    return data.annotate_instances(labels, cfg.annotation, fraction=cfg.sparsity, seed=seed, min_size=size)




def center_crop(array: np.ndarray, size) -> np.ndarray:
    """The centred in-plane region of ``size`` (Y, X) of an array (..., Y, X), each
    side clipped to the array; ``size=None`` returns the array."""
    if size is None:
        return array
    ys, xs = array.shape[-2:]
    h, w = min(int(size[0]), ys), min(int(size[1]), xs)
    return array[..., (ys - h) // 2:(ys - h) // 2 + h, (xs - w) // 2:(xs - w) // 2 + w]


def crop_test_part(prepared: PreparedData, size) -> PreparedData:
    """:meth:`PreparedData.crop_test`: the test part centre-cropped in-plane to
    ``size``; collections and ``size=None`` are kept whole."""
    return prepared.crop_test(size)


def crop_train_part(prepared: PreparedData, size) -> PreparedData:
    """:meth:`PreparedData.crop_train`: the training part centre-cropped in-plane
    to ``size``; collections and ``size=None`` are kept whole."""
    return prepared.crop_train(size)
