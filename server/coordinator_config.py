"""The coordinator's own settings (``coordinator.toml``): where the SuperLink listens, its state and
its TLS files.

Example::

    [coordinator]
    fleet-address = "0.0.0.0:9092"       # sites connect here (gRPC over TLS): the one port to open
    control-address = "127.0.0.1:9093"   # `fedscan run` / `flwr` talk to this (HTTPS); keep private
    state-dir = "/var/lib/fedscan-coordinator"   # Flower's database, run directories
    site-authentication = true           # only registered site keys may connect

    [tls]
    ca-certificate = "/etc/fedscan/certs/ca.crt"
    certificate = "/etc/fedscan/certs/server.crt"
    private-key = "/etc/fedscan/certs/server.key"

Relative paths are relative to the file. Every key, its default and meaning are the fields below
(``docs/reference.md`` is generated from them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fedscan.common.addresses import split_address
from fedscan.common.certcheck import ServedTls, certificate_problems, local_addresses
from fedscan.common.errors import ConfigError
from fedscan.common.files import read_toml
from fedscan.common.settings import Section, described, setting
from fedscan.common.values import Names

_ANY_ADDRESS = ("0.0.0.0", "::", "[::]", "")


@dataclass(frozen=True)
class TlsFiles:
    """The coordinator's TLS material, made with ``fedscan certs init`` and ``fedscan certs
    server``."""

    ca_certificate: Path = field(
        metadata=described(path=True, help="The federation's CA certificate (ca.crt).")
    )
    certificate: Path = field(
        metadata=described(
            path=True,
            help="The coordinator's certificate (server.crt), valid for every "
            "name and address sites dial.",
        )
    )
    private_key: Path = field(
        metadata=described(path=True, help="The certificate's private key (server.key, mode 0600).")
    )


@dataclass(frozen=True)
class CoordinatorConfig:
    state_dir: Path = field(
        metadata=described(
            path=True, help="Flower's database and the run directories (STATE/runs); back it up."
        )
    )
    fleet_address: str = setting(
        "0.0.0.0:9092",
        help="Where sites connect (gRPC over TLS): the one port to open to the hospitals.",
    )
    public_hosts: Names = setting(
        (),
        help="The names and addresses sites dial (as in `fedscan certs server --host`); the "
        "certificate must cover each. Empty with a fleet-address of 0.0.0.0: it must cover one "
        "of this host's own addresses.",
    )
    control_address: str = setting(
        "127.0.0.1:9093",
        help="The control API `fedscan run` and `flwr` use (HTTPS); keep it private.",
    )
    site_authentication: bool = setting(
        True,
        help="Only sites whose public key was registered "
        "(`fedscan server sites add`) may connect; needs [tls].",
    )
    health_address: str = setting(
        "", help="host:port of Flower's gRPC health service (empty: off)."
    )
    access_log: bool = setting(
        False,
        help="Log every HTTP request to the control API (uvicorn's access log; about ten lines "
        "a second while a run is followed). Failed requests are logged either way.",
    )
    tls: TlsFiles | None = None

    @property
    def control_host(self) -> str:
        """Where the operator's commands (and Flower's SuperExec) dial the control API."""
        host = split_address(self.control_address)[0]
        return "127.0.0.1" if host in _ANY_ADDRESS else host

    @property
    def fleet_on_every_address(self) -> bool:
        return split_address(self.fleet_address)[0] in _ANY_ADDRESS

    def served_hosts(self) -> tuple[str, ...]:
        """Addresses the certificate must cover: the control API's, the Fleet API's when it
        listens on one address, and every public host the operator names."""
        fleet = [] if self.fleet_on_every_address else [split_address(self.fleet_address)[0]]
        return tuple(dict.fromkeys([self.control_host, *fleet, *self.public_hosts]))

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def flwr_home(self) -> Path:
        """Flower's own config folder for the operator's commands (connection to this SuperLink)."""
        return self.state_dir / "flwr-home"

    def validate(self, *, insecure: bool) -> None:
        """Refuse what would expose sites: no TLS (unless ``insecure``), auth without TLS, missing
        files."""
        if self.tls is None and not insecure:
            raise ConfigError(
                "The coordinator has no [tls] section: sites' updates would travel in clear text. "
                "Make certificates with `fedscan certs init` and `fedscan certs server`, or pass "
                "--insecure for a local experiment."
            )
        if self.tls is None and self.site_authentication:
            raise ConfigError(
                "site-authentication needs TLS; add [tls] or set site-authentication = false."
            )
        for path in (
            []
            if self.tls is None
            else [self.tls.ca_certificate, self.tls.certificate, self.tls.private_key]
        ):
            if not path.is_file():
                raise ConfigError(f"{path} does not exist; see `fedscan certs --help`.")
        if self.tls is not None and not insecure:
            self._check_certificate(self.tls)

    def _check_certificate(self, tls: TlsFiles) -> None:
        # On 0.0.0.0 with no public hosts named, sites dial one of this host's own addresses.
        local = local_addresses() if self.fleet_on_every_address and not self.public_hosts else ()
        served = ServedTls(
            tls.ca_certificate, tls.certificate, tls.private_key, self.served_hosts(), local
        )
        if problems := certificate_problems(served):
            raise ConfigError(
                "The coordinator's TLS files would not work, so nothing was started:\n- "
                + "\n- ".join(problems)
            )


COORDINATOR_SECTIONS = (
    Section("coordinator", CoordinatorConfig, exclude=("tls",)),
    Section("tls", TlsFiles),
)


def load_coordinator_config(path: Path) -> CoordinatorConfig:
    """Read and validate ``coordinator.toml``; every problem names the key to fix."""
    path = Path(path).expanduser()
    document = read_toml(path, "coordinator")
    sections = {section.name: section for section in COORDINATOR_SECTIONS}
    for name, values in document.items():
        if name not in sections or not isinstance(values, dict):
            raise ConfigError(
                f"{path}: unknown section [{name}]; expected {', '.join(sorted(sections))}."
            )
    base = path.parent
    tls = None
    if "tls" in document:
        tls = TlsFiles(**sections["tls"].read(document["tls"], where=str(path), base=base))
    return CoordinatorConfig(
        **sections["coordinator"].read(document.get("coordinator", {}), where=str(path), base=base),
        tls=tls,
    )
