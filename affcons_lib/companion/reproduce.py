"""Run every notebook in order with papermill: ``make reproduce``.

    python -m affcons_lib reproduce [--notebooks notebooks] [--runs runs]
                                    [--figures figures] [--only PREFIX ...] [-p NAME VALUE ...]

Executed copies and the notebooks' runs go to ``--runs`` (``$AFFCONS_RUNS_DIR``);
with ``--record DIR`` the numbers the notebooks recorded (``viz.record_results``)
and each notebook's run time are copied to ``DIR`` at the end (``make reproduce``:
``data/reproduce/``, committed with the figures, so the front page's verdicts name the
files they come from);
notebooks save their figures through :func:`affcons_lib.companion.viz.save_figure`, which
writes to ``$AFFCONS_FIGURES_DIR`` (set here to ``--figures``). ``-p`` passes a
parameter to every notebook that declares it in its ``parameters`` cell; ``--only``
runs the notebooks whose names start with a prefix given (``--only 01``). Each
notebook shows a progress bar of its cells; kernels talk over local sockets
(IPC), so no warning about unencrypted TCP fills the log.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .._paths import CHECKOUT


def declared_parameters(nb_path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    import ast

    nb = json.loads(nb_path.read_text())
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell.get("source", []))
            names = set()
            for node in ast.parse(src).body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            return names
    return set()


def parse_value(text: str):
    """A command-line value as JSON where it parses (numbers, lists, true), else the text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _ipc_kernel_manager():
    """A kernel manager whose kernel listens on local IPC sockets, not TCP ports:
    nothing leaves the machine, and ipykernel has no unencrypted-TCP warning to print."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"

    return IPCKernelManager


def run_all(notebooks: Path, runs: Path, figures: Path, params: dict, kernel: str | None = None,
            record: Path | None = None, only=()) -> int:
    import papermill as pm

    paths = sorted(notebooks.glob("[0-9]*.ipynb"))
    if only:
        paths = [p for p in paths if p.name.startswith(tuple(only))]
        if not paths:
            raise SystemExit(f"--only {' '.join(only)}: no notebook in {notebooks}/ starts with that")
    if not paths:
        print(f"no notebooks in {notebooks}/ yet: nothing to run")
        return 0
    runs.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    os.environ["AFFCONS_FIGURES_DIR"] = str(figures.resolve())
    os.environ["AFFCONS_RUNS_DIR"] = str(runs.resolve())
    os.environ["AFFCONS_STATIC"] = "1"  # sliders draw one figure at their value (affcons_lib.companion.explore)
    results = Path(os.environ.get("AFFCONS_RESULTS_DIR") or runs / "results")
    manager = _ipc_kernel_manager()
    timings = {}
    for path in paths:
        declared = declared_parameters(path)
        unknown = set(params) - declared
        use = {k: v for k, v in params.items() if k in declared}
        if unknown:
            print(f"{path.name}: ignoring parameters it does not declare: {', '.join(sorted(unknown))}")
        t0 = time.time()
        print(f"[{paths.index(path) + 1}/{len(paths)}] running {path.name} {use or ''}", flush=True)
        pm.execute_notebook(str(path), str(runs / path.name), parameters=use, cwd=str(path.parent),
                            kernel_name=kernel, progress_bar=True, kernel_manager_class=manager)
        timings[path.stem] = time.time() - t0
        print(f"  done in {timings[path.stem]:.0f} s -> {runs / path.name}")
    if record is not None:
        _record(results, Path(record), timings, params)
    return 0


def _record(results: Path, dest: Path, timings: dict, params: dict) -> None:
    """Copy the recorded numbers (``results/*.json``) and the run times to ``dest``."""
    from .._atomic import write_json, write_text

    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(results.glob("*.json")):
        write_text(dest / f.name, f.read_text())
    from .provenance import provenance

    minutes = sum(timings.values()) / 60
    threads = os.environ.get("OMP_NUM_THREADS")
    previous = dest / "run_times.json"
    whole = json.loads(previous.read_text()) if previous.is_file() else {}
    if set(whole.get("seconds", {})) - set(timings):
        # a run of some notebooks (--only) does not replace the times of a whole run: it is
        # kept beside them, with what made it, and the run-times table stays the whole run's
        made = provenance(threads, minutes)
        whole.setdefault("reruns", {}).update({name: {"seconds": s, "parameters": params or "defaults",
                                                      "commit": made["commit"], "date": made["date"]}
                                               for name, s in timings.items()})
        write_json(previous, whole)
    else:
        # the parameters each notebook ran with: its own defaults, replaced by those given (-p)
        write_json(previous, {"seconds": timings, "total_minutes": minutes,
                              "parameters": params or "each notebook's defaults", "threads": threads,
                              "provenance": provenance(threads, minutes)})
    print(f"recorded numbers and run times -> {dest}")


#: where make reproduce (and make reproduce-fp32 and -avx2, in fp32/ and avx2/) record their numbers and times
RECORD_DIR = CHECKOUT / "data" / "reproduce"
RUN_TIMES_START = "<!-- run times: generated by `python -m affcons_lib book --documents` from data/reproduce/ -->"
RUN_TIMES_END = "<!-- run times: end -->"


def run_parts(rows) -> str:
    """Where notebook 01's runs spent their time, summed over the runs ``rows`` (its
    score rows): shares of training, prediction (the networks on the scored parts) and
    scoring (segmentation and measures). Records from before prediction was timed apart
    give it together with scoring."""
    train = sum(r["train_seconds"] for r in rows)
    score = sum(r["score_seconds"] for r in rows)
    if not all("predict_seconds" in r for r in rows):
        total = train + score
        return f"{train / total:.0%}, {score / total:.0%} (prediction and scoring together)"
    predict = sum(r["predict_seconds"] for r in rows)
    total = train + predict + score
    return f"{train / total:.0%}, {predict / total:.0%}, {score / total:.0%}"


def notebook_01_records(root=None) -> list[dict]:
    """Each record of ``root`` (``run_times.json`` there and in its sub-folders, the main
    record first) that ran notebook 01 and names its machine: its folder, provenance,
    notebook 01's precision, draws and minutes, where its runs' time went, the central
    verdicts (affinity-level measures above their floors, and VOI) and every notebook's
    seconds. Records from before records named their machine are left out."""
    root = Path(root or RECORD_DIR)
    records = []
    for times_path in sorted(root.glob("**/run_times.json"), key=lambda p: (len(p.parts), p)):
        here = times_path.parent
        times, claims_path = json.loads(times_path.read_text()), here / "01_claims.json"
        prov = times.get("provenance")
        if prov is None or "01_training" not in times["seconds"] or not claims_path.is_file():
            continue
        claims = json.loads(claims_path.read_text())
        rows = json.loads((here / "01_training.json").read_text())["scores"]
        central = [c for c in claims["claims"] if c["claim"] == "crac beats sparse_only"]
        beyond = claims.get("beyond_floors") or {}
        counted = [c for c in central if c["measure"] != "voi"
                   and set(beyond.get(c["measure"].lstrip("-"), ())) >= {"crac", "sparse_only"}]
        records.append(dict(name=f"`{here.relative_to(root.parent.parent).as_posix()}/`", provenance=prov,
                            precision=claims["precision"], draws=len({r["seed"] for r in rows}),
                            minutes=times["seconds"]["01_training"] / 60, parts=run_parts(rows),
                            holds=sum(c["verdict"] == "holds" for c in counted), counted=len(counted),
                            voi=next((c for c in central if c["measure"] == "voi"), None), times=times))
    return records


def run_times_block(root=None) -> str:
    """The run-time tables (the book's time-to-claim page): one row per record of
    :func:`notebook_01_records` naming the CPU (and, where the run held its kernels below
    the CPU's, that), whether it computes bf16 natively, notebook 01's precision, draws and
    minutes, where its runs' time went, its central verdicts and the whole run's minutes;
    then each notebook's minutes per record. From the records alone."""
    lines = [RUN_TIMES_START, "",
             "| record | CPU (cores, threads) | bf16 native | notebook 01: precision, paired draws | notebook 01 "
             "minutes | its runs: training, prediction, scoring | `crac` beats `sparse_only`: affinity-level "
             "measures above their floors, VOI | every notebook, minutes | commit |",
             "|---|---|---|---|---|---|---|---|---|"]
    per_notebook = {}  # record -> {notebook: seconds}
    for r in notebook_01_records(root):
        prov, times, voi = r["provenance"], r["times"], r["voi"]
        verdict = (f"holds on {r['holds']} of {r['counted']}; VOI "
                   + (f"{voi['mean']:+.3f} [{voi['low']:+.3f}, {voi['high']:+.3f}] {voi['verdict']}" if voi else "-"))
        every = (f"{times['total_minutes']:.1f} ({len(times['seconds'])} notebooks)"
                 if len(times["seconds"]) > 1 else "-")
        per_notebook[r["name"]] = times["seconds"]
        held = f", as without AVX-512 ({prov['kernels']} kernels)" if prov.get("kernel_caps") else ""
        lines.append(f"| {r['name']} | {prov['cpu']} ({prov['cores']}, "
                     f"{prov['threads']}){held} | {'yes' if prov['native_bf16'] else 'no'} | {r['precision']}, "
                     f"{r['draws']} | {r['minutes']:.1f} | {r['parts']} | {verdict} | {every} | "
                     f"`{prov['commit'][:8]}{'-dirty' if prov['commit'].endswith('-dirty') else ''}` |")
    notebooks = sorted({n for seconds in per_notebook.values() for n in seconds})
    lines += ["", "| notebook | " + " | ".join(f"minutes, {name}" for name in per_notebook) + " |",
              "|---|" + "---|" * len(per_notebook)]
    lines += [f"| `{n}` | " + " | ".join(f"{seconds[n] / 60:.1f}" if n in seconds else "-"
                                         for seconds in per_notebook.values()) + " |" for n in notebooks]
    return "\n".join(lines + ["", RUN_TIMES_END])


NOTEBOOK_01_MINUTES_START = ("<!-- notebook 01 minutes: generated by `python -m affcons_lib book --documents` from "
                             "data/reproduce/; do not edit -->")
NOTEBOOK_01_MINUTES_END = "<!-- notebook 01 minutes: end -->"


def notebook_01_minutes_block(root=None) -> str:
    """The front page's run times: notebook 01 at its defaults per kind of CPU and
    precision, its minutes a paired draw (the notebook's minutes over its draws, set-up
    included) and the draws that fit in ten minutes at that pace (the frontier where ten
    do not), with its central verdicts, one line per record of :func:`notebook_01_records`."""
    from .provenance import kind_of_cpu

    lines = [NOTEBOOK_01_MINUTES_START, ""]
    for r in notebook_01_records(root):
        voi = r["voi"]["verdict"] if r["voi"] else "not scored"
        per_draw = r["minutes"] / r["draws"]
        lines.append(f"- {kind_of_cpu(r['provenance'])}, {r['precision']}: **{r['minutes']:.1f} min** for "
                     f"{r['draws']} paired draws ({per_draw:.2f} min a draw, so {int(10 // per_draw)} in ten "
                     f"minutes); `crac` beats `sparse_only` holds on {r['holds']} of {r['counted']} "
                     f"affinity-level measures, VOI {voi} ({r['name']})")
    return "\n".join(lines + ["", NOTEBOOK_01_MINUTES_END])
