"""Version compatibility between a coordinator and its sites.

Versions are compatible when major and minor agree (0.x: minor is the API line; patch releases never
change what travels in messages, see :mod:`fedscan.common.protocol`).
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from fedscan import __version__
from fedscan.common.errors import VersionMismatchError


def check_compatible(remote: str | None, local: str = __version__) -> None:
    """Raise unless ``remote`` can talk to ``local``.

    Raises
    ------
    VersionMismatchError
        With a message that says which side to upgrade.
    """
    if remote is None:
        raise VersionMismatchError(
            "The coordinator did not send its fedscan version; upgrade the "
            f"coordinator to fedscan {local}."
        )
    try:
        theirs, ours = Version(str(remote)), Version(local)
    except InvalidVersion as exc:
        raise VersionMismatchError(f"Unreadable fedscan version {remote!r}.") from exc
    if (theirs.major, theirs.minor) != (ours.major, ours.minor):
        raise VersionMismatchError(
            f"Coordinator runs fedscan {theirs}, this site runs {ours}; install the "
            f"same major.minor release on both (pip install fedscan=={theirs})."
        )
