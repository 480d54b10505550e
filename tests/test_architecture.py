"""The structure stays: imports flow one way down the stages, with no import hidden inside a function.

The order, bottom-up, is written down in docs/architecture.md; a package may import only packages below it
(and itself). The CLI alone may import lazily inside its commands (to start fast); nothing else may.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "atft"
ORDER = ("config", "evaluation", "data", "features", "models", "training", "reporting", "workflow", "cli")


def layer(module: str) -> str | None:
    """The stage of ``atft.<stage>...`` (None for the top-level ``atft`` module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "atft" else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str | None = None) -> list[tuple[str, int, bool]]:
    """(imported atft module, line, inside a function or a TYPE_CHECKING block) for every import in ``path``
    (the file of ``module``, by default the one its place under src/ names)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, hidden: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = hidden or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package[: len(package) - child.level + 1] + ([base] if base else []))
                names = [base]
            found.extend((n, child.lineno, inner) for n in names if n == "atft" or n.startswith("atft."))
            visit(child, inner)

    visit(tree, False)
    return found


def all_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_stage_is_in_the_order():
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert stages == set(ORDER), f"add new packages to ORDER and docs/architecture.md: {stages ^ set(ORDER)}"


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_flow_down_the_stages(path):
    here = layer(module_name(path))
    against = []
    for target, line, _ in imports(path):
        there = layer(target)
        if here is None or there is None or there == here:
            continue
        if ORDER.index(there) > ORDER.index(here):
            against.append(f"{path.relative_to(SRC)}:{line} imports {target} ({here} is below {there})")
    assert not against, "\n".join(against)


@pytest.mark.parametrize("path", all_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_hides_inside_a_function(path):
    if layer(module_name(path)) == "cli":
        return
    hidden = [f"{path.relative_to(SRC)}:{line} {t}" for t, line, inner in imports(path) if inner]
    assert not hidden, "import inside a function or TYPE_CHECKING (a loop dodged?): " + ", ".join(hidden)


def test_no_import_loop_between_files():
    graph: dict[str, set[str]] = {}
    known = {module_name(p) for p in all_modules()}
    for path in all_modules():
        targets = set()
        for target, _, _ in imports(path):
            parts = target.split(".")
            for k in range(len(parts), 0, -1):  # "atft.a.b.name" -> the module it names
                if ".".join(parts[:k]) in known:
                    targets.add(".".join(parts[:k]))
                    break
        graph[module_name(path)] = {t for t in targets if t != module_name(path) and t.count(".") > 0}
    loops = []

    def reach(start: str, node: str, seen: set[str]) -> None:
        for nxt in graph.get(node, ()):
            if nxt == start:
                loops.append(start)
            elif nxt not in seen:
                seen.add(nxt)
                reach(start, nxt, seen)

    for module in graph:
        reach(module, module, set())
    assert not loops, f"modules on an import loop: {sorted(set(loops))}"


def test_the_checker_catches_an_import_against_the_order(tmp_path):
    """The tests above can fail: a data module that imports training, and one that hides an import."""
    fake = tmp_path / "probe.py"
    fake.write_text(
        "from typing import TYPE_CHECKING\nfrom ..training.module import ForecastModule\n"
        "if TYPE_CHECKING:\n    from atft.models import graph\n\ndef f():\n    import atft.config\n"
    )
    found = imports(fake, "atft.data.probe")
    assert [(t, hidden) for t, _, hidden in found] == [
        ("atft.training.module", False),
        ("atft.models", True),
        ("atft.config", True),
    ]
    assert ORDER.index(layer(found[0][0])) > ORDER.index(layer("atft.data.probe"))
