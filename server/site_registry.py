"""Which sites may join the federation: their public keys, registered with the running SuperLink.

``STATE/sites.json`` maps each site's name to the node id Flower gave its key and a short hash of
the key, so the operator can refer to sites by name; Flower's own database holds the keys.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from fedscan.common.errors import ConfigError
from fedscan.common.files import atomic_write_bytes
from fedscan.server.coordinator_config import CoordinatorConfig
from fedscan.server.superlink import DEPLOYMENT_CONNECTION, flwr

SITES_FILE = "sites.json"


def _registry(config: CoordinatorConfig) -> dict[str, dict[str, Any]]:
    path = config.state_dir / SITES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_registry(config: CoordinatorConfig, sites: dict[str, dict[str, Any]]) -> None:
    atomic_write_bytes(
        config.state_dir / SITES_FILE, json.dumps(sites, indent=2, sort_keys=True).encode()
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
        raise ConfigError(
            f"{public_key} is not an OpenSSH EC public key; the site makes one with "
            "`fedscan certs site NAME`."
        )
    reply = flwr(
        config,
        "supernode",
        "register",
        str(Path(public_key).resolve()),
        DEPLOYMENT_CONNECTION,
        "--name",
        name,
    )
    sites[name] = {
        "node_id": str(reply["node-id"]),
        "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "key_sha256": hashlib.sha256(text.split()[1].encode()).hexdigest()[:16],
    }
    _save_registry(config, sites)
    return sites[name]


def list_sites(config: CoordinatorConfig) -> list[dict[str, Any]]:
    """Every registered site with Flower's view of it (registered / online / offline)."""
    nodes = {
        str(node["node-id"]): node
        for node in flwr(config, "supernode", "list", DEPLOYMENT_CONNECTION)["nodes"]
    }
    return [
        {
            "name": name,
            **entry,
            "status": nodes.get(entry["node_id"], {}).get("status", "unknown"),
            "online_at": nodes.get(entry["node_id"], {}).get("online-at", "N/A"),
        }
        for name, entry in sorted(_registry(config).items())
    ]


def remove_site(config: CoordinatorConfig, name: str) -> None:
    sites = _registry(config)
    if name not in sites:
        raise ConfigError(
            f"No site named {name!r}; `fedscan server sites list` shows the registered ones."
        )
    flwr(config, "supernode", "unregister", sites[name]["node_id"], DEPLOYMENT_CONNECTION)
    del sites[name]
    _save_registry(config, sites)
