"""What secure aggregation raises, on top of fedscan's own hierarchy (:mod:`fedscan.common.errors`).

Hierarchy (catch the narrowest that fits)::

    QuorumError
    └── SecAggAborted        fewer than ``threshold`` sites survived a stage: the round is lost
    PrivacyError
    └── UnmaskRefused        a site would reveal both secrets of one peer: it answers nothing
    FedscanError, ValueError
    └── SecAggProtocolError  a malformed, misrouted, repeated or out-of-order message

Codes come from the one registry (:class:`~fedscan.common.errors.ErrorCode`): an aborted round is
``quorum-lost``, a refusal ``privacy-error``; a protocol violation keeps the generic code until the
registry has one of its own. Messages name stages, counts and site ids, never secrets or values.
"""

from __future__ import annotations

from fedscan.common.errors import ErrorCode, FedscanError, PrivacyError, QuorumError


class SecAggAborted(QuorumError):
    """Fewer than ``threshold`` sites are left at ``stage``; the round ends without a sum.

    Attributes ``stage``, ``survivors`` and ``threshold`` let the round loop log and retry.
    """

    def __init__(self, *, stage: str, survivors: int, expected: int, threshold: int) -> None:
        super().__init__(
            f"Secure aggregation aborted at '{stage}': {survivors} of {expected} sites took "
            f"part, and the threshold is {threshold}. Wait for more sites (raise the round "
            "timeout) or lower the secure-aggregation threshold (it must stay above half the "
            "sites that advertised keys).",
            code=ErrorCode.QUORUM_LOST,
        )
        self.stage = stage
        self.survivors = survivors
        self.threshold = threshold


class UnmaskRefused(PrivacyError):
    """The coordinator asked for a self-mask share and a key share of the same peer."""

    def __init__(self, site_id: str, peers: list[str]) -> None:
        super().__init__(
            f"Site {site_id} refuses to unmask: the coordinator asked for both the self-mask "
            f"share and the masking-key share of {', '.join(sorted(peers))}, which would reveal "
            "their update. Restart the round; a coordinator that asks twice is misbehaving."
        )
        self.peers = tuple(sorted(peers))


class SecAggProtocolError(FedscanError, ValueError):
    """A message that breaks the protocol (size, ids, stage, authentication)."""
