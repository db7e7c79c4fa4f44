"""Configuration of a training run: one dataclass, read from YAML, ``--set``
overrides or a dict.

    load_config("config.yaml", ["iterations=500", "patch=8,64,64"])
    load_config(None, {"iterations": 500, "patch": [8, 64, 64]})   # from a notebook
    load_config(None, ["scale=paper"])          # the paper's widths, patch, lr, iterations

Defaults are the small CPU scale of the notebooks; ``scale=paper`` starts from
:data:`SCALES` ``["paper"]`` instead, and keys given beside it still win.
Unknown keys and values of the wrong type fail at once, naming the key.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import data

__all__ = ["METHODS", "CROSS_TERMS", "PRECISIONS", "LR_SCHEDULES", "SCALES", "TrainConfig", "load_config",
           "run_config_cli", "as_sizes"]

METHODS = ("sparse_only", "crac", "full_supervision")
CROSS_TERMS = ("both", "to_embedding", "to_affinity")
PRECISIONS = ("auto", "fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine")

#: Starting values of each ``scale``. ``small`` (the dataclass defaults) runs on
#: a laptop CPU in minutes; ``paper`` is the supplementary's set-up (widths 28-80,
#: 18x160x160 patches, Adam 1e-4, batch 2, 200k iterations), made for a GPU.
SCALES = {
    "small": dict(widths=(8, 16, 32), patch=(8, 64, 64), patch_2d=(128, 128), lr=1e-3, batch=2, iterations=200,
                  checkpoint_every=50, log_every=10),
    "paper": dict(widths=(28, 36, 48, 64, 80), patch=(18, 160, 160), patch_2d=(256, 256), lr=1e-4, batch=2,
                  iterations=200_000, checkpoint_every=1000, log_every=100),
}


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults: the small CPU scale
    (:data:`SCALES`), the one the notebooks use."""

    scale: str = "small"  # the preset load_config starts from: small / paper (see SCALES)
    # data
    dataset: str = "auto"  # 3D: auto / fibsem / synthetic / PATH[:KEY]; 2D: auto / nuclei / synthetic / folder / PATH
    raw_key: str | None = None  # key of the raw array in an HDF5 / zarr dataset (default: CREMI's volumes/raw)
    labels: str | None = None  # the labels' own file PATH[:KEY] (default: the dataset's file)
    labels_key: str | None = None  # key of the labels (default: CREMI's volumes/labels/neuron_ids)
    test_dataset: str | None = None  # a separate test volume / image (same keys); then all of dataset trains
    test_labels: str | None = None  # the test labels' own file (default: the test dataset's file)
    dim: int = 3
    train_fraction: float = 0.8  # without test_dataset: leading part of z (3D) or x (2D) trains, the rest tests
    # what is annotated, as notebook 01 does: random complete instances of at least min_size
    # voxels (None: 1000 in 3D, 100 pixels in 2D) up to voxel_budget of the instance voxels.
    # sparsity, a fraction of the instances, is used when voxel_budget is None; a config that
    # gives sparsity and no voxel_budget means that (load_config)
    sparsity: float = 0.1
    annotation: str = "random"  # random / small / large
    voxel_budget: float | None = 0.05  # a voxel count, or a fraction in (0, 1)
    min_size: int | None = None  # never annotate smaller instances
    annotation_seed: int = 0
    # your own sparse annotation: the labels file is already sparse (non-zero ids are annotated,
    # complete instances; 0 is unlabeled, not background): nothing is drawn, and the options
    # above that decide a drawn annotation (sparsity, voxel_budget, annotation) are not used
    labels_are_sparse: bool = False
    # network
    widths: tuple = (8, 16, 32)  # channels per level; the paper's: 28, 36, 48, 64, 80
    in_channels: int = 1  # set from the data (3 for RGB folders such as CVPPP)
    # optimisation
    method: str = "crac"
    patch: tuple = (8, 64, 64)
    batch: int = 2
    iterations: int = 200
    lr: float = 1e-3  # the paper's 1e-4 is made for 200k iterations
    # constant (the paper), or cosine: from lr down to 0 at the last iteration, which ends a short
    # run on a settled network instead of wherever the last large step left it
    lr_schedule: str = "constant"
    warmup: float = 0.0  # iterations of linear warm-up to lr: a share of the run below 1, a count from 1 up
    betas: tuple = (0.9, 0.999)
    seed: int = 0
    # the networks' arithmetic: fp32, or bf16 under torch.autocast (CPU and CUDA); losses, entropy
    # and the cosine affinities stay float32 either way. auto: bf16 where the device computes it
    # natively (models.resolve_precision), fp32 elsewhere
    precision: str = "auto"
    min_labeled: float = 0.02  # least fraction of labeled edges in a patch (resampled otherwise)
    augment: bool = True
    workers: int = 0  # processes that draw patches ahead of the step (0: in this process; worth it on a GPU)
    # cross-representation consistency
    lambda_cross: float = 1.0
    # which cross terms act: both (the paper), or one direction alone for the ablation:
    # "to_embedding" (f(θ1) teaches f(θ2)) or "to_affinity" (f(θ2) teaches f(θ1))
    cross_terms: str = "both"
    alpha0: float = 0.005
    nearest_weight: float = 10.0
    detach_targets: bool = True  # paper text; the release does not detach
    release_double_weight: bool = False  # the release's ×100 on the embedding cross term
    # f(θ2)'s losses on its cosine similarities clipped at 0, as the text treats them as
    # affinities ("clipped"), or on the raw cosine in [-1, 1], as the release trains ("raw");
    # the entropy, the targets it gives f(θ1) and inference always use the clipped ones
    cosine: str = "clipped"
    cpsn_checkpoint: str | None = None
    # iterations before the CPSN filter switches on: a share of the run below 1 (the release: 5k of
    # 300k), a count from 1 up
    cpsn_warmup: float = 5000 / 300_000
    # output
    out_dir: str = "runs/train"
    checkpoint_every: int = 50
    snapshot_iters: tuple = ()  # keep copies of the models at these iterations (for the CPSN)
    log_every: int = 10
    val_every: int = 0  # score f(θ2) on the test part every N iterations (0: never) -> validation.csv
    resume: bool = False
    device: str = "auto"
    threads: int = 0  # CPU threads of torch; 0: half the usable cores (a busy shared machine slows down with all)
    progress: bool = True

    def __post_init__(self):
        for name in ("widths", "patch", "betas", "snapshot_iters"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))

    @classmethod
    def from_saved(cls, values: dict) -> "TrainConfig":
        """The config a checkpoint saved. Keys added since it was written take the
        value those runs had, not today's default: runs from before
        ``precision`` existed ran in fp32."""
        return cls(**{"precision": "fp32", **values})

    def cpsn_warmup_iterations(self) -> int:
        """The iteration after which the CPSN filter acts (``cpsn_warmup`` as a count)."""
        w = self.cpsn_warmup
        return int(w) if w >= 1 else int(round(w * self.iterations))

    def min_instance_size(self) -> int:
        """``min_size``, or its default by dimension: 1000 voxels in 3D (a body, not a
        speck cut by the crop), 100 pixels in 2D (a nucleus)."""
        if self.min_size is not None:
            return int(self.min_size)
        return 1000 if self.dim == 3 else 100

    def annotation_rule(self) -> str:
        """The annotation in words, for the start-of-training summary."""
        what = (f"up to {self.voxel_budget:g} of the instance voxels" if self.voxel_budget is not None
                else f"{self.sparsity:g} of the instances")
        return f"{self.annotation} complete instances of at least {self.min_instance_size()} voxels, {what}"

    def warmup_iterations(self) -> int:
        """The warm-up as a count of iterations."""
        w = self.warmup
        return int(w) if w >= 1 else int(round(w * self.iterations))

    def learning_rate(self, iteration: int) -> float:
        """The learning rate of ``iteration`` (1 to ``iterations``): linear warm-up from
        ``lr / warm-up`` over the warm-up iterations, then ``lr_schedule``. A pure
        function of the iteration, so a resumed run takes the same steps."""
        warm = self.warmup_iterations()
        if iteration <= warm:
            return self.lr * iteration / warm
        if self.lr_schedule == "constant":
            return self.lr
        done = (iteration - warm) / max(1, self.iterations - warm)  # 1 at the last iteration
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))

    def validate(self) -> "TrainConfig":
        """Raise ValueError naming the field for values that cannot work."""
        def bad(name, why):
            raise ValueError(f"config.{name}={getattr(self, name)!r}: {why}")

        if self.dim not in (2, 3):
            bad("dim", "expected 2 or 3")
        if self.scale not in SCALES:
            bad("scale", f"expected one of {tuple(SCALES)}")
        if self.cpsn_warmup < 0:
            bad("cpsn_warmup", "expected a share of the iterations in [0, 1) or a count of at least 1")
        if self.workers < 0:
            bad("workers", "expected 0 (sampling in this process) or a positive count")
        if self.threads < 0:
            bad("threads", "expected 0 (automatic) or a positive count")
        if self.test_labels is not None and self.test_dataset is None:
            bad("test_labels", "given without test_dataset")
        if self.test_dataset is not None and data.is_image_collection(self.test_dataset):
            bad("test_dataset", "image folders (BBBC039, CVPPP) bring their own test split; give a volume or image")
        for name in ("widths", "patch", "snapshot_iters"):
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in getattr(self, name)):
                bad(name, "expected integers")
        if self.method not in METHODS:
            bad("method", f"expected one of {METHODS}")
        if self.precision not in PRECISIONS:
            bad("precision", f"expected one of {PRECISIONS}")
        if self.lr_schedule not in LR_SCHEDULES:
            bad("lr_schedule", f"expected one of {LR_SCHEDULES}")
        for name in ("batch", "iterations", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                bad(name, "expected a positive integer")
        if self.warmup < 0 or self.warmup_iterations() >= self.iterations:
            bad("warmup", "expected a share of the run in [0, 1) or a count below the iterations")
        if self.cross_terms not in CROSS_TERMS:
            bad("cross_terms", f"expected one of {CROSS_TERMS}")
        if self.cosine not in ("clipped", "raw"):
            bad("cosine", "expected 'clipped' (the text) or 'raw' (the release)")
        if self.annotation not in data.ANNOTATION_MODES:
            bad("annotation", f"expected one of {data.ANNOTATION_MODES}")
        if not 0 < self.sparsity <= 1:
            bad("sparsity", "expected a fraction of instances in (0, 1]")
        if self.voxel_budget is not None and self.voxel_budget <= 0:
            bad("voxel_budget", "expected a positive voxel count or fraction")
        if self.voxel_budget is not None and 1 <= self.voxel_budget < self.min_instance_size():
            bad("voxel_budget", f"a number of 1 or more is a count of voxels, and {self.voxel_budget:g} voxels cannot "
                                f"hold one instance of at least {self.min_instance_size()} voxels (min_size); "
                                "for a share of the instance voxels give a fraction below 1 (0.02 = 2 %)")
        if self.labels_are_sparse and self.method == "full_supervision":
            bad("labels_are_sparse", "full_supervision needs dense labels; a sparse annotation trains sparse_only "
                                     "or crac")
        if self.min_size is not None and self.min_size < 1:
            bad("min_size", "expected a positive size, or None for the default by dimension")
        if not 0 < self.train_fraction < 1:
            bad("train_fraction", "expected a value in (0, 1)")
        if len(self.patch) != self.dim or min(self.patch) < 1:
            bad("patch", f"expected {self.dim} positive sizes")
        divisor = 2 ** (len(self.widths) - 1)
        if any(p % divisor for p in self.patch[-2:]):
            bad("patch", f"in-plane sizes must be multiples of {divisor} (from {len(self.widths)} widths)")
        if self.lr <= 0:
            bad("lr", "expected a positive learning rate")
        if not 0 <= self.min_labeled < 1:
            bad("min_labeled", "expected a fraction in [0, 1)")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            bad("device", "expected 'auto', 'cpu' or 'cuda[:N]'")
        return self


def _parse_text(text: str):
    """The Python value a ``--set`` text stands for: a literal when it is one
    (``8,64,64`` is a tuple, ``1e-3`` a float), else the text itself (a path)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(value, annotation, name: str):
    """``value`` (a text from ``--set``, or a Python value) as the field's type."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    shown = f"{name}={value}"
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        for a in args:
            if a is not type(None):
                try:
                    return _coerce(value, a, name)
                except ValueError:
                    continue
        raise ValueError(f"{shown}: cannot read as {annotation}")
    if annotation is bool:
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise ValueError(f"{shown}: expected true or false")
    if annotation in (int, float):
        v = _parse_text(value.strip()) if isinstance(value, str) else value
        ok = isinstance(v, (int, np.integer)) or (annotation is float and isinstance(v, (float, np.floating)))
        if isinstance(v, bool) or not ok:
            raise ValueError(f"{shown}: expected {annotation.__name__}")
        return annotation(v)
    if annotation is str:
        return str(value)
    if annotation is tuple or origin is tuple:
        v = _parse_text(value.strip()) if isinstance(value, str) else value
        if isinstance(v, str) and v:
            v = tuple(p.strip() for p in v.strip("()[] ").split(","))
        return tuple(v) if isinstance(v, (list, tuple)) else (v,) if v not in ("", None) else ()
    return value


def load_config(path=None, overrides: typing.Sequence[str] | typing.Mapping = (), cls=None):
    """A config dataclass (:class:`TrainConfig` by default, or ``cls``) from an
    optional YAML file and overrides: ``key=value`` texts (the command line) or a
    mapping of Python values (notebooks). Unknown keys and badly typed values fail
    at once, naming them."""
    import yaml

    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{p}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded)
    cls = cls or TrainConfig
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}{' in ' + str(path) if path else ''}; known: {sorted(known)}")
    if isinstance(overrides, typing.Mapping):
        pairs = list(overrides.items())
    else:
        pairs = []
        for item in overrides:
            if "=" not in item:
                raise ValueError(f"--set {item!r}: expected key=value")
            key, value = item.split("=", 1)
            pairs.append((key.strip(), value))
    for key, value in pairs:
        if key not in known:
            raise ValueError(f"--set {key}: unknown config key; known: {sorted(known)}")
        values[key] = _coerce(value, hints[key], f"--set {key}")
    if "sparsity" in values and "voxel_budget" not in values and "voxel_budget" in known:
        values["voxel_budget"] = None  # a share of the instances was asked for, not the default voxel budget
    if "scale" in known:  # the preset first; keys given in the file or overrides win
        scale = values.get("scale", "small")
        if scale not in SCALES:
            raise ValueError(f"scale={scale!r}: expected one of {tuple(SCALES)}")
        preset = dict(SCALES[scale])
        patch_2d = preset.pop("patch_2d")
        if values.get("dim", 3) == 2:
            preset["patch"] = patch_2d
        values = {**{k: v for k, v in preset.items() if k in known}, **values}
    cfg = cls(**values)
    return cfg.validate() if hasattr(cfg, "validate") else cfg


