"""The design's boundaries: one namespace, common/ knows no Flower, roles don't import each other."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import fedscan

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_common_imports_no_flower() -> None:
    assert not any(name == "flwr" or name.startswith("flwr.") for name in _imports("common"))


def test_client_and_server_never_import_each_other() -> None:
    assert not any(name.startswith("fedscan.server") for name in _imports("client"))
    assert not any(name.startswith("fedscan.client") for name in _imports("server"))


def test_no_folder_in_the_repository_can_shadow_the_installed_package() -> None:
    # A Flower app bundle is imported from its own folder first: a `fedscan/`
    # package there would replace the fedscan installed at the site.
    assert not (ROOT / "fedscan" / "__init__.py").exists()
    assert Path(fedscan.__file__).parent.name == "fedscan-root" or "site-packages" in fedscan.__file__


def test_one_distinctive_namespace() -> None:
    for role in ("common", "client", "server"):
        assert importlib.util.find_spec(f"fedscan.{role}") is not None
    assert importlib.util.find_spec("common") is None or Path.cwd() == ROOT
    assert fedscan.__version__


def test_decode_workers_start_without_torch() -> None:
    # Decoding runs in short-lived worker processes: they must stay light to start.
    import subprocess
    import sys

    probe = "import sys, fedscan.common.decode_worker, fedscan.common.dicom; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
