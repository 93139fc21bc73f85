"""The package's house rules (docs/architecture.md): no import circle, small modules, one owner per fact."""

from __future__ import annotations

import ast
import re

import pytest

from helpers import config, metrics_record

PACKAGE = config.PROJECT_ROOT / "src" / "helpers"
# The subpackages from the ground up: each imports only from itself and those before it (docs/architecture.md).
LAYERS = ("helpers", "helpers.inputs", "helpers.uncertainty", "helpers.modeling", "helpers.analysis",
          "helpers.reporting", "helpers.experiments")
MODULE_LINE_LIMIT = 450
FUNCTION_LINE_LIMIT = 60


def _modules() -> dict[str, ast.Module]:
    """Return every module of the package by dotted name, parsed."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def _imports(module: ast.Module, known: set[str]) -> set[str]:
    """Return the package modules a module imports, at any depth of its code."""
    imported = set()
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("helpers"):
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            imported |= (names & known) or ({node.module} & known)
    return imported


def test_no_two_modules_import_each_other_through_any_path():
    modules = _modules()
    graph = {name: _imports(tree, set(modules)) - {name} for name, tree in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for imported in sorted(graph[name]):
            assert state.get(imported) != "open", f"import circle: {' -> '.join([*path, name, imported])}"
            if imported not in state:
                visit(imported, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def _layer(module: str) -> int:
    """Return the position in LAYERS of the subpackage a module belongs to."""
    parts = module.split(".")
    return LAYERS.index(".".join(parts[:2]) if len(parts) > 2 else "helpers")


def test_every_subpackage_imports_only_from_those_below_it():
    modules = _modules()
    upward = [f"{name} -> {imported}" for name, tree in modules.items()
              for imported in _imports(tree, set(modules)) if _layer(imported) > _layer(name)]
    assert not upward, f"these imports run up the layers {LAYERS}: {upward}"


def test_no_module_is_longer_than_the_limit():
    long = {path.name: count for path in PACKAGE.rglob("*.py")
            if (count := len(path.read_text().splitlines())) > MODULE_LINE_LIMIT}
    assert not long, f"split these modules along their seams (over {MODULE_LINE_LIMIT} lines): {long}"


def test_no_function_is_longer_than_the_limit():
    long = [f"{name}.{node.name} ({node.end_lineno - node.lineno + 1})" for name, tree in _modules().items()
            for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > FUNCTION_LINE_LIMIT]
    assert not long, f"split these functions along their seams (over {FUNCTION_LINE_LIMIT} lines): {long}"


@pytest.mark.slow
def test_importing_the_package_changes_no_plotting_or_logging_setting():
    import subprocess
    import sys

    probe = ("import logging, matplotlib; before = dict(matplotlib.rcParams); "
             "level = logging.getLogger('tensorflow').level; "
             "import helpers.analysis.plots, helpers.analysis.study, helpers.reporting.results; "
             "assert dict(matplotlib.rcParams) == before, 'rcParams changed'; "
             "assert logging.getLogger('tensorflow').level == level, 'logging changed'")
    finished = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert finished.returncode == 0, finished.stderr[-600:]


def test_only_the_metrics_record_names_a_notebook_file():
    pattern = re.compile("|".join(re.escape(name) for name in metrics_record.NOTEBOOKS))
    naming = [path.name for path in PACKAGE.rglob("*.py")
              if path.name != "metrics_record.py" and pattern.search(path.read_text())]
    assert not naming, f"read the notebook's name from helpers.metrics_record instead: {naming}"
    assert [path.stem for path in sorted(config.NOTEBOOKS_DIR.glob("*.ipynb"))] == list(metrics_record.NOTEBOOKS)


def test_every_target_is_set_in_the_targets_module():
    setting = {path.name for path in PACKAGE.rglob("*.py") if path.name != "targets.py"
               and re.search(r"^[A-Z_]*TARGETS?[A-Z_]*\s*(:[^=]*)?=", path.read_text(), flags=re.MULTILINE)}
    assert not setting, f"these modules set their own targets (helpers.targets owns them): {setting}"
