"""A Flower app folder that holds configuration only: its components are the installed fedscan.

``flwr run`` submits a folder with a ``pyproject.toml``; fedscan writes one whose ServerApp and
ClientApp are ``fedscan.server.app:app`` and ``fedscan.client.app:app`` and whose
``[tool.flwr.app.config]`` is the run's flat config. The coordinator thereby sends configuration,
never code: every machine runs the fedscan installed on it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedscan import __version__


def toml_value(value: Any) -> str:
    """A scalar in TOML (JSON string escapes are valid TOML basic-string escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)


def write_app(
    folder: Path, run_config: dict[str, Any], *, name: str = "fedscan-simulation"
) -> Path:
    """A Flower app folder holding configuration only: its components are the installed fedscan."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[project]",
        f'name = "{name}"',
        f'version = "{__version__}"',
        'description = "fedscan run (configuration only)"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "fedscan"',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "fedscan.server.app:app"',
        'clientapp = "fedscan.client.app:app"',
        "",
        "[tool.flwr.app.config]",
    ]
    lines += [f"{json.dumps(key)} = {toml_value(value)}" for key, value in run_config.items()]
    (folder / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
