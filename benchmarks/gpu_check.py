"""The paper-scale path on one GPU, checked and timed in one short run.

    python benchmarks/gpu_check.py OUT_DIR [--train-seconds 150] [--device cuda]

Prints, with the device's name on every line:
1. the time of one training iteration at the paper's scale (18x160x160 patches,
   batch 2, widths 28-80) for ``sparse_only`` (f(θ2)) and ``crac`` (both
   networks), and the peak GPU memory of each;
2. tiled inference of a trained f(θ2) on the device against the same on the CPU
   (largest difference);
3. short trainings of ``sparse_only`` and ``crac`` at the paper's widths, same seed
   and annotation, each for about ``--train-seconds``; their f(θ2) weights go to
   OUT_DIR (``{method}_embedding.pt``, a few MB) with ``gpu_check.json``, to be
   scored where waterz is installed:
   ``python benchmarks/gpu_check.py --score OUT_DIR``.

Data: the real FIB-SEM volume where ``AFFCONS_DATA_DIR`` (or the usual places)
holds it, else generated data (said on the first line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from affcons_lib.method import affinity, models
from affcons_lib.training import checkpoint, config, inference, sampling, train
from affcons_lib.evaluation import evaluate
from affcons_lib._atomic import write_json

PAPER = dict(config.SCALES["paper"])
SCALE = {"scale": "paper"}  # --rehearse: tiny networks, to try this script on a CPU first


def say(device_name: str, text: str) -> None:
    print(f"[{device_name}] {text}", flush=True)


def time_iterations(method: str, prepared: dict, device: str, out: Path, n: int = 12) -> dict:
    """Seconds per iteration (iterations 3..n, after cuDNN has chosen its kernels)
    and peak memory of a paper-scale run of ``method``."""
    cfg = config.load_config(None, {**SCALE, "method": method, "iterations": n, "device": device,
                                    "progress": False, "log_every": 1, "checkpoint_every": 10 * n,
                                    "out_dir": str(out / f"timing_{method}")})
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    summary = train.train(cfg, prepared)
    log = json.loads((out / f"timing_{method}" / "summary.json").read_text())["last_losses"]
    rows = checkpoint.read_checkpoint(Path(summary["checkpoint"]), "cpu")["log"]
    per_iter = (rows[-1]["seconds"] - rows[1]["seconds"]) / (len(rows) - 2)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return {"seconds_per_iteration": per_iter, "peak_gib": peak, "last_loss": log.get("total")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--train-seconds", type=float, default=150.0)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--score", action="store_true", help="score the weights a GPU run left in OUT (needs waterz)")
    ap.add_argument("--rehearse", action="store_true", help="tiny networks and patches: try the script on a CPU")
    args = ap.parse_args()
    if args.rehearse:
        SCALE.update(widths=(4, 8), patch=(4, 32, 32))
        PAPER.update(widths=(4, 8), patch=(4, 32, 32))
    if args.score:
        return score(args.out)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check here", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick its fastest kernels once
    args.out.mkdir(parents=True, exist_ok=True)
    base = config.load_config(None, {**SCALE, "device": device})
    prepared = sampling.prepare_data(base)
    say(name, f"torch {torch.__version__}; data: {prepared.source}")
    results = {"device": name, "torch": torch.__version__, "source": prepared.source, "rehearsal": args.rehearse}

    for method in ("sparse_only", "crac"):
        t = time_iterations(method, prepared, device, args.out)
        results[f"timing_{method}"] = t
        say(name, f"{method}: {t['seconds_per_iteration'] * 1000:.0f} ms per iteration ({base.patch}, "
                  f"batch {base.batch}, widths {base.widths}), peak {t['peak_gib']:.2f} GiB; 200k iterations = "
                  f"{200_000 * t['seconds_per_iteration'] / 3600:.1f} h")

    for method in ("sparse_only", "crac"):
        per_iter = results[f"timing_{method}"]["seconds_per_iteration"]
        iterations = max(50, int(args.train_seconds / per_iter) // 50 * 50)
        cfg = config.load_config(None, {**SCALE, "method": method, "iterations": iterations,
                                        "device": device, "progress": False, "log_every": 50,
                                        "checkpoint_every": iterations, "out_dir": str(args.out / f"run_{method}")})
        s = train.train(cfg, prepared)
        weights = checkpoint.read_checkpoint(Path(s["checkpoint"]), "cpu")["models"]["embedding"]
        torch.save(weights, args.out / f"{method}_embedding.pt")
        results[f"train_{method}"] = {"iterations": iterations, "seconds": s["seconds"],
                                      "last_losses": s["last_losses"]}
        say(name, f"{method}: {iterations} iterations in {s['seconds']:.0f} s, final loss "
                  f"{s['last_losses']['total']:.4f} -> {method}_embedding.pt")

    # the same network and tiles on the device and on the CPU
    net = models.build("embedding3d", widths=PAPER["widths"])
    net.load_state_dict(torch.load(args.out / "crac_embedding.pt"))
    crop = sampling.center_crop(prepared.raw_test[0][:24], (160, 160))
    tile = inference.default_tile(crop.shape, PAPER["patch"], net.divisor)
    on_device = inference.predict_affinities(net.to(device), crop, affinity.OFFSETS_3D, tile=tile, with_entropy=False)
    on_cpu = inference.predict_affinities(net.to("cpu"), crop, affinity.OFFSETS_3D, tile=tile, with_entropy=False)
    diff = float(np.abs(on_device - on_cpu).max())
    results["inference_max_abs_difference"] = diff
    say(name, f"inference on {device} vs cpu, {crop.shape}: largest |difference| {diff:.2e}")
    write_json(args.out / "gpu_check.json", results, default=float)
    return 0


def score(out: Path) -> int:
    """The project's evaluation of the weights a GPU run left in ``out``."""
    results = json.loads((out / "gpu_check.json").read_text())
    prepared = sampling.prepare_data(config.load_config(None, SCALE))
    if results.get("rehearsal"):
        PAPER.update(widths=(4, 8), patch=(4, 32, 32))
    ref = evaluate.reference_scores(prepared.labels_test[0])
    print(f"floors and ceiling: " + ", ".join(f"{r['name']} {r['voi']:.3f}" for r in ref))
    for method in ("sparse_only", "crac"):
        net = models.build("embedding3d", widths=PAPER["widths"])
        net.load_state_dict(torch.load(out / f"{method}_embedding.pt"))
        tile = inference.default_tile(prepared.labels_test[0].shape, PAPER["patch"], net.divisor)
        affs = inference.predict_affinities(net, prepared.raw_test[0], affinity.OFFSETS_3D, tile=tile,
                                            with_entropy=False)
        s = evaluate.evaluate_3d(affs, prepared.labels_test[0])
        a = evaluate.affinity_scores(affs, prepared.labels_test[0], affinity.OFFSETS_3D)
        it = results[f"train_{method}"]["iterations"]
        print(f"{method} ({it} iterations on {results['device']}): VOI {s['voi']:.3f} "
              f"(split {s['voi_split']:.3f}, merge {s['voi_merge']:.3f}), ARAND {s['arand']:.3f}; "
              f"affinity error {a['affinity_error']:.4f}, boundary AP {a['boundary_ap']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
