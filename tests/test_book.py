"""The book (affcons_lib.companion.book): executed notebooks and the pages built offline
into one site whose every page, figure and link is there."""

from __future__ import annotations

import base64
import io
import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402

from affcons_lib import cli  # noqa: E402
from affcons_lib.companion import book  # noqa: E402


def _png() -> str:
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _executed(path, title, n_figures):
    """An executed notebook as make reproduce leaves one: a title, a glossary link, a
    code cell with ``n_figures`` PNG outputs and a printed line."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                         "language": "python"}})
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {title}\n\nsee the [floor](book/glossary.md#floor)"))
    code = nbformat.v4.new_code_cell("plot()")
    code.outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})
                    for _ in range(n_figures)]
    code.outputs.append(nbformat.v4.new_output("stream", name="stdout", text="VOI 2.5\n"))
    nb.cells.append(code)
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def site(smoke_runs, tmp_path_factory):
    """The book of every notebook as its smoke run executed it, and this checkout's pages."""
    runs = tmp_path_factory.mktemp("executed")
    for name, (folder, done) in smoke_runs.items():
        assert done.returncode == 0, f"{name} failed its smoke run"
        shutil.copy2(folder / name, runs / name)
    return book.build_book(runs, runs.parent / "book").parent


def test_the_book_holds_every_notebook_with_its_figures_and_every_page(site, smoke_runs):
    assert (site / "index.html").is_file()
    for name, (folder, _) in smoke_runs.items():
        executed = nbformat.read(folder / name, as_version=4)
        figures = sum("image/png" in out.get("data", {}) for cell in executed.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
        page = (site / "notebooks" / f"{name[:-6]}.html").read_text()
        # the outputs as the run left them, not executed again: every figure, as a file of the site
        assert len(re.findall(r"<img [^>]*src=\"[^\"]+\.png\"", page)) == figures, name
    for md in book.PAGES.glob("*.md"):
        assert (site / "notebooks" / "book" / f"{md.stem}.html").is_file(), md.name
    home = (site / "notebooks" / "book" / "index.html").read_text()
    assert "01_training.html" in home and "glossary.html" in home and "method.svg" in home


def test_every_link_and_image_of_the_book_resolves(site):
    assert book.check_links(site) == []


def test_check_links_finds_missing_files_and_anchors(tmp_path):
    (tmp_path / "a.html").write_text('<h1 id="top">A</h1><a href="b.html">b</a><a href="a.html#nowhere">x</a>'
                                     '<a href="#top">top</a><img src="missing.png"><a href="https://x.org">web</a>')
    assert book.check_links(tmp_path) == ["a.html: link to a missing file b.html",
                                          "a.html: link to a missing anchor a.html#nowhere",
                                          "a.html: image to a missing file missing.png"]


def test_a_page_with_a_broken_link_fails_the_build_naming_it(tmp_path):
    pages = tmp_path / "pages"
    shutil.copytree(book.PAGES, pages)
    (pages / "glossary.md").write_text((pages / "glossary.md").read_text() + "\nSee [nothing](nowhere.md).\n")
    runs = tmp_path / "runs"
    runs.mkdir()
    _executed(runs / "00_first.ipynb", "0 · First", 1)
    with pytest.raises(RuntimeError, match=r"glossary.md.*nowhere"):
        book.build_book(runs, tmp_path / "out", pages=pages)
    assert not (tmp_path / "out" / "html").exists()  # no half-built book


def test_the_book_needs_executed_notebooks(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"no executed notebooks.*make reproduce"):
        book.stage(tmp_path, tmp_path / "src")
    assert cli.main(["book", "--runs", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "make reproduce" in capsys.readouterr().err


def _browser():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()


@pytest.mark.skipif(not _browser(), reason="make book's browser check needs Debian's chromium, chromium-driver and "
                                           "selenium (make book installs them)")
def test_every_page_renders_in_headless_chromium(site):
    assert book.check_site(site) == []
