"""Which sites may join the federation: their public keys, registered with the running SuperLink.

``STATE/sites.json`` maps each site's name to the node id Flower gave its key and a short hash of
the key, so the operator can refer to sites by name; Flower's own database holds the keys. Every
call to the SuperLink goes through one :class:`~fedscan.server.control_api.ControlApi` per
command (in-process: ≈ 1 s a command instead of 10-15 s for a ``flwr`` subprocess on 2 loaded
cores); ``sites.json`` changes only after the SuperLink has accepted the change.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from fedscan.common.errors import ConfigError
from fedscan.common.files import atomic_write_bytes
from fedscan.server.control_api import ControlApi
from fedscan.server.coordinator_config import CoordinatorConfig

SITES_FILE = "sites.json"
_KEY_HINT = "the site makes one with `fedscan certs site NAME`"


def _registry(config: CoordinatorConfig) -> dict[str, dict[str, Any]]:
    path = config.state_dir / SITES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def names_by_node(state_dir: Path) -> dict[int, str]:
    """Node id → the name the operator registered it under (none for a simulation, or an
    unreadable registry: then sites are named as they report themselves)."""
    try:
        sites = json.loads((Path(state_dir) / SITES_FILE).read_text())
        return {int(entry["node_id"]): str(name) for name, entry in sites.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _save_registry(config: CoordinatorConfig, sites: dict[str, dict[str, Any]]) -> None:
    atomic_write_bytes(
        config.state_dir / SITES_FILE, json.dumps(sites, indent=2, sort_keys=True).encode()
    )


def public_key_pem(text: str, source: Path) -> bytes:
    """An OpenSSH EC public key (``NAME.pub``) as the PEM SubjectPublicKeyInfo the SuperLink
    stores (what ``flwr supernode register`` sends); ConfigError if it is not one on a NIST
    curve."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_ssh_public_key(text.encode())
    except (ValueError, TypeError):
        raise ConfigError(f"{source} is not an OpenSSH public key; {_KEY_HINT}.") from None
    nist = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, nist):
        raise ConfigError(f"{source} is not an EC key on a NIST curve; {_KEY_HINT}.")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def add_site(config: CoordinatorConfig, name: str, public_key: Path) -> dict[str, Any]:
    """Register a site's public key with the running SuperLink, under ``name``."""
    sites = _registry(config)
    if name in sites:
        raise ConfigError(
            f"A site named {name!r} is already registered; `fedscan server sites remove {name}` "
            "first."
        )
    try:
        text = Path(public_key).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read {public_key} ({exc.strerror}); it is the site's NAME.pub."
        ) from None
    if not text.startswith("ecdsa-sha2-nistp"):
        raise ConfigError(f"{public_key} is not an OpenSSH EC public key; {_KEY_HINT}.")
    pem = public_key_pem(text, Path(public_key))
    with ControlApi(config) as api:
        node_id = api.register_node(pem, name)
    sites[name] = {
        "node_id": str(node_id),
        "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "key_sha256": hashlib.sha256(text.split()[1].encode()).hexdigest()[:16],
    }
    _save_registry(config, sites)
    return sites[name]


def list_sites(config: CoordinatorConfig) -> list[dict[str, Any]]:
    """Every registered site with Flower's view of it (registered / online / offline)."""
    with ControlApi(config) as api:
        nodes = {str(node.node_id): node for node in api.list_nodes()}
    rows = []
    for name, entry in sorted(_registry(config).items()):
        node = nodes.get(entry["node_id"])
        rows.append(
            {
                "name": name,
                **entry,
                "status": node.status if node else "unknown",
                "online_at": node.online_at if node else "N/A",
            }
        )
    return rows


def remove_site(config: CoordinatorConfig, name: str) -> None:
    sites = _registry(config)
    if name not in sites:
        raise ConfigError(
            f"No site named {name!r}; `fedscan server sites list` shows the registered ones."
        )
    with ControlApi(config) as api:
        api.unregister_node(int(sites[name]["node_id"]))
    del sites[name]
    _save_registry(config, sites)
