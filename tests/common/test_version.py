"""Version compatibility between coordinator and site."""

from __future__ import annotations

import pytest

from fedscan.common.errors import VersionMismatchError
from fedscan.common.version import check_compatible


def test_same_minor_is_compatible() -> None:
    check_compatible("0.1.7", local="0.1.0")


@pytest.mark.parametrize("remote", ["0.2.0", "1.1.0", None, "not-a-version"])
def test_other_lines_are_refused_with_advice(remote: str | None) -> None:
    with pytest.raises(VersionMismatchError) as raised:
        check_compatible(remote, local="0.1.0")
    assert raised.value.code == "version-mismatch"