def as_sizes(value, name: str) -> tuple | None:
    """A notebook parameter that stands for sizes, as a tuple of ints (``None``
    stays ``None``). Accepts a list or tuple, or the text papermill's ``-p``
    passes (``"(16, 128, 128)"``, ``"16,128,128"``); anything else raises naming
    the parameter and showing ``-y`` as the way to pass a list."""
    if value is None:
        return None
    v = _parse_text(value.strip()) if isinstance(value, str) else value
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (v,)
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                                                  for x in v):
        return tuple(int(x) for x in v)
    example = {"seeds": "[0, 1, 2, 3, 4]", "draws": "[0, 1, 2, 3, 4]"}.get(name, "[8, 64, 64]")
    raise ValueError(f"parameter {name}={value!r}: expected a non-empty list of whole numbers, e.g. "
                     f"papermill ... -y \"{name}: {example}\"")


def run_config_cli(argv, *, prog: str, description: str, cls, run, cleanup=None) -> int:
    """The command line shared by the training entry points: a YAML file and
    ``--set key=value`` overrides become a ``cls`` config, ``run(config)`` returns a
    summary printed as JSON. Bad configs and data exit with status 2 and a message.
    ``cleanup()`` runs at the end whatever happened (the trainers leave torchrun's
    process group there, where they joined it)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("config", nargs="?", help=f"YAML file with {cls.__name__} keys (optional)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set iterations=500 --set patch=8,64,64")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set, cls=cls)
        if args.print_config:
            print(json.dumps(dataclasses.asdict(cfg), indent=2))
            return 0
        summary = run(cfg)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:  # bad config or data; a loss gone NaN
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if cleanup is not None:
            cleanup()
    print(json.dumps(summary, indent=2, default=str))
    return 0


