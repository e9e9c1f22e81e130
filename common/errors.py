"""Exceptions raised by fedscan, with stable codes.

Hierarchy (catch the narrowest that fits)::

    FedscanError              base; ``code`` is a stable kebab-case string
    ├── ConfigError           a setting is invalid; the message says what to change
    ├── DataError             a dataset cannot be read or is unusable
    ├── ModelError            unknown model name or model not DP-compatible
    ├── PrivacyError          a privacy rule would be broken (budget, delta)
    └── VersionMismatchError  coordinator and site run incompatible fedscan

Messages never contain pixel data, patient identifiers or file paths when the
error may leave a site: raise with a generic reason and log details locally.
"""

from __future__ import annotations


class FedscanError(Exception):
    """Base class of fedscan errors."""

    code: str = "fedscan-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ConfigError(FedscanError, ValueError):
    """A configuration value is invalid."""

    code = "invalid-config"


class DataError(FedscanError):
    """A dataset cannot be loaded or is unusable for training."""

    code = "data-error"


class ModelError(FedscanError):
    """A model name is unknown or the model cannot be trained with DP."""

    code = "model-error"


class PrivacyError(FedscanError):
    """Training would break the site's privacy rules."""

    code = "privacy-error"


class VersionMismatchError(FedscanError):
    """Coordinator and site run incompatible fedscan versions."""

    code = "version-mismatch"


# Integer codes for Flower error replies (``flwr.app.Error`` takes an int).
# One registry, so the coordinator can tell every refusal apart.
REPLY_CODES: dict[str, int] = {
    "fedscan-error": 4000,
    "invalid-config": 4001,
    "data-error": 4002,
    "model-error": 4003,
    "privacy-error": 4004,
    "delta-too-large": 4005,
    "privacy-budget-exhausted": 4006,
    "ledger-corrupt": 4007,
    "version-mismatch": 4008,
}


def reply_code(error: FedscanError) -> int:
    """The integer reply code of ``error`` (4000 for codes not in the registry)."""
    return REPLY_CODES.get(error.code, REPLY_CODES["fedscan-error"])
