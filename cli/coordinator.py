"""``fedscan server``: run the coordinator (Flower's SuperLink) and manage which sites may join.

The SuperLink runs in the foreground (for systemd or a container), with TLS,
site authentication, its state in an on-disk database, runtime dependency
installation and telemetry off. Its working folder is the state folder, so
run directories land in ``STATE/runs``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from fedscan.cli.processes import forward_stop_signals, stop_process_group
from fedscan.cli.superlink import FLOWER_BIN, flower_env
from fedscan.common.checkpoint import atomic_write_bytes
from fedscan.common.errors import ConfigError, FedscanError
from fedscan.server.coordinator import CoordinatorConfig, split_address

CONNECTION = "fedscan"
SITES_FILE = "sites.json"


def superlink_command(config: CoordinatorConfig, *, insecure: bool) -> list[str]:
    """The ``flower-superlink`` command line for ``config``."""
    host, port = split_address(config.control_address)
    command = [str(FLOWER_BIN / "flower-superlink"), "--fleet-api-address", config.fleet_address, "--host", host,
               "--port", str(port), "--database", str(config.state_dir / "superlink.db"),
               "--disable-runtime-dependency-installation"]
    if config.health_address:
        command += ["--health-server-address", config.health_address]
    if insecure or config.tls is None:
        return command + ["--insecure"]
    command += ["--ssl-ca-certfile", str(config.tls.ca_certificate), "--ssl-certfile", str(config.tls.certificate),
                "--ssl-keyfile", str(config.tls.private_key)]
    return command + (["--enable-supernode-auth"] if config.site_authentication else [])


def write_connection(config: CoordinatorConfig, *, insecure: bool) -> None:
    """``STATE/flwr-home/config.toml``: how the operator's commands reach this SuperLink's control API."""
    host, port = split_address(config.control_address)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
             f'address = "{host}:{port}"']
    if insecure or config.tls is None:
        lines.append("insecure = true")
    else:
        lines.append(f"root-certificates = {json.dumps(str(config.tls.ca_certificate))}")
    config.flwr_home.mkdir(parents=True, exist_ok=True)
    (config.flwr_home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def serve(config: CoordinatorConfig, *, insecure: bool) -> int:
    """Run the SuperLink until it exits or this process is told to stop; return its exit code."""
    config.validate(insecure=insecure)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.runs_dir.mkdir(exist_ok=True)
    write_connection(config, insecure=insecure)
    process = subprocess.Popen(superlink_command(config, insecure=insecure), env=flower_env(config.flwr_home),
                               cwd=config.state_dir, stdin=subprocess.DEVNULL, start_new_session=True)
    forward_stop_signals(process)
    try:
        return process.wait()
    finally:
        stop_process_group(process)


def flwr(config: CoordinatorConfig, *args: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """A ``flwr`` command against this coordinator, JSON output parsed; its error message raised."""
    command = [str(FLOWER_BIN / "flwr"), *args, "--format", "json"]
    try:
        result = subprocess.run(command, env=flower_env(config.flwr_home), capture_output=True, text=True,
                                timeout=timeout_s, cwd=config.state_dir, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FedscanError(f"`flwr {args[0]}` got no answer within {timeout_s:g} s; is `fedscan server start` "
                           "running?") from None
    try:
        reply = json.loads(result.stdout[result.stdout.index("{"):])
    except ValueError:
        raise FedscanError(f"`flwr {args[0]}` gave no answer (exit {result.returncode}): "
                           f"{(result.stderr or result.stdout).strip()[-300:]}") from None
    if not reply.get("success", False):
        message = str(reply.get("error-message", "unknown error")).strip().splitlines()[-1]
        raise FedscanError(f"The coordinator refused `flwr {' '.join(args[:2])}`: {message} "
                           "(is `fedscan server start` running?)")
    return reply


def _registry(config: CoordinatorConfig) -> dict[str, dict[str, Any]]:
    path = config.state_dir / SITES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_registry(config: CoordinatorConfig, sites: dict[str, dict[str, Any]]) -> None:
    atomic_write_bytes(config.state_dir / SITES_FILE, json.dumps(sites, indent=2, sort_keys=True).encode())


def add_site(config: CoordinatorConfig, name: str, public_key: Path) -> dict[str, Any]:
    """Register a site's public key with the running SuperLink, under ``name``."""
    sites = _registry(config)
    if name in sites:
        raise ConfigError(f"A site named {name!r} is already registered; `fedscan server sites remove {name}` first.")
    try:
        text = Path(public_key).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read {public_key} ({exc.strerror}); it is the site's NAME.pub.") from None
    if not text.startswith("ecdsa-sha2-nistp"):
        raise ConfigError(f"{public_key} is not an OpenSSH EC public key; the site makes one with "
                          "`fedscan certs site NAME`.")
    reply = flwr(config, "supernode", "register", str(Path(public_key).resolve()), CONNECTION, "--name", name)
    sites[name] = {"node_id": str(reply["node-id"]), "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "key_sha256": hashlib.sha256(text.split()[1].encode()).hexdigest()[:16]}
    _save_registry(config, sites)
    return sites[name]


def list_sites(config: CoordinatorConfig) -> list[dict[str, Any]]:
    """Every registered site with Flower's view of it (registered / online / offline)."""
    nodes = {str(node["node-id"]): node for node in flwr(config, "supernode", "list", CONNECTION)["nodes"]}
    return [{"name": name, **entry, "status": nodes.get(entry["node_id"], {}).get("status", "unknown"),
             "online_at": nodes.get(entry["node_id"], {}).get("online-at", "N/A")}
            for name, entry in sorted(_registry(config).items())]


def remove_site(config: CoordinatorConfig, name: str) -> None:
    sites = _registry(config)
    if name not in sites:
        raise ConfigError(f"No site named {name!r}; `fedscan server sites list` shows the registered ones.")
    flwr(config, "supernode", "unregister", sites[name]["node_id"], CONNECTION)
    del sites[name]
    _save_registry(config, sites)
