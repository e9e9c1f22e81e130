"""A hospital's pre-flight checks before it joins a federation (``fedscan client check``).

Each check answers pass or fail with what to do; every check runs, so one
call shows every problem. Nothing here talks to the coordinator beyond a TLS
handshake with its Fleet port and one signed call that asks whether the site's key is registered
(``client/registration.py``: it changes nothing there).
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fedscan.client.site_config import SiteConfig, load_site_config
from fedscan.common.addresses import join_address, split_address
from fedscan.common.errors import FedscanError

if TYPE_CHECKING:
    from fedscan.common.data.imageset import SiteData

REGISTERED = "site registered"  # the check a site fixes by asking the coordinator operator


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_checks(
    config_path: Path, *, connect_timeout_s: float = 10.0
) -> tuple[SiteConfig | None, list[Check]]:
    """Every pre-flight check of the site configured in ``config_path``."""
    try:
        config = load_site_config(config_path)
    except FedscanError as exc:
        return None, [Check("configuration", False, str(exc))]
    checks = [Check("configuration", True, f"{config_path} is valid")]
    steps: list[Callable[[SiteConfig], Check]] = [
        _connection,
        _private_key,
        _ca_certificate,
        _state_dir,
        _data,
        _device,
        _client_app,
        _policy,
    ]
    checks += [step(config) for step in steps]
    if config.connection is not None and all(check.ok for check in checks[1:4]):
        checks.append(_coordinator(config, connect_timeout_s))
        if checks[-1].ok and not config.connection.insecure:
            checks.append(_registered(config, connect_timeout_s))
    return config, checks


def _policy(config: SiteConfig) -> Check:
    """The [policy] in force (informational: a valid policy always passes)."""
    return Check("policy in force", True, "; ".join(config.run_policy.lines()))


def _connection(config: SiteConfig) -> Check:
    if config.connection is None:
        return Check(
            "coordinator address",
            False,
            "site.toml has no [coordinator] section: add address = "
            '"HOST:9092" and ca-certificate = "ca.crt" from the coordinator operator.',
        )
    if config.connection.insecure:
        return Check(
            "coordinator address",
            True,
            f"{config.connection.address} (INSECURE: no TLS, no authentication)",
        )
    return Check("coordinator address", True, config.connection.address)


def _private_key(config: SiteConfig) -> Check:
    key = config.connection.private_key if config.connection else None
    if key is None:
        return Check(
            "site key",
            config.connection is not None and config.connection.insecure,
            "no key configured",
        )
    if not os.access(key, os.R_OK):
        return Check(
            "site key",
            False,
            f"{key} is missing or unreadable; make it with `fedscan certs site "
            f"{config.name}` and set [auth] private-key.",
        )
    if stat.S_IMODE(key.stat().st_mode) & 0o077:
        return Check("site key", False, f"{key} is readable by other users; run `chmod 600 {key}`.")
    return Check("site key", True, f"{key} (mode 0600)")


def _ca_certificate(config: SiteConfig) -> Check:
    ca = config.connection.ca_certificate if config.connection else None
    if ca is None:
        return Check(
            "CA certificate", config.connection is not None and config.connection.insecure, "none"
        )
    try:
        ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError):
        return Check(
            "CA certificate",
            False,
            f"{ca} is missing or not a PEM certificate; get the federation's "
            "ca.crt from the coordinator operator.",
        )
    return Check("CA certificate", True, str(ca))


def _state_dir(config: SiteConfig) -> Check:
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True)
        probe = config.state_dir / ".fedscan-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return Check(
            "state folder",
            False,
            f"{config.state_dir} is not writable ({exc.strerror}); the privacy "
            "ledger lives there: fix its owner or permissions.",
        )
    return Check("state folder", True, f"{config.state_dir} (privacy ledger)")


def _data(config: SiteConfig) -> Check:
    """The site's images (or, for CT/MR series, volumes) decode and are enough for the policy,
    for each task its labels CSV serves (a class column: classification; a mask column:
    segmentation, every mask checked too)."""
    from fedscan.common.ingest.labels import tasks_supported

    try:
        tasks = tasks_supported(config.data.labels, Path(config.data.site_dir))
        if not tasks:
            return Check(
                "data",
                False,
                f"The labels CSV has neither a '{config.data.labels.label_column}' nor a "
                f"'{config.data.labels.mask_column}' column; set label-column or mask-column.",
            )
        found = {task: _load(config, task) for task in tasks}
    except FedscanError as exc:
        return Check("data", False, str(exc))
    detail = "; ".join(
        f"{task}: {len(data.train)} training and {len(data.val)} validation {unit}"
        for task, (unit, data) in found.items()
    )
    if all(len(data.train) < config.policy.min_samples for _, data in found.values()):
        return Check(
            "data",
            False,
            f"{detail}: fewer than the policy's min-samples ({config.policy.min_samples}); "
            "run `fedscan data check` (with --task segmentation for masks) to see what was "
            "rejected.",
        )
    return Check("data", True, detail)


def _load(config: SiteConfig, task: str) -> tuple[str, SiteData]:
    """("volumes", …) when the folder's DICOM series assemble for the task's 3-D model — a header
    pass, quick to fail on a site of radiographs —, else ("images", …) for its 2-D model."""
    from fedscan.common import defaults
    from fedscan.common.data.sources import volume_input
    from fedscan.common.errors import DataError
    from fedscan.common.models.registry import get_model_spec

    masks = task == "segmentation"
    volume = volume_input(get_model_spec("unet3d" if masks else "cnn3d"))
    try:
        return "volumes", config.data.load(0, masks=masks, volume=volume)
    except DataError:
        pass  # no usable series: a site of 2-D images, checked as such
    model = get_model_spec(defaults.TASK_DEFAULTS[task].model)
    return "images", config.data.load(model.input_size, masks=masks)


def _device(config: SiteConfig) -> Check:
    from fedscan.common.device import resolve_device

    try:
        return Check("device", True, str(resolve_device(config.device)))
    except FedscanError as exc:
        return Check("device", False, str(exc))


def _client_app(config: SiteConfig) -> Check:
    """The code each message runs (Flower's ClientApp) loads in this installation: a broken one
    would refuse every request of every run."""
    import importlib

    try:
        importlib.import_module("fedscan.client.app")
    except Exception as exc:  # any import failure: the installation is broken
        return Check(
            "client app",
            False,
            f"fedscan's ClientApp does not load ({type(exc).__name__}: {exc}); reinstall fedscan "
            "(`pip install --force-reinstall`) and check that its dependencies match.",
        )
    return Check("client app", True, "fedscan.client.app loads")


def _coordinator(config: SiteConfig, timeout_s: float) -> Check:
    """Reach the Fleet port and, with TLS, verify its certificate against the site's CA only."""
    connection = config.connection
    assert connection is not None
    host, port = split_address(connection.address)
    shown = join_address(host, port)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            if connection.insecure:
                return Check("coordinator", True, f"{shown} reachable (no TLS)")
            context = ssl.create_default_context(cafile=str(connection.ca_certificate))
            context.set_alpn_protocols(["h2"])
            with context.wrap_socket(raw, server_hostname=host):
                pass
    except ssl.SSLCertVerificationError as exc:
        return Check(
            "coordinator",
            False,
            f"{shown} presented a certificate this site does not trust "
            f"({exc.verify_message}); check that ca-certificate is the federation's ca.crt and "
            "that the "
            "address is a name on the coordinator's certificate.",
        )
    except (OSError, ssl.SSLError) as exc:
        return Check(
            "coordinator",
            False,
            f"cannot reach {shown} ({exc}); check the address and that "
            "outbound TCP to it is open in the hospital firewall.",
        )
    return Check("coordinator", True, f"{shown} reachable, certificate valid")


def _registered(config: SiteConfig, timeout_s: float) -> Check:
    """Whether the coordinator knows this site's key (asked only once TLS and the key check out)."""
    from fedscan.client.registration import Registration, registration

    connection = config.connection
    assert connection is not None and connection.private_key and connection.ca_certificate
    answer = registration(
        connection.address,
        private_key=connection.private_key,
        ca_certificate=connection.ca_certificate,
        timeout_s=timeout_s,
    )
    public = connection.private_key.with_suffix(".pub")
    if answer.registration is Registration.REGISTERED:
        return Check(REGISTERED, True, "the coordinator knows this site's key")
    if answer.registration is Registration.UNKNOWN:
        return Check(
            REGISTERED,
            False,
            f"the coordinator refused this site's key (it is not registered): send {public} to "
            f"the coordinator operator, who runs `fedscan server sites add {config.name} "
            f"{public.name}`; after a `sites remove`, make a new key first (`fedscan certs site "
            f"{config.name} --force`).",
        )
    # Not a failure: an answer this Flower does not give; `client start` finds out when it joins.
    return Check(REGISTERED, True, f"could not tell ({answer.detail}); joining will tell")
