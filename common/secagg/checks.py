"""Validation shared by sites and aggregator: every message is checked before it is used.

Invariants: a roster is sorted, has no repeated site id and no repeated public key (a
coordinator that replays one site's key under another id is caught), and every key is a valid
X25519 point; a stage with fewer than ``threshold`` sites raises :class:`SecAggAborted`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from fedscan.common.secagg.config import SecAggConfig, check_site_id
from fedscan.common.secagg.crypto import load_public
from fedscan.common.secagg.errors import SecAggAborted, SecAggProtocolError
from fedscan.common.secagg.messages import KeyAdvert, Roster


def check_advert(advert: KeyAdvert) -> KeyAdvert:
    check_site_id(advert.site_id)
    load_public(advert.encryption_key)
    load_public(advert.masking_key)
    if advert.encryption_key == advert.masking_key:
        raise SecAggProtocolError(f"Site {advert.site_id} advertised the same key twice.")
    return advert


def check_roster(roster: Roster, config: SecAggConfig) -> None:
    """The roster of this run and round: sorted, unique ids and keys, within the threshold."""
    if (roster.run_id, roster.round) != (config.run_id, config.round):
        raise SecAggProtocolError("The roster belongs to another run or round.")
    for advert in roster.adverts:
        check_advert(advert)
    ids = roster.ids
    if list(ids) != sorted(set(ids)):
        raise SecAggProtocolError("The roster's site ids must be unique and sorted.")
    keys = [key for advert in roster.adverts for key in (advert.encryption_key, advert.masking_key)]
    if len(set(keys)) != len(keys):
        raise SecAggProtocolError("The roster repeats a public key under two names.")
    check_quorum("advertise-keys", len(ids), len(ids), config.threshold)
    config.check_roster_size(len(ids))


def check_quorum(stage: str, survivors: int, expected: int, threshold: int) -> None:
    if survivors < threshold:
        raise SecAggAborted(
            stage=stage, survivors=survivors, expected=expected, threshold=threshold
        )


def check_members(what: str, ids: Iterable[str], allowed: Collection[str]) -> list[str]:
    """``ids`` as a list, refusing repeats and ids outside ``allowed``."""
    listed = list(ids)
    if len(set(listed)) != len(listed):
        raise SecAggProtocolError(f"{what} names a site twice.")
    unknown = sorted(set(listed) - set(allowed))
    if unknown:
        raise SecAggProtocolError(f"{what} names sites outside the round: {', '.join(unknown)}.")
    return listed


def check_new(
    what: str, site_id: str, *, allowed: Collection[str] | None, known: Collection[str]
) -> None:
    """Refuse a message from a site outside the stage (``allowed``) or one that came before."""
    if allowed is not None and site_id not in allowed:
        raise SecAggProtocolError(f"{what} came from {site_id}, which is not in this stage.")
    if site_id in known:
        raise SecAggProtocolError(f"{what} from {site_id} arrived twice.")
