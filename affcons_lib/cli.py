"""The command line, in one place: ``python -m affcons_lib COMMAND [ARGS ...]``.

    python -m affcons_lib train [CONFIG.yaml] [--set KEY=VALUE ...] [--print-config]
    python -m affcons_lib cpsn [CONFIG.yaml] [--set KEY=VALUE ...]
    python -m affcons_lib predict CHECKPOINT --out PRED.h5 [--part test] [--set KEY=VALUE ...]
    python -m affcons_lib predict CHECKPOINT --blockwise --raw VOL.h5:KEY --out AFFS.zarr [--workers 4]
    python -m affcons_lib predict CHECKPOINT --raw RAW.h5:KEY --layers OUT.zarr [--napari]
    python -m affcons_lib evaluate PRED.h5 [--labels PATH:KEY] [--json OUT.json]
    python -m affcons_lib evaluate --segmentation SEG --labels PATH:KEY
    python -m affcons_lib blockwise segment AFFS.zarr --out SEG [--threshold 0.5] [--workers 4]
    python -m affcons_lib fetch NAME [--dest data] | --list
    python -m affcons_lib reproduce [--only PREFIX ...] [-p NAME VALUE ...] [--record DIR] [--readme]
    python -m affcons_lib book [--runs runs] [--out runs/book] [--check] | --documents | --method-figure
    python -m affcons_lib reference [--methods ...] | --breadth GRID ... | --export-paired WORK | ...
    python -m affcons_lib sweep SWEEP.yaml

``python -m affcons_lib train`` and the other modules' names run the same commands
(the form of earlier releases). A command parses its arguments, calls the library,
prints what it made and turns an error about its input (a missing file, a bad key)
into one line on stderr and exit status 2; the library's modules hold no command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


__all__ = ["COMMANDS", "main"]

_PROG = "python -m affcons_lib"


def _error(err) -> int:
    print(f"error: {err}", file=sys.stderr)
    return 2


def _print_json(run) -> int:
    """Print ``run()``'s summary as JSON (status 0), or the error (status 2)."""
    try:
        result = run()
    except (FileNotFoundError, KeyError, ValueError, RuntimeError) as err:
        return _error(err)
    print(json.dumps(result, indent=2))
    return 0


# ------------------------------------------------------------------ training
def train(argv=None) -> int:
    from . import distributed
    from .training import train as training
    from .training.config import TrainConfig, run_config_cli

    description = ("Train with sparse instance labels: sparse_only, crac (the paper's cross-representation "
                   "affinity consistency) or full_supervision. Defaults are a small CPU run; --set scale=paper "
                   "gives the paper's settings. Annotation as notebook 01: random complete instances of at least "
                   "1000 voxels (100 pixels in 2D; min_size) up to 5 % of the instance voxels (voxel_budget); "
                   "--set sparsity=0.1 alone annotates a share of the instances instead. Your own sparse annotation: "
                   "--set labels=PAINTED.h5:KEY --set labels_are_sparse=true (non-zero ids are annotated, complete "
                   "instances; 0 is unlabeled; nothing is drawn). --print-config lists every key.")
    return run_config_cli(argv, prog=f"{_PROG} train", description=description, cls=TrainConfig,
                          run=training.train, cleanup=distributed.teardown)


def cpsn(argv=None) -> int:
    from . import distributed
    from .training.config import run_config_cli
    from .training.cpsn import CPSNConfig, train_cpsn

    return run_config_cli(argv, prog=f"{_PROG} cpsn", description="Train a CPSN on a snapshot bank.",
                          cls=CPSNConfig, run=train_cpsn, cleanup=distributed.teardown)


