"""Checks that a coordinator's TLS files will work, before anything is started with them.

A certificate that does not cover an address the coordinator serves fails late and far away:
Flower's SuperExec reaches the control API on loopback and dies 10 s after start with
"certificate is not valid for '127.0.0.1'", while the SuperLink keeps running. So
``fedscan server start`` runs :func:`certificate_problems` first and refuses to start on any
problem, each stated with its fix. Nothing here changes a file.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

_REISSUE = (
    "re-issue it with `fedscan certs server --ca CA_FOLDER --out FOLDER --host NAME_OR_IP "
    "--force` (repeat --host for every name and address sites dial; loopback is always included)"
)


@dataclass(frozen=True)
class ServedTls:
    """The TLS files a coordinator serves with, and the host names or addresses it must cover."""

    ca_certificate: Path
    certificate: Path
    private_key: Path
    hosts: tuple[str, ...]
    any_of: tuple[str, ...] = ()  # a Fleet port on 0.0.0.0: this host's addresses, one covered


def local_addresses() -> tuple[str, ...]:
    """This host's own non-loopback IP addresses (Linux: IPv4 by interface, IPv6 from /proc)."""
    import fcntl
    import socket
    import struct

    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address on this interface
            found.append(socket.inet_ntoa(answer[20:24]))
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        raw = line.split()[0]
        found.append(str(ipaddress.ip_address(bytes.fromhex(raw))))
    return tuple(a for a in dict.fromkeys(found) if not ipaddress.ip_address(a).is_loopback)


def _any_of_problem(certificate: x509.Certificate, tls: ServedTls) -> str:
    """A Fleet port on every address: the certificate must name one of them, or a DNS name
    (which cannot be checked here without a lookup: a name is trusted to be the public one)."""
    if not tls.any_of or any(covers(certificate, address) for address in tls.any_of):
        return ""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [n for n in names.get_values_for_type(x509.DNSName) if n.lower() != "localhost"]
    except x509.ExtensionNotFound:
        dns = []
    if dns:
        return ""
    return (
        f"{tls.certificate} covers none of this host's addresses ({', '.join(tls.any_of)}), and "
        "the Fleet port listens on all of them: sites would refuse the coordinator. Re-issue it "
        "for the address or name sites dial, or set public-hosts in coordinator.toml to the "
        f"names they dial; {_REISSUE}."
    )


def _load_certificate(path: Path) -> x509.Certificate | str:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return f"{path} is not a readable PEM certificate ({type(exc).__name__}); {_REISSUE}."


def covers(certificate: x509.Certificate, host: str) -> bool:
    """Whether ``certificate``'s subject alternative names cover ``host`` (an IP or a DNS name;
    a wildcard covers one label, as TLS clients match it)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(host) in names.get_values_for_type(x509.IPAddress)
    except ValueError:
        pass
    wanted = host.lower().rstrip(".")
    for name in names.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if name == wanted or (
            name.startswith("*.") and wanted.partition(".")[2] == name[2:] and "." in wanted
        ):
            return True
    return False


def _signature_problem(certificate: x509.Certificate, ca: x509.Certificate, tls: ServedTls) -> str:
    try:
        certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return (
            f"{tls.certificate} is not signed by the CA in {tls.ca_certificate}, so sites that "
            f"pin that CA will refuse the coordinator; {_REISSUE} with that CA's folder."
        )
    return ""


def _validity_problem(certificate: x509.Certificate, path: Path) -> str:
    now = datetime.datetime.now(datetime.UTC)
    if now < certificate.not_valid_before_utc:
        return f"{path} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC."
    if now > certificate.not_valid_after_utc:
        return f"{path} expired on {certificate.not_valid_after_utc:%Y-%m-%d}; {_REISSUE}."
    return ""


def _key_problem(certificate: x509.Certificate, tls: ServedTls) -> str:
    try:
        key = serialization.load_pem_private_key(tls.private_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return f"{tls.private_key} is not a readable, unencrypted PEM private key ({exc})."
    mine = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if mine != theirs:
        return (
            f"{tls.private_key} is not the key of {tls.certificate}: [tls] private-key must "
            "name the server.key written together with that server.crt."
        )
    return ""


def certificate_problems(tls: ServedTls) -> list[str]:
    """Every reason ``tls`` would not work, each with what to change (empty: it will work)."""
    loaded = [_load_certificate(tls.ca_certificate), _load_certificate(tls.certificate)]
    errors = [item for item in loaded if isinstance(item, str)]
    if errors:
        return errors
    ca, certificate = loaded
    assert isinstance(ca, x509.Certificate) and isinstance(certificate, x509.Certificate)
    problems = [
        _signature_problem(certificate, ca, tls),
        _validity_problem(certificate, tls.certificate),
        _validity_problem(ca, tls.ca_certificate),
        _key_problem(certificate, tls),
        _any_of_problem(certificate, tls),
    ]
    missing = [host for host in tls.hosts if not covers(certificate, host)]
    if missing:
        problems.append(
            f"{tls.certificate} does not cover {', '.join(missing)}, where this coordinator "
            f"serves; {_REISSUE}."
        )
    return [problem for problem in problems if problem]
