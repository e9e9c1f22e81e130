"""The run settings as command-line options, generated from the run configuration's own fields.

Each option's type, help text and shown default come from its field of
:class:`~fedscan.common.config.RunConfig`, where they live once. A command wrapped with
:func:`with_run_options` gets one option per run setting and receives only those the user set, as
``settings`` (snake_case names, ready for :meth:`RunConfig.from_options`): nothing unset reaches the
run config, so the task's defaults apply.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from fedscan.common.config import RunConfig
from fedscan.common.settings import Key, keys_of
from fedscan.common.values import Names

# Every run setting is an option, but these: `--sites` sets min-sites, DP is turned off only
# with an explicit `--no-dp` (which warns), and the starting weights' SHA-256 is the file's own.
_NOT_OPTIONS = ("min_sites", "dp", "init_weights_sha256")
_FLAGS = {
    "central_noise_multiplier": "--central-noise",
    "central_clip_norm": "--central-clip",
    "init_weights": "--init",
}


def _keys() -> dict[str, Key]:
    keys = {key.name.replace("-", "_"): key for key in keys_of(RunConfig, flat_only=True)}
    return {name: key for name, key in keys.items() if name not in _NOT_OPTIONS}


def _option(name: str, key: Key) -> inspect.Parameter:
    flag = _FLAGS.get(name, f"--{key.name}")
    if key.kind is bool:
        flag = f"{flag}/--no-{key.name}"
    shown = key.default_text.strip(chr(34))
    default = "" if "default" in key.help or not shown else f" (default: {shown})"
    # A list of names is typed on the command line as one comma-separated string (its flat form).
    kind, listed = (str, " Comma-separated.") if key.kind == Names else (key.kind, "")
    option = typer.Option(flag, help=key.help + listed + default, show_default=False)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[kind | None, option],
    )


def with_run_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with one option per run setting; it is called with ``settings=`` the ones set."""
    keys = _keys()
    signature = inspect.signature(command, eval_str=True)
    own = [param for param in signature.parameters.values() if param.name != "settings"]

    @functools.wraps(command)
    def wrapper(**options: Any) -> None:
        given = {name: options.pop(name) for name in keys}
        command(
            **options, settings={name: value for name, value in given.items() if value is not None}
        )

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*own, *(_option(name, key) for name, key in keys.items())]
    )
    return wrapper
