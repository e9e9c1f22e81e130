"""Reading fedscan's TOML files (site.toml, coordinator.toml, run.toml) with errors that say which file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fedscan.common.errors import ConfigError


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed document at ``path``; ``what`` ("site", "coordinator", …) names it in errors."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the {what} configuration {path} ({exc.strerror}).") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from exc
