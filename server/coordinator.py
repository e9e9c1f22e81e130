"""The coordinator's own settings (``coordinator.toml``) and the Flower SuperLink they describe.

Example::

    [coordinator]
    fleet-address = "0.0.0.0:9092"      # sites connect here (gRPC over TLS): the one port to open
    control-address = "127.0.0.1:9093"  # `fedscan run` / `flwr` talk to this (HTTPS); keep it private
    state-dir = "/var/lib/fedscan-coordinator"   # Flower's database, run directories
    site-authentication = true          # only registered site keys may connect

    [tls]
    ca-certificate = "/etc/fedscan/certs/ca.crt"
    certificate = "/etc/fedscan/certs/server.crt"
    private-key = "/etc/fedscan/certs/server.key"

Relative paths are relative to the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedscan.common.errors import ConfigError
from fedscan.common.tomlfile import read_toml

_SECTIONS = {"coordinator": {"fleet-address", "control-address", "state-dir", "site-authentication",
                             "health-address"},
             "tls": {"ca-certificate", "certificate", "private-key"}}


@dataclass(frozen=True)
class TlsFiles:
    ca_certificate: Path
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class CoordinatorConfig:
    fleet_address: str
    control_address: str
    state_dir: Path
    tls: TlsFiles | None
    site_authentication: bool = True
    health_address: str = ""

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def flwr_home(self) -> Path:
        """Flower's own config folder for the operator's commands (connection to this SuperLink)."""
        return self.state_dir / "flwr-home"

    def validate(self, *, insecure: bool) -> None:
        """Refuse what would expose sites: no TLS (unless ``insecure``), auth without TLS, missing files."""
        if self.tls is None and not insecure:
            raise ConfigError("The coordinator has no [tls] section: sites' updates would travel in clear text. "
                              "Make certificates with `fedscan certs init` and `fedscan certs server`, or pass "
                              "--insecure for a local experiment.")
        if self.tls is None and self.site_authentication:
            raise ConfigError("site-authentication needs TLS; add [tls] or set site-authentication = false.")
        for path in ([] if self.tls is None else [self.tls.ca_certificate, self.tls.certificate,
                                                   self.tls.private_key]):
            if not path.is_file():
                raise ConfigError(f"{path} does not exist; see `fedscan certs --help`.")


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    """Read and validate ``coordinator.toml``; every problem names the key to fix."""
    path = Path(path).expanduser()
    document = read_toml(path, "coordinator")
    for section, values in document.items():
        if section not in _SECTIONS or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown section [{section}]; expected {', '.join(sorted(_SECTIONS))}.")
        unknown = sorted(set(values) - _SECTIONS[section])
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) in [{section}]: {', '.join(unknown)}.")
    base, coordinator = path.parent, document.get("coordinator", {})
    if "state-dir" not in coordinator:
        raise ConfigError(f"{path}: [coordinator] state-dir is required.")
    return CoordinatorConfig(
        fleet_address=str(coordinator.get("fleet-address", "0.0.0.0:9092")),
        control_address=str(coordinator.get("control-address", "127.0.0.1:9093")),
        state_dir=(base / str(coordinator["state-dir"])).resolve(), tls=_tls(document.get("tls"), base),
        site_authentication=bool(coordinator.get("site-authentication", True)),
        health_address=str(coordinator.get("health-address", "")))


def _tls(section: dict[str, Any] | None, base: Path) -> TlsFiles | None:
    if section is None:
        return None
    missing = sorted({"ca-certificate", "certificate", "private-key"} - set(section))
    if missing:
        raise ConfigError(f"[tls] lacks {', '.join(missing)}.")
    return TlsFiles(*(((base / str(section[key])).resolve()) for key in ("ca-certificate", "certificate",
                                                                        "private-key")))


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) → (host, port)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"Address {address!r} must be host:port.")
    return host.strip("[]"), int(port)
