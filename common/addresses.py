"""Network addresses as operators type them: ``host:port``, an IPv6 host in brackets."""

from __future__ import annotations

from fedscan.common.errors import ConfigError


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) → (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Address {address!r} must be host:port.")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    """(host, port) → ``host:port``, an IPv6 host in brackets (the inverse of split_address)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
