"""Federation keys: a CA that signs the coordinator's certificate, site keys Flower can load."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from typer.testing import CliRunner

from fedscan.cli.main import app
from fedscan.common.certs import init_ca, issue_server_certificate, site_key_pair
from fedscan.common.errors import ConfigError

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
    assert names.get_values_for_type(x509.DNSName) == ["coord.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
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
