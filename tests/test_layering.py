"""The package's import graph, read with ``ast`` (imports inside functions too): no cycle,
and only a ``__main__`` imports a command-line module (a ``__main__``, a ``cli``, or one
with a ``__main__`` block)."""

from __future__ import annotations

import ast
from pathlib import Path

NAS = Path(__file__).resolve().parents[1] / "nas"


def module_name(path: Path) -> str:
    parts = path.relative_to(NAS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package's modules that ``tree`` imports, wherever the import statement stands."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from package import submodule`` needs the submodule, not the package's names.
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            out |= subs if len(subs) == len(node.names) else {node.module, *subs}
    return {name for name in out if name in modules}


def is_cli(name: str, tree: ast.Module) -> bool:
    """Whether the module is a package's ``__main__`` or ``cli`` (the command it runs), or
    has an ``if __name__ == "__main__":`` block."""
    return name.endswith((".__main__", ".cli")) or any(
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        for node in tree.body
    )


def graph() -> tuple[dict[str, set[str]], set[str]]:
    trees = {module_name(p): ast.parse(p.read_text()) for p in sorted(NAS.rglob("*.py"))}
    modules = set(trees)
    edges = {name: imported(tree, modules) - {name} for name, tree in trees.items()}
    return edges, {name for name, tree in trees.items() if is_cli(name, tree)}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (depth-first search)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for nxt in sorted(edges[name]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    edges, _ = graph()
    assert len(edges) > 15  # the walk found the package
    assert cycles(edges) == []


def test_no_module_imports_a_command_line_module() -> None:
    edges, clis = graph()
    commands = {"nas.search.cli", "nas.export.cli", "nas.report", "nas.dashboard", "nas.space"}
    assert commands | {"nas.search.__main__", "nas.export.__main__"} <= clis
    # Only a ``__main__`` (``python -m``, the ``nas`` command) starts a command.
    imports = [(a, b) for a, b_set in edges.items() for b in b_set if b in clis]
    assert sorted((a, b) for a, b in imports if not a.endswith("__main__")) == []


def test_the_checks_catch_what_they_look_for() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    tree = ast.parse("def f():\n    from nas.search import main\n")
    assert imported(tree, {"nas.search", "nas.data"}) == {"nas.search"}
    assert is_cli("nas.x", ast.parse("if __name__ == '__main__':\n    pass\n"))
    assert is_cli("nas.x.__main__", ast.parse("pass\n"))
    assert is_cli("nas.x.cli", ast.parse("pass\n"))
    assert not is_cli("nas.x", ast.parse("pass\n"))


def test_every_user_facing_error_is_a_nas_error() -> None:
    from nas.data import DataError
    from nas.errors import NasError
    from nas.export import ExportError
    from nas.model import ArchSpecError, TaskError
    from nas.search import LockTimeout, SpaceError, StudyError
    from nas.train import AugmentError, TrainConfigError

    errors = (AugmentError, DataError, ExportError, SpaceError, ArchSpecError, StudyError)
    errors += (LockTimeout, TaskError, TrainConfigError)
    assert all(issubclass(e, NasError) and issubclass(e, ValueError) for e in errors)
    # The classes the walk finds, so that a new one cannot miss the base unnoticed.
    found = {
        node.name
        for path in NAS.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.name.endswith("Error")
    }
    assert found == {e.__name__ for e in errors if e.__name__.endswith("Error")} | {"NasError"}
