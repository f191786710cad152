"""How the package's modules depend on each other: no import circles, and the descriptor (shared
by both sides) never reaches into the laptop's client/ package."""

from __future__ import annotations

import ast
from pathlib import Path

import handy_colab

ROOT = Path(handy_colab.__file__).parent
PACKAGE = "handy_colab"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, less the bodies of ``if TYPE_CHECKING:`` (annotations only, never run)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(name: str) -> set[str]:
    """Every handy_colab module ``name`` imports when it runs, inside functions too: an import
    deferred to call time still ties the two modules together."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names]
            # `from . import colab` needs the package's submodule, not what its __init__
            # gathers (it may be the very module being imported).
            candidates = subs if all(m in MODULES for m in subs) else [target, *subs]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        # The package root is left out: importing any submodule runs it first anyway, and its
        # notebook API (`handy_colab.up`) imports its modules on first use.
        found |= {c for c in candidates if c in MODULES and c not in (name, PACKAGE)}
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_graph_sees_the_known_edges() -> None:
    # Guards the parser itself: a graph with no edges would pass every test below.
    assert "handy_colab.descriptor" in GRAPH["handy_colab.client.sshconfig"]
    assert "handy_colab.descriptor" in GRAPH["handy_colab.connection"]
    assert "handy_colab.client.pycharm" in GRAPH["handy_colab.commands.forward"]  # deferred
    assert "handy_colab.tunnels.frp_common" in GRAPH["handy_colab.tunnels.frp_visitor"]
    assert "handy_colab.platforms.colab" in GRAPH["handy_colab.platforms.detection"]
    assert "handy_colab.platforms" not in GRAPH["handy_colab.platforms.detection"]
    # Annotation-only imports are no edge: the embedded server's connection and daemon name
    # each other's types, one of them at run time.
    assert "handy_colab.server.connection" in GRAPH["handy_colab.server.daemon"]
    assert "handy_colab.server.daemon" not in GRAPH["handy_colab.server.connection"]


def test_no_import_circles() -> None:
    circles = sorted(name for name in GRAPH if name in _reachable(name))
    assert circles == [], f"modules that import themselves through others: {circles}"


def test_descriptor_and_runtime_side_never_import_the_laptop_side() -> None:
    for name in ("handy_colab.descriptor", "handy_colab.connection", "handy_colab.config"):
        laptop = sorted(m for m in _reachable(name) if m.startswith("handy_colab.client"))
        assert laptop == [], f"{name} reaches {laptop}"


def test_the_library_reports_progress_and_never_draws_it() -> None:
    # progress_view.py draws (tqdm on stdout, notebook displays): only the front ends pick it.
    assert "handy_colab.progress_view" in GRAPH["handy_colab.commands.runtime_cmds"]
    assert "handy_colab.progress_view" in GRAPH["handy_colab.notebook"]
    for name in (
        "handy_colab.runtime",
        "handy_colab.binaries",
        "handy_colab.packages.install",
        "handy_colab.progress",
    ):
        drawn = sorted(m for m in _reachable(name) if m == "handy_colab.progress_view")
        assert drawn == [], f"{name} reaches {drawn}"
