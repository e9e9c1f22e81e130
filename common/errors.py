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


# Flower error replies: an integer code (``flwr.app.Error`` takes an int) and a fixed public
# reason. A site sends only these, never an exception's own text, which stays in its log.
REPLY_CODES: dict[str, tuple[int, str]] = {
    "fedscan-error": (4000, "the site failed locally; the details are in the site's own log"),
    "invalid-config": (4001, "the site rejected the run configuration; see the site's log"),
    "data-error": (4002, "the site's data is unusable for this run; `fedscan data check` at the site shows why"),
    "model-error": (4003, "the site cannot build or load this model"),
    "privacy-error": (4004, "training would break the site's privacy rules"),
    "delta-too-large": (4005, "delta is not below 1/(training samples at the site); lower delta"),
    "privacy-budget-exhausted": (4006, "this round would exceed the site's privacy budget (per run or lifetime)"),
    "ledger-corrupt": (4007, "the site's privacy ledger is unreadable; the site will not train until it is restored"),
    "version-mismatch": (4008, "the site runs an incompatible fedscan version (major.minor must match)"),
    "too-few-samples": (4009, "the site has fewer training samples than its policy's minimum"),
    "round-already-released": (4010, "the site already released this round and will not release it twice"),
}


def public_reply(code: str) -> tuple[str, int, str]:
    """(code, integer code, fixed public reason); unknown codes become the generic one."""
    code = code if code in REPLY_CODES else "fedscan-error"
    return (code, *REPLY_CODES[code])
