"""What made a record: commit, date, package versions, CPU and its bf16 support.
Every record the companion commits (``data/reproduce/``, ``data/reference/breadth/``)
carries it, so a number can be traced to the code and the machine that made it."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from .._paths import CHECKOUT

__all__ = ["provenance", "provenance_line", "kind_of_cpu", "print_header", "cpu_slug"]


#: what a record's commit is about: an uncommitted change here makes it ``-dirty``
_CODE = ("affcons_lib", "notebooks", "benchmarks", "pyproject.toml", "Makefile", "environment.yml",
         ":(exclude)notebooks/book")  # the book's pages are text about the runs, not code


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def provenance(threads: int | str | None = None, minutes: float | None = None) -> dict:
    """The commit (``-dirty`` when the code has uncommitted changes: the library, notebooks,
    benchmarks or set-up; the figures and records a run writes do not count), the UTC date,
    Python, torch and numpy versions, the CPU model, its core count, whether it
    computes bf16 natively (then ``precision="auto"`` runs bf16), torch's kernels
    (``"AVX512"``, ``"AVX2"``) and, where a run held them below what the CPU has, the
    settings that did (``kernel_caps``: ``make reproduce-avx2``), the threads and the
    minutes the record's runs took."""
    import numpy
    import torch

    from ..method.models import cpu_kernels

    kernels = cpu_kernels()
    root = CHECKOUT
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        # the code that makes the numbers; not figures/ and data/, which the runs themselves write
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *_CODE], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "-dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return dict(commit=commit, date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                python=platform.python_version(), torch=torch.__version__, numpy=numpy.__version__,
                cpu=_cpu_model(), cores=os.cpu_count(), threads=threads, native_bf16=kernels["native_bf16"],
                kernels=kernels["capability"], **({"kernel_caps": kernels["caps"]} if kernels["caps"] else {}),
                minutes=minutes)


def provenance_line(record: dict) -> str:
    """A record's provenance in one line, for a benchmark's printed output:
    ``commit 1a2b3c4d, 2026-12-07T05:00:26+00:00, AMD EPYC (2 cores, 1 threads, bf16 native), torch 2.13.0``."""
    return (f"commit {record['commit'][:8]}{'-dirty' if record['commit'].endswith('-dirty') else ''}, "
            f"{record['date']}, {record['cpu']} ({record['cores']} cores, {record['threads']} threads, "
            f"bf16 {'native' if record['native_bf16'] else 'not native'}{_held(record)}), python {record['python']}, "
            f"torch {record['torch']}, numpy {record['numpy']}")


def _held(record: dict) -> str:
    """``, AVX2 kernels (held below the CPU's)`` for a record whose run held the kernels
    below what its CPU has; empty otherwise (and for records from before this was noted)."""
    return f", {record['kernels']} kernels (held below the CPU's)" if record.get("kernel_caps") else ""


def kind_of_cpu(record: dict) -> str:
    """A record's CPU in a few words: ``AMD EPYC (2 cores, bf16 native)``, or ``AMD EPYC as
    without AVX-512 (AVX2 kernels, no bf16)`` where the run held the kernels below the CPU's."""
    if record.get("kernel_caps"):
        return f"{record['cpu']} as without AVX-512 ({record['kernels']} kernels, no bf16)"
    return f"{record['cpu']} ({record['cores']} cores, bf16 {'native' if record['native_bf16'] else 'not native'})"


def print_header(script: str, threads: int | str | None = None) -> None:
    """Print the two comment lines a benchmark's output starts with: the command as run
    and :func:`provenance_line`, so that a saved output is a record."""
    import sys

    print("# python " + " ".join([script, *sys.argv[1:]]))
    print("# " + provenance_line(provenance(threads)), flush=True)


def cpu_slug() -> str:
    """The CPU model as a file-name part (``amd_epyc``): benchmark records are kept per
    kind of CPU."""
    import re

    return re.sub(r"[^a-z0-9]+", "_", _cpu_model().lower()).strip("_") or "unknown"