# ------------------------------------------------------------------ prediction
def _add_blockwise_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of blockwise prediction (``predict --blockwise`` and ``blockwise predict``)."""
    parser.add_argument("--raw", help="blockwise: the raw volume to predict, an HDF5 or zarr PATH:KEY")
    parser.add_argument("--block", type=int, nargs=3, default=(64, 256, 256),
                        help="blockwise: block (and zarr chunk) shape Z Y X; a worker holds one block")
    parser.add_argument("--workers", type=int, default=2, help="blockwise: daisy worker processes")
    parser.add_argument("--raw-range", type=float, nargs=2, metavar=("LO", "HI"),
                        help="blockwise: raw intensities mapped to 0 and 1 for the whole volume "
                             "(default: estimated from a strided sample)")
    parser.add_argument("--overwrite", action="store_true",
                        help="blockwise: remove an existing --out and start afresh (without it, an output made with "
                             "other settings is refused, one made the same way resumed)")
    parser.add_argument("--launcher", help="blockwise: command prefix that starts each worker elsewhere, e.g. "
                                           "'srun --ntasks 1 --cpus-per-task 8' (a cluster job per worker)")


def _predict_blockwise(args) -> int:
    from .blockwise.predict import predict_blockwise

    return _print_json(lambda: predict_blockwise(args.checkpoint, args.raw, args.out, block=args.block,
                                                 tile=args.tile, stride=args.stride, workers=args.workers,
                                                 branch=args.branch, device=args.device, raw_range=args.raw_range,
                                                 overwrite=args.overwrite, launcher=args.launcher))


def _predict_layers(args) -> int:
    """``predict --layers``: one array predicted, segmented and written for a viewer."""
    from . import data
    from .companion import layers
    from .training.checkpoint import load_checkpoint, set_threads
    from .training.sampling import prepare_data

    set_threads(args.threads)
    try:
        if args.raw:
            raw = data.normalize_raw(data.read_array(args.raw), name=args.raw)
        else:
            _, cfg, _ = load_checkpoint(args.checkpoint, "cpu")
            raw = prepare_data(cfg).raw_test[0]
        result = layers.segment_raw(args.checkpoint, raw, threshold=args.threshold, device=args.device)
        out = layers.write_layers(args.layers, raw=raw, overwrite=args.overwrite, **result)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        return _error(err)
    print(f"{out}: raw, affinities, fragments, segmentation ({int(result['segmentation'].max())} segments)")
    if args.napari:
        import napari

        layers.open_in_napari(out)
        napari.run()
    return 0


def predict(argv=None) -> int:
    from .training.checkpoint import set_threads
    from .training.predict import DATA_KEYS, predict_part, write_prediction

    ap = argparse.ArgumentParser(prog=f"{_PROG} predict",
                                 description="Affinities of a trained run's f(θ2) on its test part (or other data).")
    ap.add_argument("checkpoint", help=f"last.pt (or a snapshot) written by {_PROG} train")
    ap.add_argument("--out", help="HDF5 file to write (zarr folder with --blockwise); required but with --layers")
    ap.add_argument("--part", default="test", choices=("test", "train", "all"),
                    help="which part of the run's dataset to predict (default: the test part)")
    ap.add_argument("--tile", type=int, nargs="+",
                    help="tile shape fed to the network (default: twice the training depth, in-plane up to 256)")
    ap.add_argument("--stride", type=int, nargs="+",
                    help="step between tiles (default: 3/4 of the tile; overlaps are blended)")
    ap.add_argument("--branch", default="embedding", choices=("embedding", "affinity"),
                    help="f(θ2), the embedding branch the paper infers with, or crac's f(θ1)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help=f"point the run's data elsewhere; KEY one of {', '.join(DATA_KEYS)} "
                         "(e.g. --set test_dataset=test.h5 --set raw_key=stack)")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads (default 0: half the usable cores, or OMP_NUM_THREADS)")
    ap.add_argument("--blockwise", action="store_true", help="predict --raw block by block into a zarr --out")
    _add_blockwise_predict_arguments(ap)
    ap.add_argument("--layers", metavar="OUT.zarr",
                    help="predict and segment --raw (default: the run's test part) and write raw, affinities, "
                         "fragments and segmentation to one zarr container a viewer opens (affcons_lib.companion.layers)")
    ap.add_argument("--threshold", type=float, default=0.5, help="with --layers: the agglomeration threshold (3D)")
    ap.add_argument("--napari", action="store_true", help="with --layers: open the result in napari (if installed)")
    args = ap.parse_args(argv)
    if args.layers:
        return _predict_layers(args)
    if not args.out:
        ap.error("--out is required (or --layers OUT.zarr)")
    if args.blockwise:
        if not args.raw:
            ap.error("--blockwise needs --raw PATH:KEY")
        return _predict_blockwise(args)
    set_threads(args.threads)
    try:
        prediction = predict_part(args.checkpoint, args.part, tile=args.tile, stride=args.stride,
                                  branch=args.branch, device=args.device, data_overrides=args.set)
    except (FileNotFoundError, ValueError) as err:
        return _error(err)
    print(write_prediction(args.out, prediction))
    return 0


# ------------------------------------------------------------------ segmentation and scores
def evaluate(argv=None) -> int:
    from ._atomic import write_text
    from .blockwise.score import evaluate_blockwise
    from .evaluation.evaluate import METHODS_3D, read_prediction, reference_scores, score_prediction
    from .segmentation.recipe import THRESHOLDS

    ap = argparse.ArgumentParser(prog=f"{_PROG} evaluate",
                                 description="Segment predicted affinities and score them against the ground truth.")
    ap.add_argument("prediction", nargs="?", help=f"HDF5 written by {_PROG} predict, or the zarr affinities of "
                                                  "predict --blockwise (then give --labels)")
    ap.add_argument("--segmentation", metavar="SEG",
                    help="score a blockwise segmentation instead, block by block: the output directory of "
                         f"{_PROG} blockwise segment (every threshold it kept) or a zarr segmentation; "
                         "needs --labels")
    ap.add_argument("--labels", metavar="PATH[:KEY]",
                    help="ground truth to score against (HDF5, zarr or TIFF), for a prediction that holds none or "
                         "to replace the one it holds")
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS),
                    help="waterz thresholds swept (3D); the best by VOI is reported")
    ap.add_argument("--method", choices=METHODS_3D, default="waterz",
                    help="3D pipeline: waterz agglomeration (the paper's) or the 12-channel mutex watershed")
    ap.add_argument("--scoring", default="median",
                    help="agglomeration scoring: median (the field's), mean, quantile_Q")
    ap.add_argument("--fragments", choices=("volume", "slice"), default="volume",
                    help="3D fragments for isotropic data (volume) or per section for anisotropic data (slice)")
    ap.add_argument("--border-tolerance", type=int, default=1,
                    help="ignore ground-truth voxels closer than this many pixels to a label border in their "
                         "section (CREMI convention; 0: score every voxel)")
    ap.add_argument("--no-floors", action="store_true",
                    help="3D: skip the floors (one object, every voxel alone) and the ceiling (ground-truth targets)")
    ap.add_argument("--json", help="write the scores to this JSON file too")
    args = ap.parse_args(argv)
    if (args.prediction is None) == (args.segmentation is None):
        ap.error("give a prediction file or --segmentation SEG (one of the two)")
    if args.segmentation:
        if not args.labels:
            ap.error("--segmentation needs --labels PATH[:KEY]")
        try:
            scores = evaluate_blockwise(args.segmentation, args.labels, border_tolerance=args.border_tolerance)
        except (FileNotFoundError, ValueError, KeyError) as err:
            return _error(err)
    else:
        try:
            affs, gt, offsets = read_prediction(args.prediction, args.labels)
        except (FileNotFoundError, ValueError, KeyError) as err:
            return _error(err)
        three_d = gt[0].ndim == 3
        options = dict(method=args.method, thresholds=args.thresholds, scoring=args.scoring,
                       fragment_mode=args.fragments, border_tolerance=args.border_tolerance) if three_d else {}
        try:
            scores = score_prediction(affs if len(affs) > 1 else affs[0], gt if len(gt) > 1 else gt[0], offsets,
                                      **options)
            if three_d and not args.no_floors:
                scores["reference"] = reference_scores(gt[0], offsets=offsets, **options)
        except ValueError as err:
            return _error(f"{Path(args.prediction)}: {err}")
        scores.pop("segmentation")
    text = json.dumps(scores, indent=2)
    print(text)
    if args.json:
        write_text(args.json, text)
    return 0


def blockwise(argv=None) -> int:
    from .blockwise import workers
    from .blockwise.segment import segment_blockwise
    from .segmentation.recipe import BLOCKWISE

    ap = argparse.ArgumentParser(prog=f"{_PROG} blockwise",
                                 description="Blockwise prediction and segmentation of volumes larger than memory.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="affinities of a raw volume, block by block, into zarr")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="zarr array to write")
    p.add_argument("--tile", type=int, nargs=3)
    p.add_argument("--stride", type=int, nargs=3)
    p.add_argument("--branch", default="embedding", choices=("embedding", "affinity"))
    p.add_argument("--device", default="cpu")
    _add_blockwise_predict_arguments(p)
    s = sub.add_parser("segment", help="fragments, region graph, agglomeration, relabelling, block by block")
    s.add_argument("affinities", help="zarr affinity array (C, Z, Y, X)")
    s.add_argument("--out", required=True, help="directory to create")
    s.add_argument("--threshold", type=float, default=0.5,
                   help="agglomeration threshold of the segmentation written (a table is kept for every threshold "
                        "of the recipe)")
    s.add_argument("--scoring", default="median", help="edge score: median (the field's), mean or quantile_Q")
    s.add_argument("--fragment-mode", choices=("volume", "slice"), default="volume",
                   help="3D fragments (isotropic data) or per section (anisotropic)")
    s.add_argument("--block", type=int, nargs=3, default=(64, 256, 256))
    s.add_argument("--context", type=int, nargs=3,
                   help="voxels read around a block (default and minimum: what the fragments need)")
    s.add_argument("--workers", type=int, default=2)
    s.add_argument("--overwrite", action="store_true", help="remove an existing --out and start afresh")
    s.add_argument("--launcher", help="command prefix that starts each worker elsewhere, e.g. "
                                      "'srun --ntasks 1 --cpus-per-task 4' (a cluster job per worker)")
    w = sub.add_parser("worker", help="(started by --launcher) process blocks for a running scheduler")
    w.add_argument("kind", choices=workers.BLOCK_KINDS)
    w.add_argument("spec", help="the task's settings, JSON")
    args = ap.parse_args(argv)
    if args.command == "worker":
        return workers.run_worker(args.kind, args.spec)
    if args.command == "predict":
        if not args.raw:
            ap.error("predict needs --raw PATH:KEY")
        return _predict_blockwise(args)
    recipe = BLOCKWISE.replace(scoring=args.scoring, mode=args.fragment_mode)
    return _print_json(lambda: segment_blockwise(args.affinities, args.out, threshold=args.threshold,
                                                 block=args.block, context=args.context, workers=args.workers,
                                                 recipe=recipe, overwrite=args.overwrite, launcher=args.launcher))


# ------------------------------------------------------------------ data
def fetch(argv=None) -> int:
    from .data.fetch import SOURCES, FetchError
    from .data.fetch import fetch as fetch_source

    parser = argparse.ArgumentParser(
        prog=f"{_PROG} fetch",
        description="Download one of the paper's datasets from its official source (only when you run this).",
    )
    parser.add_argument("name", nargs="?", help=f"dataset: {', '.join(SOURCES)}")
    parser.add_argument("--dest", default="data", help="target folder (default: data/)")
    parser.add_argument("--list", action="store_true", help="list the sources and exit")
    args = parser.parse_args(argv)
    if args.list or not args.name:
        for s in SOURCES.values():
            how = "manual steps" if s.manual else f"{len(s.files) or 'pip'} file(s)"
            print(f"{s.name:10s} {s.approx_size:>40s}  {how}\n           {s.description}\n"
                  f"           source: {s.homepage}  licence: {s.license}")
        return 0
    try:
        out = fetch_source(args.name, args.dest)
    except (KeyError, FetchError) as err:
        return _error(err.args[0] if isinstance(err, KeyError) else err)
    print(out)
    return 0


# ------------------------------------------------------------------ the companion's runs
def reproduce(argv=None) -> int:
    from .companion import reproduce as rep

    parser = argparse.ArgumentParser(prog=f"{_PROG} reproduce", description="Run every notebook with papermill.")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--figures", type=Path, default=Path("figures"))
    parser.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    parser.add_argument("--record", type=Path, default=None,
                        help="copy the recorded numbers and the run times here at the end")
    parser.add_argument("--only", nargs="+", default=(), metavar="PREFIX",
                        help="run only the notebooks whose file names start with one of these")
    parser.add_argument("-p", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                        help="parameter for every notebook that declares it (VALUE parsed as JSON if it can be)")
    parser.add_argument("--readme", action="store_true",
                        help="write the generated parts of README.md and the book's pages from the records and stop "
                             "(as `book --documents`)")
    args = parser.parse_args(argv)
    if args.readme:
        from .companion import documents

        print("generated parts -> " + (", ".join(str(p) for p in documents.write_documents()) or "unchanged"))
        return 0
    params = {k: rep.parse_value(v) for k, v in args.p}
    return rep.run_all(args.notebooks, args.runs, args.figures, params, args.kernel, args.record, args.only)


def book(argv=None) -> int:
    from .companion import book as bk, documents, viz

    ap = argparse.ArgumentParser(prog=f"{_PROG} book", description="The executed notebooks and the pages of "
                                 "notebooks/book/ as a web book (Sphinx, MyST-NB; nothing executed, nothing fetched).")
    ap.add_argument("--runs", type=Path, default=Path("runs"), help="where make reproduce left the executed notebooks")
    ap.add_argument("--out", type=Path, default=Path("runs/book"))
    ap.add_argument("--check", action="store_true",
                    help="then open every page in headless Chromium: it renders, its figures show, its links resolve")
    ap.add_argument("--documents", action="store_true",
                    help="write the generated parts of README.md and notebooks/book/*.md from the records and stop")
    ap.add_argument("--method-figure", action="store_true", help="draw figures/method.svg and stop")
    args = ap.parse_args(argv)
    if args.documents or args.method_figure:
        if args.method_figure:
            print(f"method picture -> {viz.method_figure()}")
        if args.documents:
            changed = documents.write_documents()
            print("generated parts -> " + (", ".join(str(p) for p in changed) or "unchanged"))
        return 0
    try:
        index = bk.build_book(args.runs, args.out)
    except (FileNotFoundError, RuntimeError) as err:
        return _error(err)
    print(f"book: open {index}")
    if args.check:
        problems = bk.check_site(index.parent)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print(f"book: {'every page rendered, every figure shown, every link resolved' if not problems else f'{len(problems)} problems'} "
              "(headless Chromium)")
        return 1 if problems else 0
    return 0


def report(argv=None) -> int:
    """``report``, the name of earlier releases: the book."""
    ap = argparse.ArgumentParser(prog=f"{_PROG} report", description="The book (earlier name); see `book --help`.")
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--out", type=Path, default=Path("runs/book"))
    args = ap.parse_args(argv)
    return book(["--runs", str(args.runs), "--out", str(args.out)])


def reference(argv=None) -> int:
    from .companion import reference as ref
    from .training.config import METHODS

    ap = argparse.ArgumentParser(prog=f"{_PROG} reference", description="Reference runs: the methods trained "
                                 "longer, kept small in data/reference/.")
    ap.add_argument("--config", default=str(ref.REFERENCE_DIR / "config.yaml"))
    ap.add_argument("--out", default=str(ref.REFERENCE_DIR))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set iterations=2000")
    ap.add_argument("--export-paired", metavar="WORK",
                    help="export the notebook 01 run under WORK (its AFFCONS_RUNS_DIR) to OUT/NAME and stop")
    ap.add_argument("--paired-name", default="paired", metavar="NAME",
                    help="with --export-paired: the folder under OUT (default paired; paired_1500: the longer runs)")
    ap.add_argument("--parameters", default="{}", help="the notebook parameters of that run, as JSON (recorded)")
    ap.add_argument("--rescore-paired", action="store_true",
                    help="score the paired reference runs under OUT/paired again with the current instrument and stop")
    ap.add_argument("--breadth", nargs="+", metavar="GRID",
                    help="run (or resume) these grids of data/reference/breadth/config.yaml, export them and stop")
    ap.add_argument("--workers", type=int, default=2, help="with --breadth: processes at one thread each")
    ap.add_argument("--work", default="runs/breadth", help="with --breadth: where runs and rows go (not committed)")
    ap.add_argument("--instrument", action="store_true",
                    help="score the 3D instrument on known inputs (floors, ceiling, noisy targets) on the real "
                         "FIB-SEM test part, write OUT/instrument.json and stop")
    ap.add_argument("--breadth-readme", action="store_true",
                    help="write the generated parts of README.md and the book's pages from the records and stop "
                         "(as `book --documents`)")
    args = ap.parse_args(argv)
    if args.instrument:
        from .data import real_volume_path

        volume = real_volume_path()
        if volume is None:
            return _error("--instrument needs the real FIB-SEM volume (AFFCONS_DATA_DIR; "
                          "`python -m affcons_lib fetch fibsem`)")
        print(f"instrument -> {ref.export_instrument(volume, Path(args.out) / 'instrument.json')}")
        return 0
    if args.breadth_readme:
        from .companion import documents

        print("generated parts -> " + (", ".join(str(p) for p in documents.write_documents()) or "unchanged"))
        return 0
    if args.breadth:
        from .companion import breadth

        spec = breadth.load_grids()
        for name in args.breadth:
            t0 = time.time()
            rows, trained = breadth.run_grid(spec, name, args.work, args.workers)
            minutes = breadth.grid_minutes(name, (time.time() - t0) / 60, trained)
            print(f"grid {name} -> {breadth.export(spec, name, rows, minutes=minutes)} ({minutes:.1f} min)", flush=True)
        return 0
    if args.rescore_paired:
        print(f"rescored -> {ref.rescore_paired(args.out)}")
        return 0
    if args.export_paired:
        out = ref.export_paired(args.export_paired, Path(args.out) / args.paired_name, json.loads(args.parameters))
        print(f"paired reference runs -> {out}")
        return 0
    for method in args.methods:
        print(f"reference run: {method}", flush=True)
        print(f"  -> {ref.run_reference(method, args.config, args.out, args.set)}", flush=True)
    return 0


def sweep(argv=None) -> int:
    import yaml

    from .companion.sweep import run_sweep

    ap = argparse.ArgumentParser(prog=f"{_PROG} sweep", description="Run a notebook over a grid of parameters.")
    ap.add_argument("params", help="YAML sweep file (see affcons_lib.companion.sweep)")
    ap.add_argument("--kernel", default=None)
    args = ap.parse_args(argv)
    p = Path(args.params)
    if not p.is_file():
        return _error(f"sweep file not found: {p}")
    try:
        run_sweep(yaml.safe_load(p.read_text()) or {}, kernel=args.kernel)
    except (ValueError, FileNotFoundError) as err:
        return _error(err)
    return 0


#: every command: its name on the command line and the function that runs it
COMMANDS = {"train": train, "cpsn": cpsn, "predict": predict, "evaluate": evaluate, "blockwise": blockwise,
            "fetch": fetch, "reproduce": reproduce, "book": book, "report": report, "reference": reference, "sweep": sweep}


def main(argv=None) -> int:
    """Run ``argv`` (default: the process's arguments): a command name, then its arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__.split("\n\n")[1])
            return 0
        print(f"usage: {_PROG} COMMAND [ARGS ...], COMMAND one of {', '.join(COMMANDS)}"
              + (f" (got {argv[0]!r})" if argv else ""), file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])
