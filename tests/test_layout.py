"""The design's boundaries, as tests.

- one namespace; common/ knows no Flower; client/ and server/ never import each other;
- no import cycles; decode workers and the whole ingestion package start without torch, and so does
  the run configuration (``fedscan run`` and ``status`` start fast);
- no hospital-side command imports coordinator code — statically (any chain of imports, lazy ones
  included) and as the commands actually run;
- every string that crosses between a site and the coordinator is named in common/protocol.py only.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import fedscan
from fedscan.common import protocol
from fedscan.common.config import RunConfig
from fedscan.common.data.synth import SynthConfig, generate_sites
from fedscan.common.models.checkpoint import save_checkpoint
from fedscan.common.models.networks import build_model
from tests.layout_rules import (
    HOSPITAL_ENTRY_POINTS,
    cycles,
    imports,
    modules,
    reaches,
    spelled_keys,
    wire_keys,
)

ROOT = Path(__file__).resolve().parents[1]
MODULES = modules(ROOT)
GRAPH = {name: imports(path, set(MODULES), name) for name, path in MODULES.items()}
HOSPITAL_COMMANDS = (
    "fedscan.cli.client_commands",
    "fedscan.cli.data",
    "fedscan.cli.privacy",
    "fedscan.cli.evaluate",
    "fedscan.cli.explain",
)


def _all_imports(prefix: str) -> set[str]:
    """Every module (fedscan or not) imported anywhere by the modules under ``prefix``."""
    import ast

    names: set[str] = set()
    for name, path in MODULES.items():
        if name.startswith(prefix):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names.add(node.module)
    return names


def _probe(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    return result.stdout.strip().splitlines()[-1]


def test_common_imports_no_flower() -> None:
    assert not any(
        name == "flwr" or name.startswith("flwr.") for name in _all_imports("fedscan.common")
    )


def test_client_and_server_never_import_each_other() -> None:
    assert not any(name.startswith("fedscan.server") for name in _all_imports("fedscan.client"))
    assert not any(name.startswith("fedscan.client") for name in _all_imports("fedscan.server"))


def test_no_folder_in_the_repository_can_shadow_the_installed_package() -> None:
    # A Flower app bundle is imported from its own folder first: a `fedscan/`
    # package there would replace the fedscan installed at the site.
    assert not (ROOT / "fedscan" / "__init__.py").exists()
    assert (
        Path(fedscan.__file__).parent.name == "fedscan-root" or "site-packages" in fedscan.__file__
    )


def test_one_distinctive_namespace() -> None:
    for role in (
        "common",
        "common.ingest",
        "common.data",
        "common.models",
        "common.metrics",
        "client",
        "server",
    ):
        assert importlib.util.find_spec(f"fedscan.{role}") is not None
    assert importlib.util.find_spec("common") is None or Path.cwd() == ROOT
    assert fedscan.__version__


def test_every_package_folder_is_listed_for_a_wheel() -> None:
    # An editable install finds any sub-package; a built wheel ships only the listed ones.
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        "fedscan." + ".".join(init.parent.relative_to(ROOT).parts)
        for role in ("common", "client", "server", "cli")
        for init in (ROOT / role).rglob("__init__.py")
    }
    assert folders <= listed, sorted(folders - listed)


def test_there_are_no_import_cycles() -> None:
    assert cycles(GRAPH) == []


def test_no_hospital_side_module_reaches_coordinator_code() -> None:
    hospital = [name for name in MODULES if name.startswith(HOSPITAL_ENTRY_POINTS)]
    assert set(HOSPITAL_COMMANDS) <= set(hospital) and any(
        name.startswith("fedscan.client") for name in hospital
    )
    assert [name for name in hospital if reaches(GRAPH, name, "fedscan.server")] == []


def test_explanation_maps_never_reach_what_a_site_sends() -> None:
    # Maps stay at the site: no client module (the ClientApp and its reply builder among them)
    # reaches the explain package, and the package reaches no client or coordinator code (it
    # shares the metrics, and through them the protocol's metric names, with everyone).
    explain = [name for name in MODULES if name.startswith("fedscan.common.explain")]
    assert explain and not any(
        reaches(GRAPH, name, prefix)
        for name in explain
        for prefix in ("fedscan.client", "fedscan.server")
    )
    client = [name for name in MODULES if name.startswith("fedscan.client")]
    assert [name for name in client if reaches(GRAPH, name, "fedscan.common.explain")] == []


def test_decode_workers_ingestion_and_the_run_configuration_start_without_torch() -> None:
    # Decoding runs in short-lived worker processes, and `fedscan run` / `status` read the run
    # configuration: they must stay light to start.
    probe = """
        import sys
        import fedscan.common.ingest, fedscan.common.ingest.decode_worker
        import fedscan.common.config, fedscan.common.models.registry
        print(sorted(name for name in sys.modules if name.split(".")[0] == "torch"))
    """
    assert _probe(probe) == "[]"


def test_hospital_commands_run_without_importing_coordinator_code(tmp_path: Path) -> None:
    (site,) = generate_sites(tmp_path / "sites", SynthConfig(sites=1, images_per_site=10, seed=4))
    save_checkpoint(
        tmp_path / "final.pt", "small-cnn", build_model("small-cnn", seed=0).state_dict()
    )
    (tmp_path / "site.toml").write_text(
        f'[site]\nname = "h"\nstate-dir = "{tmp_path / "state"}"\n'
        f'[data]\ndir = "{site}"\n[privacy]\nmax-epsilon-per-run = 8\n'
        "max-epsilon-lifetime = 20\nmin-samples = 1\n"
    )
    commands = [
        ["client", "check", "--config", str(tmp_path / "site.toml")],
        ["data", "check", str(site), "--no-cache"],
        ["privacy", "report", "--config", str(tmp_path / "site.toml")],
        ["evaluate", "--checkpoint", str(tmp_path / "final.pt"), "--data", f"dicom:{site}"],
        ["explain", "--checkpoint", str(tmp_path / "final.pt"), "--data", f"dicom:{site}"]
        + ["--out", str(tmp_path / "maps"), "--limit", "2"],
    ]
    probe = f"""
        import json, sys
        from typer.testing import CliRunner
        from fedscan.cli.main import app
        import fedscan.client.app, fedscan.client.supernode, fedscan.client.supernode_launcher
        codes = [CliRunner().invoke(app, command).exit_code for command in {commands!r}]
        server = sorted(name for name in sys.modules if name.startswith("fedscan.server"))
        print(json.dumps([codes, server]))
    """
    codes, server_modules = json.loads(_probe(probe))
    assert codes == [
        2,
        0,
        0,
        0,
        0,
    ]  # `client check` fails its coordinator check (none configured) but runs
    assert server_modules == []


def test_wire_keys_are_spelled_only_in_the_protocol_module() -> None:
    assert spelled_keys(ROOT, MODULES) == {}


def test_every_key_that_crossed_the_wire_is_named_by_the_protocol() -> None:
    named = {value for value in vars(protocol).values() if isinstance(value, str)}
    settings = set(RunConfig().to_message())
    assert wire_keys(ROOT) - named - settings == set()
    assert protocol.local_model_name("site-0").startswith(protocol.LOCAL_MODEL_PREFIX)
