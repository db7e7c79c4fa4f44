"""The library's shape: imports run one way (no cycle between modules), and the
training loop stays short enough to read top to bottom."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "affcons_lib"


def imports_of(path: Path, package: str) -> set[str]:
    """Modules of the package that ``path`` imports, at top level or inside functions."""
    pkg = package if path.name == "__init__.py" else package.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            found |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
    return found


def module_graph() -> dict[str, set[str]]:
    names = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return {m: {d for d in imports_of(f, m) if d in names and d != m} for m, f in names.items()}


def find_cycle(graph):
    """One cycle as a list of modules, or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state:
                cycle = visit(d)
                if cycle:
                    return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state:
            cycle = visit(m)
            if cycle:
                return cycle
    return None


def test_no_import_cycle():
    assert find_cycle(module_graph()) is None


def test_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_training_loop_module_is_short():
    assert len((PACKAGE / "training" / "train.py").read_text().splitlines()) <= 350


def test_prepared_data_is_typed_not_a_dict():
    """The prepared dataset travels as sampling.PreparedData: no string-key access
    like prepared["raw_train"] in the library, the notebooks or the benchmarks."""
    import re

    root = PACKAGE.parent
    pattern = re.compile(r"""\[\\?["'](raw_train|raw_test|labels_train|labels_test|sparse_train|n_nearest|in_channels)\\?["']\]""")
    files = [*PACKAGE.rglob("*.py"), *(root / "notebooks").glob("*.ipynb"), *(root / "benchmarks").glob("*.py")]
    hits = [f"{f.relative_to(root)}: {m.group(0)}" for f in files for m in pattern.finditer(f.read_text())]
    assert not hits, hits


def test_each_training_loop_fits_in_a_screen():
    """train.train and cpsn.train_cpsn share loop.TrainingLoop; each reads top to
    bottom in 60 lines (docstring included)."""
    for name, function in (("training/train.py", "train"), ("training/cpsn.py", "train_cpsn")):
        tree = ast.parse((PACKAGE / name).read_text())
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
        assert node.end_lineno - node.lineno + 1 <= 60, f"{function}: {node.end_lineno - node.lineno + 1} lines"
        calls = {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "TrainingLoop" in calls, f"{function} does not use the shared TrainingLoop"


def _library_modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_command_lines_live_in_one_module():
    """Only affcons_lib/cli.py defines a command line (a function named main)."""
    found = [str(p.relative_to(PACKAGE)) for p in _library_modules()
             if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in ast.parse(p.read_text()).body)]
    assert found == ["cli.py"]


def test_no_module_imports_another_modules_private_name():
    """A name with a leading underscore stays in its module: `from .x import _y` nowhere."""
    hits = []
    for p in _library_modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("affcons_lib")):
                hits += [f"{p.relative_to(PACKAGE)}: {a.name}" for a in node.names
                         if a.name.startswith("_") and not a.name.startswith("__")]
    assert not hits, hits


#: the subpackages, lowest first: a module may import from its own package and from
#: those before it, never from one after it
PACKAGES = ("data", "method", "segmentation", "evaluation", "training", "blockwise", "companion")
#: top-level modules any package may use; they import no package
HELPERS = ("affcons_lib._atomic", "affcons_lib._paths", "affcons_lib.distributed")


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else None


def order_violations(graph) -> list[str]:
    """Imports against the package order (and helpers importing packages)."""
    bad = []
    for m, deps in graph.items():
        if m in HELPERS:
            bad += [f"{m} -> {d}" for d in deps if d not in HELPERS]
            continue
        p = package_of(m)
        if p is None:  # affcons_lib itself, cli, __main__: the top
            continue
        for d in deps:
            q = package_of(d)
            if q is None and d not in HELPERS:
                bad.append(f"{m} -> {d} (the top level)")
            elif q is not None and PACKAGES.index(q) > PACKAGES.index(p):
                bad.append(f"{m} -> {d} ({q} comes after {p})")
    return bad


def test_every_module_lives_in_a_package():
    """The top level holds the package order's helpers, the command line and nothing else."""
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == sorted(["__init__", "__main__", "cli", *(h.rsplit(".", 1)[1] for h in HELPERS)]), top
    assert sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()) == sorted(PACKAGES)


def test_imports_follow_the_package_order():
    assert order_violations(module_graph()) == []


def test_order_check_finds_an_upward_import():
    graph = {"affcons_lib.segmentation.recipe": {"affcons_lib.evaluation.metrics"},
             "affcons_lib.evaluation.metrics": {"affcons_lib.segmentation._keysort"},
             "affcons_lib._atomic": {"affcons_lib.training.loop"}}
    assert order_violations(graph) == [
        "affcons_lib.segmentation.recipe -> affcons_lib.evaluation.metrics (evaluation comes after segmentation)",
        "affcons_lib._atomic -> affcons_lib.training.loop"]


def test_each_package_says_what_it_holds_and_may_import():
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text())) or ""
        assert "Imports" in doc and len(doc.splitlines()) >= 3, name


def test_one_builder_each_for_relabelling_contingency_and_region_graph():
    """Distinct ids and each voxel's index: only segmentation/labels.py computes
    them (``return_inverse``); contingency tables are built only in
    evaluation/metrics.py (``csr_array``); boundary edges between fragments only in
    segmentation/agglomeration.py (``boundary_edges``, used by the in-memory region
    graph and the blockwise edges alike)."""
    def files_with(pattern):
        return sorted(str(p.relative_to(PACKAGE)) for p in _library_modules() if pattern in p.read_text())

    assert files_with("return_inverse") == ["segmentation/labels.py"]
    assert files_with("csr_array(") == ["evaluation/metrics.py"]
    assert files_with("def boundary_edges(") == ["segmentation/agglomeration.py"]
    assert "boundary_edges(" in (PACKAGE / "blockwise" / "segment.py").read_text()


def test_a_module_lists_only_its_own_names():
    """``__all__`` names what a module defines: no name reached through two modules
    (a package's ``__init__`` may gather its modules' names; only data's does)."""
    hits = []
    for p in _library_modules():
        tree = ast.parse(p.read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        top = [s for n in tree.body for s in ([n] + (n.body + [x for h in n.handlers for x in h.body]
                                                     if isinstance(n, ast.Try) else []))]
        defined |= {t.id for n in top if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        listed = [e.value for n in tree.body if isinstance(n, ast.Assign)
                  for t in n.targets if isinstance(t, ast.Name) and t.id == "__all__" for e in n.value.elts]
        if p.name != "__init__.py":
            hits += [f"{p.relative_to(PACKAGE)}: {name}" for name in listed if name not in defined]
    assert not hits, hits


def test_under_xdist_each_test_keeps_its_group(request):
    # make test's workers compute a session fixture once only if its tests stay in one group
    # (tests/conftest.py); pytest 9.2 with xdist 3.8 drops the groups without a word
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not under pytest-xdist --dist loadgroup (make test runs it so)")
    assert request.node.nodeid.endswith("@test_layout")
    # and they go out in conftest's order, longest first (LONGEST_GROUPS), not xdist's by test count
    assert request.config.option.loadscopereorder is False, "make test passes --no-loadscope-reorder"
