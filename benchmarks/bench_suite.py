"""How long CI takes: `.ci/run` on a fresh clone of HEAD, as CI runs it, timed and recorded.

    python benchmarks/bench_suite.py [--out benchmarks/results] [--durations 15]

Clones the checkout's HEAD into a temporary folder (beside a link to ``../shared`` where
the checkout has one, so the real data are found as in CI), runs ``CI=true bash .ci/run``
there (set-up of ``.venv`` included) and writes ``suite_<cpu>.json`` under ``--out``:
the minutes in all and of pytest alone, pytest's summary line, its slowest tests and
the provenance of the run (commit, CPU, versions), with the earlier runs' minutes kept. The book's time-to-claim page shows
the record. Run it on a quiet machine: two cores shared with other work give other minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from affcons_lib._atomic import write_json
from affcons_lib.companion.provenance import cpu_slug, provenance

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--durations", type=int, default=15, help="how many of the slowest tests to record")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_suite_") as tmp:
        clone = Path(tmp) / "main"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            (Path(tmp) / "shared").symlink_to(shared.resolve())
        env = {**os.environ, "CI": "true", "PYTEST_ADDOPTS": f"--durations={args.durations}"}
        env.pop("AFFCONS_DATA_DIR", None)  # as CI: the Makefile finds the data itself
        t0 = time.perf_counter()
        done = subprocess.run(["bash", ".ci/run"], cwd=clone, env=env, capture_output=True, text=True)
        minutes = (time.perf_counter() - t0) / 60
    out = done.stdout + done.stderr
    summary = [line.strip("= ") for line in out.splitlines() if re.search(r"\d+ passed.* in [\d.]+s", line)]
    if done.returncode != 0 or not summary:
        raise SystemExit(f".ci/run failed (exit {done.returncode}); its last lines:\n{out[-3000:]}")
    pytest_minutes = float(re.search(r" in ([\d.]+)s", summary[-1]).group(1)) / 60
    slowest = re.findall(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)", out, flags=re.M)
    record = {"command": "CI=true bash .ci/run (a fresh clone of HEAD)", "minutes": minutes,
              "pytest_minutes": pytest_minutes, "summary": summary[-1],
              "slowest": [{"seconds": float(s), "phase": phase, "test": test} for s, phase, test in slowest],
              "provenance": provenance(os.environ.get("OMP_NUM_THREADS"), minutes)}
    # the runs before this one on this kind of CPU stay in the record: their spread is part
    # of the answer (a shared 2-core machine differs by minutes from one run to the next)
    dest = Path(args.out) / f"suite_{cpu_slug()}.json"
    earlier = json.loads(dest.read_text()) if dest.is_file() else None
    record["earlier"] = ([] if earlier is None else earlier.get("earlier", []) +
                         [{k: earlier[k] for k in ("minutes", "pytest_minutes", "summary")} |
                          {"commit": earlier["provenance"]["commit"], "date": earlier["provenance"]["date"]}])
    path = write_json(dest, record)
    print(f"{path}: {minutes:.1f} min in all, {pytest_minutes:.1f} min of pytest ({summary[-1]})")


if __name__ == "__main__":
    main()
