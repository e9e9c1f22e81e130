"""Every exception fedscan raises and every error code, in one place.

Hierarchy (catch the narrowest that fits)::

    FedscanError              base; ``code`` is a stable kebab-case string (an ErrorCode)
    ├── ConfigError           a setting is invalid; the message says what to change
    ├── DataError             a dataset cannot be read or is unusable
    │   └── Rejected          one file cannot become a sample; ``reason`` is its ingest code
    ├── ModelError            unknown model name, model not DP-compatible, or starting weights
    │                         that fit none of its parameters
    ├── PrivacyError          a privacy rule would be broken (budget, delta, ledger)
    ├── VersionMismatchError  coordinator and site run incompatible fedscan
    ├── QuorumError           too few sites connected within the join timeout
    ├── ResumeError           a run cannot be resumed as asked
    ├── EngineError           the local Flower engine could not start or took no run
    └── RunFailed             a federation started but ended without a model
    ReplyRefused              a site's reply failed its allow-list: a programming error, never sent
    DamagedCheckpoint         a coordinator checkpoint that must not be loaded (a ValueError)

Messages never contain pixel data, patient identifiers or file paths when the error may leave a
site: raise with a generic reason and log details locally. A site's refusal carries only the
code's number and fixed public reason (:data:`REPLY_CODES`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedscan.common.ingest.rejections import Reason


class ErrorCode(StrEnum):
    """Stable error codes (the value is what logs, status files and replies carry)."""

    FEDSCAN_ERROR = "fedscan-error"
    INVALID_CONFIG = "invalid-config"
    DATA_ERROR = "data-error"
    MODEL_ERROR = "model-error"
    PRIVACY_ERROR = "privacy-error"
    DELTA_TOO_LARGE = "delta-too-large"
    BUDGET_EXHAUSTED = "privacy-budget-exhausted"
    LEDGER_CORRUPT = "ledger-corrupt"
    VERSION_MISMATCH = "version-mismatch"
    TOO_FEW_SAMPLES = "too-few-samples"
    ROUND_ALREADY_RELEASED = "round-already-released"
    POLICY_REFUSED = "policy-refused"
    RUN_NOT_APPROVED = "run-not-approved"
    RUN_REFUSED = "run-refused"
    QUORUM_NOT_REACHED = "quorum-not-reached"
    QUORUM_LOST = "quorum-lost"
    RUN_FAILED = "run-failed"
    CANNOT_RESUME = "cannot-resume"
    ENGINE_FAILED = "engine-failed"
    # The coordinator's refusals of a site's reply (metrics.jsonl "refusals"), besides the site's
    # own coded errors and version mismatches.
    UPDATE_REJECTED = "update-rejected"  # the update gate refused it (the gate's reason follows)
    MALFORMED_HISTOGRAM = "malformed-histogram"
    MALFORMED_OVERLAP_COUNTS = "malformed-overlap-counts"


class FedscanError(Exception):
    """Base class of fedscan errors."""

    code: str = ErrorCode.FEDSCAN_ERROR

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class ConfigError(FedscanError, ValueError):
    """A configuration value is invalid."""

    code = ErrorCode.INVALID_CONFIG


class DataError(FedscanError):
    """A dataset cannot be loaded or is unusable for training."""

    code = ErrorCode.DATA_ERROR


class Rejected(DataError):
    """A file that cannot become a training sample; ``reason`` says why.

    The message states the cause without any path or patient data.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message, code=reason.value)
        self.reason = reason


class ModelError(FedscanError):
    """A model name is unknown or the model cannot be trained with DP."""

    code = ErrorCode.MODEL_ERROR


class PrivacyError(FedscanError):
    """Training would break the site's privacy rules."""

    code = ErrorCode.PRIVACY_ERROR


class VersionMismatchError(FedscanError):
    """Coordinator and site run incompatible fedscan versions."""

    code = ErrorCode.VERSION_MISMATCH


class QuorumError(FedscanError):
    """Too few sites connected within the join timeout."""

    code = ErrorCode.QUORUM_NOT_REACHED


class ResumeError(FedscanError):
    """The run cannot be resumed as asked."""

    code = ErrorCode.CANNOT_RESUME


class EngineError(FedscanError):
    """The local Flower engine could not be started or did not accept the run."""

    code = ErrorCode.ENGINE_FAILED


class RunFailed(FedscanError):
    """The federation started but did not finish with a model."""

    code = ErrorCode.RUN_FAILED


class ReplyRefused(Exception):
    """A reply failed the allow-list: a programming error, caught before anything is sent."""


class DamagedCheckpoint(ValueError):
    """A checkpoint file that must not be loaded (truncated, altered, or not a checkpoint)."""


# Flower error replies: an integer code (``flwr.app.Error`` takes an int) and a fixed public
# reason. A site sends only these, never an exception's own text, which stays in its log.
REPLY_CODES: dict[str, tuple[int, str]] = {
    ErrorCode.FEDSCAN_ERROR: (
        4000,
        "the site failed locally; the details are in the site's own log",
    ),
    ErrorCode.INVALID_CONFIG: (4001, "the site rejected the run configuration; see the site's log"),
    ErrorCode.DATA_ERROR: (
        4002,
        "the site's data is unusable for this run; `fedscan data check` at the site shows why",
    ),
    ErrorCode.MODEL_ERROR: (4003, "the site cannot build or load this model"),
    ErrorCode.PRIVACY_ERROR: (4004, "training would break the site's privacy rules"),
    ErrorCode.DELTA_TOO_LARGE: (
        4005,
        "delta is not below 1/(training samples at the site); lower delta",
    ),
    ErrorCode.BUDGET_EXHAUSTED: (
        4006,
        "this round would exceed the site's privacy budget (per run or lifetime)",
    ),
    ErrorCode.LEDGER_CORRUPT: (
        4007,
        "the site's privacy ledger is unreadable; the site will not train until it is restored",
    ),
    ErrorCode.VERSION_MISMATCH: (
        4008,
        "the site runs an incompatible fedscan version (major.minor must match)",
    ),
    ErrorCode.TOO_FEW_SAMPLES: (
        4009,
        "the site has fewer training samples than its policy's minimum",
    ),
    ErrorCode.ROUND_ALREADY_RELEASED: (
        4010,
        "the site already released this round and will not release it twice",
    ),
    ErrorCode.POLICY_REFUSED: (
        4011,
        "the site's policy does not allow this run; the site's log says which rule",
    ),
    ErrorCode.RUN_NOT_APPROVED: (
        4012,
        "the site has not approved this run yet; it is pending at the site",
    ),
    ErrorCode.RUN_REFUSED: (
        4013,
        "the site refused this run (or this run id came back with another configuration)",
    ),
}


def public_reply(code: str) -> tuple[str, int, str]:
    """(code, integer code, fixed public reason); unknown codes become the generic one."""
    code = code if code in REPLY_CODES else ErrorCode.FEDSCAN_ERROR
    return (str(code), *REPLY_CODES[code])
