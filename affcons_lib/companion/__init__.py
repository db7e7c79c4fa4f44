"""The companion's own tooling: the notebooks' helpers, figures, records and reports.

- :mod:`.side_by_side` and :mod:`.breadth`: paired runs, one grid or many;
- :mod:`.reference`: the long reference runs and their curves;
- :mod:`.reproduce`, :mod:`.sweep`: executing the notebooks and recording their numbers;
- :mod:`.provenance`: what made a record (commit, versions, CPU, precision);
- :mod:`.documents` and :mod:`.book`: the generated parts of the front page and the
  book's pages, and the book itself (Sphinx, MyST-NB, checked in headless Chromium);
- :mod:`.viz`, :mod:`.explore`, :mod:`.layers`: figures, questions a reader asks of
  one prediction, a prediction written for a viewer.

Imports: anything in the library; nothing in the library imports it (but the
command line, :mod:`affcons_lib.cli`).
"""
