"""The executed notebooks as web pages, for readers who run nothing.

    python -m affcons_lib report [--runs runs] [--out runs/report]
    make report

Renders every executed notebook ``NN_*.ipynb`` in ``--runs`` (what ``make
reproduce`` leaves there) to a self-contained HTML page (figures embedded, no
internet needed) and writes ``index.html``: first what the runs found (notebook 01's
central claim and each notebook's "What this run found", from the results the
notebooks recorded in ``runs/results``), then one line per notebook with its title,
when it ran, and how many figures it holds. Open ``runs/report/index.html`` in a
browser.
"""

from __future__ import annotations

import datetime
import html
import json
import re
from pathlib import Path

from .._atomic import write_text

__all__ = ["notebook_title", "count_figures", "inline_html", "render_report"]


def inline_html(text: str) -> str:
    """A line of Markdown prose as HTML text: escaped, with `code` spans as
    ``<code>`` and **bold** as ``<strong>`` (no backticks shown literally)."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _findings(results: Path, stem: str) -> list[str]:
    path = results / f"{stem}_findings.json"
    return json.loads(path.read_text()).get("findings", []) if path.is_file() else []


def notebook_title(nb) -> str:
    """The first Markdown heading of a notebook (its file name when it has none)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return ""


def count_figures(nb) -> int:
    """Image outputs (PNG, JPEG or SVG) in an executed notebook."""
    kinds = ("image/png", "image/jpeg", "image/svg+xml")
    return sum(any(k in out.get("data", {}) for k in kinds)
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


def render_report(runs, out=None, results=None) -> Path:
    """Render the executed notebooks of ``runs`` to ``out`` (default
    ``runs/report``); returns the index page, which opens with what the runs found
    as they recorded it in ``results`` (default ``runs/results``). Raises
    FileNotFoundError naming the folder when it holds no executed notebook, and
    ValueError naming a notebook that was never executed (no outputs at all)."""
    import nbformat
    from nbconvert import HTMLExporter

    runs = Path(runs)
    out = Path(out) if out is not None else runs / "report"
    results = Path(results) if results is not None else runs / "results"
    paths = sorted(runs.glob("[0-9]*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"{runs}: no executed notebooks (NN_*.ipynb); run `make reproduce` first")
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    rows = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if not any(cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"):
            raise ValueError(f"{path}: no outputs; it was never executed (run `make reproduce`)")
        body, _ = exporter.from_notebook_node(nb)
        page = out / (path.stem + ".html")
        write_text(page, body)
        when = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        rows.append((page.name, notebook_title(nb) or path.stem, when, count_figures(nb),
                     _findings(results, path.stem)))
    items = "\n".join(f'<li><a href="{html.escape(name)}">{inline_html(title)}</a> '
                      f'<small>({figs} figure{"s" if figs != 1 else ""}, run {when})</small></li>'
                      for name, title, when, figs, _ in rows)
    found = []
    claims = results / "01_claims.json"
    if claims.is_file():
        central = json.loads(claims.read_text()).get("central")
        if central:
            found.append(f"<p><strong>The central claim</strong> (notebook 01): {inline_html(central)}</p>")
    for name, title, _, _, lines in rows:
        if lines:
            bullets = "\n".join(f"<li>{inline_html(line)}</li>" for line in lines)
            found.append(f'<h3><a href="{html.escape(name)}">{inline_html(title)}</a></h3>\n<ul>\n{bullets}\n</ul>')
    summary = "\n".join(found) if found else \
        f"<p>No recorded findings in <code>{html.escape(str(results))}</code>.</p>"
    index = out / "index.html"
    write_text(index, f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>affcons: executed notebooks</title></head>
<body>
<h1>affcons: the executed notebooks</h1>
<p>Rendered from <code>{html.escape(str(runs))}</code> by <code>make report</code>; figures are embedded.
A difference is A &minus; B over paired seeds on a lower-is-better scale (AP negated): negative favours A.</p>
<h2>What the runs found</h2>
{summary}
<h2>The notebooks</h2>
<ol>
{items}
</ol>
</body></html>
""")
    return index
