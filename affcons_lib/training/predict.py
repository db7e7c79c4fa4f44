"""Predict affinities of a whole volume / image with a trained f(θ2).

    python -m affcons_lib predict CHECKPOINT --out PRED.h5 [--part test|train|all]
                                  [--tile 8 64 64] [--stride 4 32 32] [--branch embedding|affinity]
                                  [--set test_dataset=OTHER.h5 --set raw_key=... ...]
    python -m affcons_lib predict CHECKPOINT --blockwise --raw VOL.h5:volumes/raw --out AFFS.zarr
                                  [--block 64 256 256] [--workers 4] [--tile ...] [--stride ...]

Writes, atomically, an HDF5 file with ``affinities`` (C, *spatial; attribute
``offsets``), ``entropy`` and the dense ``labels`` of the predicted part, which
``python -m affcons_lib evaluate`` reads. The data are the run's own (its
config's ``test_dataset``, or the held-out part of ``dataset``); ``--set`` points
the data keys (:data:`DATA_KEYS`) elsewhere, e.g. at another test volume. With ``--blockwise``, predicts any 3D
raw volume on disk (chunked HDF5 or zarr) block by block with daisy workers into
a zarr array, never holding the volume (:mod:`affcons_lib.blockwise.predict`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._atomic import atomic_path
from .checkpoint import load_checkpoint, set_threads
from .config import load_config
from ..data import check_finite
from .inference import default_stride, default_tile, part_tiling, predict_affinities
from .sampling import PreparedData, prepare_data

__all__ = ["DATA_KEYS", "Prediction", "predict_part", "ScoredRun", "score_run"]

#: Config keys that ``--set`` may change at prediction time: where the data are,
#: never how the networks were built or trained.
DATA_KEYS = ("dataset", "raw_key", "labels", "labels_key", "test_dataset", "test_labels", "train_fraction")


class Prediction(NamedTuple):
    """What :func:`predict_part` returns: lists with one entry per volume or image
    of the part (one for a volume), whatever the dataset."""

    affinities: list  # float32 (C, *spatial) in [0, 1] each
    entropy: list | None  # like affinities; None when not asked for
    labels: list  # the dense labels, (*spatial) each
    offsets: tuple


def predict_part(checkpoint, part: str = "test", *, tile=None, stride=None, branch: str = "embedding",
                 device="cpu", prepared: PreparedData | None = None, data_overrides=(),
                 with_entropy: bool = True) -> Prediction:
    """Affinities, entropy and dense labels of one part (``"test"``, ``"train"`` or
    ``"all"``) of the run's dataset, as a :class:`Prediction` of lists.
    ``data_overrides`` (``key=value`` texts or a dict of :data:`DATA_KEYS`) point
    the run's config at other data. ``with_entropy=False`` skips the entropy
    (None in its place): a score needs the affinities alone."""
    nets, cfg, _ = load_checkpoint(checkpoint, device)
    if branch not in nets:
        raise ValueError(f"branch={branch!r}: the checkpoint holds {sorted(nets)}")
    if data_overrides:
        items = data_overrides.items() if isinstance(data_overrides, dict) else \
            [tuple(t.split("=", 1)) if "=" in t else (t, None) for t in data_overrides]
        for key, value in items:
            if key not in DATA_KEYS or value is None:
                raise ValueError(f"--set {key}{'' if value is None else '=' + str(value)}: expected KEY=VALUE "
                                 f"with KEY one of {DATA_KEYS}")
        changed = load_config(None, dict(items) if isinstance(data_overrides, dict) else list(data_overrides))
        for key, value in items:
            setattr(cfg, key, getattr(changed, key))
        cfg.validate()
    prepared = prepared or prepare_data(cfg)
    if part == "all" and cfg.test_dataset is not None:
        raise ValueError(f"part='all': the run has a separate test_dataset ({cfg.test_dataset}); "
                         "predict --part train and --part test one by one")
    raws, labels = prepared.part(part)

    def one(image, lab):
        t, s = (tuple(tile), default_stride(tile)) if tile else part_tiling(lab.shape, cfg.patch,
                                                                             nets[branch].divisor)
        s = tuple(stride) if stride else s
        out = predict_affinities(nets[branch], image, prepared.offsets, tile=t, stride=s, with_entropy=with_entropy)
        out = out if with_entropy else (out, None)
        check_finite(out[0], f"affinities predicted by {checkpoint}")  # NaN weights give NaN affinities
        return out

    results = [one(image, lab) for image, lab in zip(raws, labels)]
    return Prediction([r[0] for r in results], [r[1] for r in results] if with_entropy else None, labels,
                      prepared.offsets)


@dataclasses.dataclass
class ScoredRun:
    """A trained run scored on its test part (:func:`score_run`).

    Attributes
    ----------
    scores : dict
        One row of a score table. 3D: ``voi``, ``voi_split``, ``voi_merge``,
        ``arand``, ``threshold`` (the instrument, best threshold), ``fragments_voi``; 2D:
        ``aji``, ``dice``, ``f1``, ``pq``, ``sbd``, ``dic``. For one volume or image
        also the affinity-level scores (no segmentation, no threshold):
        ``test_error``, ``test_ap`` on the test part, ``unlabeled_error``,
        ``unlabeled_ap`` on the unlabeled region of the training part, and each
        region's share of cuts (``test_cut_share``, ``unlabeled_cut_share``: the AP
        of a random ranking, the error of "every affinity 1").
    prediction : Prediction
        The test prediction (lists, one entry per volume or image), its entropy
        (None unless asked for) and the dense labels.
    segmentations : list
        The scored segmentation of each.
    seconds : dict
        Where the time went: ``predict`` (the networks on the test part and the
        training crop) and ``score`` (segmentation and measures).
    """

    scores: dict
    prediction: Prediction
    segmentations: list
    seconds: dict = dataclasses.field(default_factory=dict)


def score_run(checkpoint, prepared: PreparedData, *, train_crop=None, with_entropy: bool = False) -> ScoredRun:
    """Score a run as notebooks 01 and 02 compare methods: its f(θ2) predicts the
    test part of ``prepared``, which is segmented and scored
    (:func:`~affcons_lib.evaluation.evaluate.score_prediction`), and, for one volume or image,
    also its affinities on the test part and on the unlabeled region of the
    training part (centre-cropped in-plane to ``train_crop``; None: all of it),
    the region where the cross-consistency acts."""
    from ..evaluation.evaluate import SCORES_2D, affinity_scores, score_prediction

    if not prepared.dense_test:
        raise ValueError("score_run: the test part holds a sparse annotation (labels_are_sparse without a "
                         "test_dataset), not dense labels to score against; give test_dataset and test_labels, "
                         "or predict and look (python -m affcons_lib predict)")
    clock = _Clock()
    pred = clock("predict", predict_part, checkpoint, "test", prepared=prepared, with_entropy=with_entropy)
    affs, labels, offsets = pred.affinities, pred.labels, pred.offsets
    if not prepared.collection:  # one volume or image
        affs, labels = affs[0], labels[0]
    background = {} if prepared.dim == 3 else {"background": prepared.background}
    s = clock("score", score_prediction, affs, labels, offsets, **background)
    if prepared.dim == 3:
        row = dict(voi=s["voi"], voi_split=s["voi_split"], voi_merge=s["voi_merge"], arand=s["arand"],
                   threshold=s["threshold"], fragments_voi=s["fragments"]["voi"])
    else:
        row = {k: s[k] for k in SCORES_2D}
        row["fragments_voi"] = s["fragments"]["voi"]
    a = clock("score", affinity_scores, affs, labels, offsets, **background)
    row.update(test_error=a["affinity_error"], test_ap=a["boundary_ap"], test_cut_share=a["boundary_share"])
    segs = s["segmentation"] if prepared.collection else [s["segmentation"]]
    if prepared.sparse_given:  # no dense truth of the training part: its unlabeled region cannot be scored
        return ScoredRun(row, pred, segs, clock.seconds)
    view = prepared.crop_train(train_crop)
    train_affs = clock("predict", predict_part, checkpoint, "train", prepared=view, with_entropy=False).affinities
    u = clock("score", affinity_scores, train_affs if prepared.collection else train_affs[0],
              view.labels_train if prepared.collection else view.labels_train[0], offsets,
              sparse_labels=view.sparse_train if prepared.collection else view.sparse_train[0], **background)
    row.update(unlabeled_error=u["affinity_error"], unlabeled_ap=u["boundary_ap"],
               unlabeled_cut_share=u["boundary_share"])
    return ScoredRun(row, pred, segs, clock.seconds)


class _Clock:
    """Calls a function and adds its wall time to ``seconds[part]``."""

    def __init__(self):
        self.seconds = {}

    def __call__(self, part, fn, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t


def write_prediction(path, prediction: Prediction) -> Path:
    """Write ``prediction`` (:func:`predict_part`) to the HDF5 file ``path``, atomically:
    ``affinities`` (with its ``offsets`` attribute), ``entropy`` and ``labels``; one
    volume or image at the top level, a collection's images as groups ``image_NNN``
    (what :func:`affcons_lib.evaluation.evaluate.read_prediction` reads)."""
    import h5py

    affs, entropy, labels, offsets = prediction
    if entropy is None:
        raise ValueError("write_prediction: the prediction holds no entropy (predict_part with with_entropy=True)")
    out = Path(path)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        groups = [(f, affs[0], entropy[0], labels[0])] if len(affs) == 1 else \
            [(f.create_group(f"image_{i:03d}"), a, e, lab) for i, (a, e, lab) in enumerate(zip(affs, entropy, labels))]
        for g, a, e, lab in groups:
            ds = g.create_dataset("affinities", data=a, compression="gzip")
            ds.attrs["offsets"] = np.asarray(offsets, dtype=np.int64)
            g.create_dataset("entropy", data=e, compression="gzip")
            g.create_dataset("labels", data=lab, compression="gzip")
    return out
