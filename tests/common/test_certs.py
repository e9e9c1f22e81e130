"""Federation keys: a CA that signs the coordinator's certificate, site keys Flower can load."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from typer.testing import CliRunner, Result

from fedscan.cli.main import app
from fedscan.common.certcheck import covers
from fedscan.common.certs import init_ca, issue_server_certificate, load_ca, site_key_pair
from fedscan.common.errors import ConfigError
from fedscan.server.coordinator_config import load_coordinator_config

runner = CliRunner()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_server_certificate_is_signed_by_the_ca_for_every_host(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    pair = issue_server_certificate(
        tmp_path / "ca", tmp_path / "server", hosts=["coord.example.org", "127.0.0.1"]
    )
    ca_cert = x509.load_pem_x509_certificate(ca.public.read_bytes())
    cert = x509.load_pem_x509_certificate(pair.public.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # the names sites dial, then loopback (where the coordinator's own commands reach it), once each
    assert names.get_values_for_type(x509.DNSName) == ["coord.example.org", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert _mode(ca.private) == _mode(pair.private) == 0o600 and _mode(pair.public) == 0o644


def test_a_site_key_pair_is_openssh_ec_and_its_halves_match(tmp_path: Path) -> None:
    pair = site_key_pair(tmp_path, "st-marys")
    private = load_ssh_private_key(pair.private.read_bytes(), password=None)
    public = load_ssh_public_key(pair.public.read_bytes())
    assert private.public_key().public_numbers() == public.public_numbers()
    assert (
        pair.public.read_text().startswith("ecdsa-sha2-nistp384 ") and _mode(pair.private) == 0o600
    )


def test_nothing_is_overwritten_without_force(tmp_path: Path) -> None:
    first = site_key_pair(tmp_path, "a").private.read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        site_key_pair(tmp_path, "a")
    assert (tmp_path / "a.key").read_bytes() == first
    assert site_key_pair(tmp_path, "a", force=True).private.read_bytes() != first
    with pytest.raises(ConfigError, match="fedscan certs init"):
        issue_server_certificate(tmp_path / "nowhere", tmp_path, hosts=["localhost"])
    with pytest.raises(ConfigError, match="file name"):
        site_key_pair(tmp_path, "../escape")


def test_certs_commands_write_files_and_refuse_to_overwrite(tmp_path: Path) -> None:
    assert runner.invoke(app, ["certs", "init", "--out", str(tmp_path)]).exit_code == 0
    made = runner.invoke(
        app,
        [
            "certs",
            "server",
            "--ca",
            str(tmp_path),
            "--out",
            str(tmp_path),
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
        ],
    )
    assert made.exit_code == 0 and (tmp_path / "server.crt").is_file()
    assert (
        runner.invoke(app, ["certs", "site", "clinic-a", "--out", str(tmp_path / "keys")]).exit_code
        == 0
    )
    again = runner.invoke(app, ["certs", "init", "--out", str(tmp_path)])
    assert again.exit_code == 2 and "--force" in again.output


def _coordinator_toml(root: Path, *, fleet: str = "0.0.0.0:9092") -> Path:
    path = root / "coordinator.toml"
    path.write_text(
        f'[coordinator]\nfleet-address = "{fleet}"\nstate-dir = "state"\n\n[tls]\n'
        'ca-certificate = "certs/ca.crt"\ncertificate = "certs/server.crt"\n'
        'private-key = "certs/server.key"\n'
    )
    return path


def _start(config: Path) -> Result:
    return runner.invoke(app, ["server", "start", "--config", str(config)])


def _certificate_without_loopback(folder: Path) -> None:
    """What `certs server --host 10.250.0.1` wrote before it added loopback."""
    ca_cert, ca_key = load_ca(folder)
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_cert.subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("10.250.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )
    (folder / "server.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_a_certificate_for_the_address_sites_dial_alone_makes_a_working_coordinator(
    tmp_path: Path,
) -> None:
    init_ca(tmp_path / "certs")
    made = runner.invoke(
        app,
        [
            "certs",
            "server",
            "--ca",
            str(tmp_path / "certs"),
            "--out",
            str(tmp_path / "certs"),
            "--host",
            "10.250.0.1",
        ],
    )
    assert made.exit_code == 0, made.output
    assert "[tls]" in made.output and "127.0.0.1" in made.output  # rich used to eat "[tls]"
    config = load_coordinator_config(_coordinator_toml(tmp_path, fleet="10.250.0.1:9092"))
    assert config.served_hosts() == ("127.0.0.1", "10.250.0.1")
    config.validate(insecure=False)  # covers both: start-up goes ahead


def test_server_start_refuses_a_certificate_without_loopback_and_says_how_to_fix_it(
    tmp_path: Path,
) -> None:
    init_ca(tmp_path / "certs")
    _certificate_without_loopback(tmp_path / "certs")
    refused = _start(_coordinator_toml(tmp_path))
    assert refused.exit_code == 2
    assert "does not cover 127.0.0.1" in refused.output and "--force" in refused.output
    assert not (tmp_path / "state").exists()  # nothing was started or written


def test_server_start_refuses_a_certificate_of_another_ca_or_with_the_wrong_key(
    tmp_path: Path,
) -> None:
    init_ca(tmp_path / "certs")
    init_ca(tmp_path / "other")
    issue_server_certificate(tmp_path / "other", tmp_path / "certs", hosts=["10.250.0.1"])
    refused = _start(_coordinator_toml(tmp_path))
    assert refused.exit_code == 2 and "is not signed by the CA" in refused.output
    issue_server_certificate(tmp_path / "certs", tmp_path / "certs", hosts=["a"], force=True)
    other_key = issue_server_certificate(tmp_path / "certs", tmp_path / "spare", hosts=["a"])
    (tmp_path / "certs" / "server.key").write_bytes(other_key.private.read_bytes())
    refused = _start(_coordinator_toml(tmp_path))
    assert refused.exit_code == 2 and "is not the key of" in refused.output


def test_a_fleet_address_outside_the_certificate_is_named(tmp_path: Path) -> None:
    init_ca(tmp_path / "certs")
    issue_server_certificate(tmp_path / "certs", tmp_path / "certs", hosts=["coord.example.org"])
    refused = _start(_coordinator_toml(tmp_path, fleet="10.250.0.1:9092"))
    assert refused.exit_code == 2 and "does not cover 10.250.0.1" in refused.output


def test_wildcard_names_cover_one_label_only(tmp_path: Path) -> None:
    init_ca(tmp_path)
    pair = issue_server_certificate(tmp_path, tmp_path, hosts=["*.example.org"])
    certificate = x509.load_pem_x509_certificate(pair.public.read_bytes())
    assert covers(certificate, "coord.example.org") and covers(certificate, "::1")
    assert not covers(certificate, "a.b.example.org") and not covers(certificate, "example.org")


def test_on_every_address_the_certificate_must_name_one_of_this_hosts_or_the_public_hosts(
    tmp_path: Path,
) -> None:
    from fedscan.common.certcheck import local_addresses

    init_ca(tmp_path / "certs")
    issue_server_certificate(tmp_path / "certs", tmp_path / "certs", hosts=["10.9.9.9"])
    refused = _start(_coordinator_toml(tmp_path))  # fleet-address 0.0.0.0:9092
    assert refused.exit_code == 2 and "covers none of this host's addresses" in refused.output
    assert not (tmp_path / "state").exists()
    mine = local_addresses()
    if mine:  # a host with a non-loopback address: a certificate for it starts
        issue_server_certificate(
            tmp_path / "certs", tmp_path / "certs", hosts=[mine[0]], force=True
        )
        load_coordinator_config(_coordinator_toml(tmp_path)).validate(insecure=False)
    named = _coordinator_toml(tmp_path)
    named.write_text(
        named.read_text().replace("[tls]", 'public-hosts = ["coord.example.org"]\n\n[tls]')
    )
    config = load_coordinator_config(named)
    assert config.served_hosts() == ("127.0.0.1", "coord.example.org")
    refused = _start(named)
    assert refused.exit_code == 2 and "does not cover coord.example.org" in refused.output
