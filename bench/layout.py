"""The package's shape, as a table: files per package, the longest functions, import cycles,
hospital-side modules that reach coordinator code, and wire keys spelled outside
``common/protocol.py``.

    python bench/layout.py [ROOT]        # ROOT: a checkout (default: this one)

Static (see ``tests/layout_rules.py``, whose rules ``tests/test_layout.py`` enforces), so it
measures any checkout, an old one included (``git worktree add /tmp/old 8a71df7``).
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.layout_rules import (
    HOSPITAL_ENTRY_POINTS,
    cycles,
    imports,
    modules,
    reaches,
    spelled_keys,
)  # noqa: E402


def longest_functions(found: dict[str, Path], count: int = 8) -> list[tuple[int, int, str]]:
    """(statements, lines, name) of the functions with the most statements. Statements do not depend
    on how the code is formatted; lines (signature and docstring included) do."""
    spans = []
    for name, path in found.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                statements = sum(isinstance(child, ast.stmt) for child in ast.walk(node)) - 1
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                spans.append((statements, lines, f"{name}.{node.name}"))
    return sorted(spans, reverse=True)[:count]


def main(root: Path) -> None:
    found = modules(root)
    graph = {name: imports(path, set(found), name) for name, path in found.items()}
    print(f"# Layout of {root}\n\n| package | files | lines |\n|---|---|---|")
    packages = Counter()
    lines = Counter()
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        packages[package] += 1
        lines[package] += len(path.read_text().splitlines())
    for package in sorted(packages):
        print(f"| {package} | {packages[package]} | {lines[package]} |")
    print("\n| longest functions | statements | lines |\n|---|---|---|")
    for statements, span, function in longest_functions(found):
        print(f"| {function} | {statements} | {span} |")
    loops = cycles(graph)
    hospital = sorted(
        name
        for name in found
        if name.startswith(HOSPITAL_ENTRY_POINTS) and reaches(graph, name, "fedscan.server")
    )
    keys = spelled_keys(root, found)
    print(
        f"\n| check | count |\n|---|---|\n| import cycles | {len(loops)} |"
        f"\n| hospital-side modules reaching fedscan.server | {len(hospital)} |"
        f"\n| wire keys spelled outside common/protocol.py | {sum(keys.values())} |"
    )
    for loop in loops:
        print(f"- cycle: {' ↔ '.join(loop)}")
    for name in hospital:
        print(f"- reaches fedscan.server: {name}")
    by_module = Counter()
    for entry, number in keys.items():
        by_module[entry.split(":")[0]] += number
    for module, number in by_module.most_common():
        print(f"- {number} wire key literals in {module}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
