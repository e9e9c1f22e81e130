"""Secure aggregation: the coordinator learns the sum of the sites' updates, never one update.

Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving Machine Learning"),
semi-honest variant with its SecAgg+ structure, on ``cryptography`` only. Per round each site

1. advertises two X25519 public keys (one seals shares, one derives masks);
2. Shamir-shares its masking private key and a 32-byte self-mask seed (threshold t of n) and
   seals each peer's pair of shares with ChaCha20-Poly1305 under an X25519 + HKDF-SHA256 key;
3. sends its update clipped to C, weighted, stochastically rounded to integers mod 2^k, plus
   ChaCha20 masks: its self-mask, and per peer a pairwise mask (+ for the lower id, - for the
   higher) that cancels in the sum;
4. answers the unmask request with seed shares of the survivors and key shares of the sites that
   dropped before masking, never both kinds for one peer.

The aggregator reconstructs those secrets from t answers, removes every mask and decodes the
weighted sum. Any site may drop after sending its masked input; with fewer than t left at any
stage the round aborts with :class:`SecAggAborted` (``quorum-lost``). Nothing here imports Flower:
the state machines take and return message dataclasses, and the caller moves them.

Modules: :mod:`.config` (settings, threshold rule), :mod:`.site`, :mod:`.aggregator` (the state
machines), :mod:`.messages`, :mod:`.quantise` (encoding, overflow rule, error bound),
:mod:`.masking`, :mod:`.streams` (ChaCha20), :mod:`.crypto` (X25519, HKDF, AEAD),
:mod:`.shamir`, :mod:`.checks`, :mod:`.errors`, :mod:`.loopback` (a round in one process).
"""

from fedscan.common.secagg.aggregator import SecAggAggregator
from fedscan.common.secagg.config import SecAggConfig
from fedscan.common.secagg.errors import SecAggAborted, SecAggProtocolError, UnmaskRefused
from fedscan.common.secagg.loopback import Step, run_in_process
from fedscan.common.secagg.messages import (
    Envelope,
    KeyAdvert,
    MaskedInput,
    Roster,
    SecAggResult,
    ShareBundle,
    ShareDelivery,
    UnmaskAnswer,
    UnmaskRequest,
)
from fedscan.common.secagg.quantise import Quantiser
from fedscan.common.secagg.site import SecAggSite

__all__ = [
    "Envelope",
    "KeyAdvert",
    "MaskedInput",
    "Quantiser",
    "Roster",
    "SecAggAborted",
    "SecAggAggregator",
    "SecAggConfig",
    "SecAggProtocolError",
    "SecAggResult",
    "SecAggSite",
    "ShareBundle",
    "ShareDelivery",
    "Step",
    "UnmaskAnswer",
    "UnmaskRefused",
    "UnmaskRequest",
    "run_in_process",
]
