"""The settings of one secure-aggregation round, validated once, shared by sites and aggregator.

Invariants:

- ``threshold`` >= 2 and, for a roster of n sites, threshold > n / 2: an honest site reveals only
  one kind of share per peer, so a coordinator that told two halves of the sites different
  stories could never gather ``threshold`` shares of both kinds for the same peer;
- site ids are short printable names; keys and envelopes bind them, and the lower id (by string
  order) adds a pair's mask while the higher one subtracts it;
- the quantiser's modulus depends on the roster's size, which every party learns from the same
  roster, so all build the same encoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fedscan.common.secagg.crypto import Binding
from fedscan.common.secagg.errors import SecAggProtocolError
from fedscan.common.secagg.quantise import Quantiser

MIN_THRESHOLD = 2  # a sum of one site is that site's update
MAX_RUN_ID_BYTES = 256  # bound into keys with a 2-byte length prefix; run ids are far shorter
MAX_ROUND = 2**63  # bound into keys as 8 bytes
# Printable, no spaces: ids appear in messages, logs and every key's HKDF binding.
SITE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
# 2^20 examples per site and 20 bits below the clipping bound: W * 2^b = 2^40, k = 47 bits
# for 50 sites; one step is C / 2^20, ~1e-6 of C, four orders below a typical coordinate
# of a 25 000-float update clipped to C (C / sqrt(25 000) = C / 158).
DEFAULT_MAX_WEIGHT = 2**20
DEFAULT_PRECISION_BITS = 20


@dataclass(frozen=True)
class SecAggConfig:
    """One round's secure-aggregation settings.

    Parameters
    ----------
    run_id : str
        The run; bound into every key.
    round : int
        The round (>= 0); bound into every key, so a round's messages are worthless in another.
    dimension : int
        Floats in a site's update (the model's parameter count).
    threshold : int
        Sites that must survive every stage; also the Shamir threshold.
    clip_bound : float
        The L2 bound C of an update (the DP clipping bound sites already enforce).
    max_weight : int, default 2^20
        Largest weight (num-examples) a site may give its update.
    precision_bits : int, default 20
        Quantisation steps per clipping bound, as a power of two.
    """

    run_id: str
    round: int
    dimension: int
    threshold: int
    clip_bound: float
    max_weight: int = DEFAULT_MAX_WEIGHT
    precision_bits: int = DEFAULT_PRECISION_BITS

    def __post_init__(self) -> None:
        if not 0 < len(self.run_id.encode()) <= MAX_RUN_ID_BYTES:
            raise ValueError(f"A run id must have 1 to {MAX_RUN_ID_BYTES} bytes.")
        if not 0 <= self.round < MAX_ROUND or self.dimension < 1:
            raise ValueError("A round needs a round number >= 0 and a dimension >= 1.")
        if self.threshold < MIN_THRESHOLD:
            raise ValueError(
                f"The secure-aggregation threshold should be at least {MIN_THRESHOLD}."
            )
        self.quantiser(self.threshold)  # validates the clipping bound, weight and precision

    @property
    def binding(self) -> Binding:
        return Binding(self.run_id, self.round)

    def quantiser(self, sites: int) -> Quantiser:
        """The round's encoding for a roster of ``sites``."""
        return Quantiser(self.clip_bound, self.max_weight, self.precision_bits, sites)

    def check_roster_size(self, sites: int) -> None:
        """Refuse a roster the threshold cannot protect (see the module's invariants)."""
        if 2 * self.threshold <= sites:
            raise SecAggProtocolError(
                f"A threshold of {self.threshold} does not exceed half of {sites} sites; "
                f"raise it to at least {sites // 2 + 1}."
            )


def check_site_id(site_id: str) -> str:
    if not isinstance(site_id, str) or not SITE_ID_PATTERN.fullmatch(site_id):
        raise SecAggProtocolError(
            "A site id must be 1-64 printable characters (letters, digits, '.', '_', ':', "
            "'@', '-'), starting with a letter or digit."
        )
    return site_id
