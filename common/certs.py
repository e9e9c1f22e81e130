"""Keys and certificates of a federation: a CA, the coordinator's TLS certificate, sites' auth keys.

The coordinator's gRPC port (Flower's Fleet API) and its HTTP control port
serve TLS with a certificate signed by the federation's own CA; every site
pins that CA. Sites prove who they are with an EC key pair (OpenSSH format,
as Flower's SuperNode authentication expects) whose public half the
coordinator operator registers. Private keys are written 0600 and never
overwritten unless the caller says so: replacing a key locks out whoever
still uses the old one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedscan.common.errors import ConfigError

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
_CA_DAYS, _SERVER_DAYS = (
    3650,
    825,
)  # 825 days: the longest server lifetime browsers and OpenSSL tools accept


@dataclass(frozen=True)
class KeyPair:
    """Paths of a written certificate (or public key) and its private key."""

    public: Path
    private: Path


def _write(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    """Create ``path`` (0600 when private); an existing file is replaced only with ``force``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        if not force:
            raise ConfigError(
                f"{path} already exists; pass --force to replace it (whoever uses the old "
                "key or certificate must then get the new one)."
            )
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedscan federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def init_ca(folder: Path, *, name: str = "fedscan federation CA", force: bool = False) -> KeyPair:
    """A self-signed CA (EC P-384) that signs the coordinator's certificate; sites trust only it."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = _name(name)
    certificate = (
        _builder(subject, subject, key.public_key(), _CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA384())
    )
    pair = KeyPair(Path(folder) / CA_CERT, Path(folder) / CA_KEY)
    _write(pair.private, _pem_key(key), private=True, force=force)
    _write(
        pair.public,
        certificate.public_bytes(serialization.Encoding.PEM),
        private=False,
        force=force,
    )
    return pair


def load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = Path(folder) / CA_CERT, Path(folder) / CA_KEY
    if not cert_path.is_file() or not key_path.is_file():
        raise ConfigError(f"No CA in {folder}: run `fedscan certs init --out {folder}` first.")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path} is not an EC private key made by `fedscan certs init`.")
    return x509.load_pem_x509_certificate(cert_path.read_bytes()), key


# The coordinator's own commands reach its control API on loopback with this same certificate
# (Flower's SuperExec dies 10 s after start when 127.0.0.1 is missing), so every certificate covers
# loopback beside the names sites dial.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _subject_alternative_names(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in [*hosts, *LOOPBACK_HOSTS]:
        if (name := _general_name(host)) not in names:
            names.append(name)
    return x509.SubjectAlternativeName(names)


def issue_server_certificate(
    ca_folder: Path, out: Path, *, hosts: list[str], force: bool = False
) -> KeyPair:
    """The coordinator's TLS certificate, valid for every name and IP address sites will dial and
    for loopback (:data:`LOOPBACK_HOSTS`), where the coordinator's own commands reach it."""
    if not hosts:
        raise ConfigError(
            "Give at least one --host: the DNS name or IP address sites use to reach the "
            "coordinator."
        )
    ca_cert, ca_key = load_ca(ca_folder)
    key = ec.generate_private_key(ec.SECP384R1())
    certificate = (
        _builder(_name(hosts[0]), ca_cert.subject, key.public_key(), _SERVER_DAYS)
        .add_extension(_subject_alternative_names(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    pair = KeyPair(Path(out) / SERVER_CERT, Path(out) / SERVER_KEY)
    _write(pair.private, _pem_key(key), private=True, force=force)
    _write(
        pair.public,
        certificate.public_bytes(serialization.Encoding.PEM),
        private=False,
        force=force,
    )
    return pair


def site_key_pair(out: Path, name: str, *, force: bool = False) -> KeyPair:
    """A site's authentication key pair: ``NAME.key`` (OpenSSH private, 0600) and ``NAME.pub``."""
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise ConfigError(
            f"Site name {name!r} cannot be a file name; use letters, digits, '-' or '_'."
        )
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    pair = KeyPair(Path(out) / f"{name}.pub", Path(out) / f"{name}.key")
    _write(pair.private, private, private=True, force=force)
    _write(pair.public, public + f" fedscan-site-{name}\n".encode(), private=False, force=force)
    return pair
