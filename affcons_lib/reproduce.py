"""Run every notebook in order with papermill: ``make reproduce``.

    python -m affcons_lib.reproduce [--notebooks notebooks] [--runs runs]
                                    [--figures figures] [--only PREFIX ...] [-p NAME VALUE ...]

Executed copies and the notebooks' runs go to ``--runs`` (``$AFFCONS_RUNS_DIR``);
with ``--record DIR`` the numbers the notebooks recorded (``viz.record_results``)
and each notebook's run time are copied to ``DIR`` at the end (``make reproduce``:
``data/reproduce/``, committed with the figures, so the README's verdicts name the
files they come from);
notebooks save their figures through :func:`affcons_lib.viz.save_figure`, which
writes to ``$AFFCONS_FIGURES_DIR`` (set here to ``--figures``). ``-p`` passes a
parameter to every notebook that declares it in its ``parameters`` cell; ``--only``
runs the notebooks whose names start with a prefix given (``--only 01``). Each
notebook shows a progress bar of its cells; kernels talk over local sockets
(IPC), so no warning about unencrypted TCP fills the log.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


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


def _parse_value(text: str):
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
    os.environ["AFFCONS_STATIC"] = "1"  # sliders draw one figure at their value (affcons_lib.explore)
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
    from ._atomic import write_json, write_text

    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(results.glob("*.json")):
        write_text(dest / f.name, f.read_text())
    from ._provenance import provenance

    minutes = sum(timings.values()) / 60
    # the parameters each notebook ran with: its own defaults, replaced by those given (-p)
    write_json(dest / "run_times.json", {"seconds": timings, "total_minutes": minutes,
                                         "parameters": params or "each notebook's defaults",
                                         "threads": os.environ.get("OMP_NUM_THREADS"),
                                         "provenance": provenance(os.environ.get("OMP_NUM_THREADS"), minutes)})
    print(f"recorded numbers and run times -> {dest}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m affcons_lib.reproduce", description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
    params = {k: _parse_value(v) for k, v in args.p}
    return run_all(args.notebooks, args.runs, args.figures, params, args.kernel, args.record, args.only)


if __name__ == "__main__":
    sys.exit(main())
