"""The layout's rules as code: the fedscan import graph, import cycles, and wire keys spelled
outside ``common/protocol.py``. Used by ``tests/test_layout.py`` (the rules) and ``bench/layout.py``
(the table).

Static and import-free, so it reads any checkout. Imports are read from the source (function-level
ones included, ``if TYPE_CHECKING:`` blocks left out); a module reaches ``fedscan.server`` when any
chain of its imports does. Wire keys are every record name and key the sites and coordinator
exchanged at fedscan 0.1 (``tests/fixtures/v0_1/messages.json``) plus the two message actions; a
key counts when it appears as a string literal outside a docstring — anywhere for keys with a
``-``, ``_`` or ``:`` in them, and as a record or message subscript, ``.get``/``.pop`` argument or
record dict-display key in
``client/`` and ``server/`` for one-word keys.
"""

from __future__ import annotations

import ast
import json
import sys
from collections import Counter
from pathlib import Path

ROLES = {
    "fedscan-root": "fedscan",
    "common": "fedscan.common",
    "client": "fedscan.client",
    "server": "fedscan.server",
    "cli": "fedscan.cli",
}
# The hospital-side commands' modules, in this layout and in fedscan 0.1's (for the before/after
# table).
HOSPITAL_ENTRY_POINTS = (
    "fedscan.client",
    "fedscan.cli.data",
    "fedscan.cli.privacy",
    "fedscan.cli.preflight",
    "fedscan.cli.site_node",
    "fedscan.cli.supernode_launcher",
    "fedscan.cli.evaluate",
    "fedscan.cli.explain",
    "fedscan.cli.evaluate_segmentation",
    "fedscan.cli.client_commands",
)
MESSAGE_CONTEXTS = (
    "content",
    "config_records",
    "metric_records",
    "array_records",
    "RecordDict",
    "ConfigRecord",
    "MetricRecord",
)


def modules(root: Path) -> dict[str, Path]:
    """Module name → file, for every role folder."""
    found = {}
    for folder, package in ROLES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(path: Path, known: set[str], name: str) -> set[str]:
    """The fedscan modules ``path`` imports (resolving ``from package import module``)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", 0) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1]
                    + ([base] if base else [])
                )
            # ``from package import module`` depends on the module; the package's own __init__ runs
            # for any of its modules, so it is no dependency of theirs.
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            found.update(submodules if len(submodules) == len(node.names) else {base, *submodules})
    return {module for module in found if module in known and module != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph[node]:
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    return found


def reaches(graph: dict[str, set[str]], start: str, prefix: str) -> bool:
    seen, frontier = {start}, [start]
    while frontier:
        for successor in graph[frontier.pop()]:
            if successor.startswith(prefix):
                return True
            if successor not in seen:
                seen.add(successor)
                frontier.append(successor)
    return False


def wire_keys(root: Path) -> set[str]:
    shapes = json.loads((root / "tests" / "fixtures" / "v0_1" / "messages.json").read_text())
    keys = {"cross_site", "feature_stats"}
    for entries in shapes.values():
        for entry in entries:
            for record, content in entry.get("content", {}).items():
                keys.add(record)
                keys.update(content.get("keys", []))
    return {key for key in keys if not key.startswith("local:")}


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }


def _in_message_context(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    parent = parents.get(id(node))
    if isinstance(parent, ast.Subscript) and parent.slice is node:
        return any(word in ast.unparse(parent.value) for word in MESSAGE_CONTEXTS)
    if (
        isinstance(parent, ast.Call)
        and node in parent.args
        and isinstance(parent.func, ast.Attribute)
    ):
        return parent.func.attr in ("get", "pop") and any(
            word in ast.unparse(parent.func.value) for word in MESSAGE_CONTEXTS
        )
    if isinstance(parent, ast.Dict) and node in parent.keys:
        call = parents.get(id(parent))
        return isinstance(call, ast.Call) and any(
            word in ast.unparse(call.func) for word in MESSAGE_CONTEXTS
        )
    return False


def spelled_keys(root: Path, found: dict[str, Path]) -> Counter[str]:
    """Wire keys written as literals outside common/protocol.py (see the module docstring)."""
    keys, counts = wire_keys(root), Counter()
    distinctive = {key for key in keys if any(mark in key for mark in "-_:")}
    for name, path in found.items():
        if name == "fedscan.common.protocol":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        parents = {
            id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
        }
        role_code = name.startswith(("fedscan.client", "fedscan.server"))
        for node in ast.walk(tree):
            if (
                not (isinstance(node, ast.Constant) and isinstance(node.value, str))
                or id(node) in docs
            ):
                continue
            if node.value in distinctive or (
                role_code and node.value in keys and _in_message_context(node, parents)
            ):
                counts[f"{name}: {node.value}"] += 1
    return counts
