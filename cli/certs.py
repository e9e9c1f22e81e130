"""``fedscan certs``: the federation's CA, the coordinator's TLS certificate, a site's key pair."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from fedscan.cli.console import console, fail
from fedscan.common.certs import (
    LOOPBACK_HOSTS,
    KeyPair,
    init_ca,
    issue_server_certificate,
    site_key_pair,
)
from fedscan.common.errors import FedscanError

certs_app = typer.Typer(
    help="Keys and certificates: CA, coordinator TLS, site authentication.", no_args_is_help=True
)
Force = Annotated[
    bool,
    typer.Option("--force", help="Replace existing files (whoever uses them must be updated)."),
]


@certs_app.command("init")
def init(
    out: Annotated[
        Path, typer.Option(help="Folder for ca.crt and ca.key (keep ca.key offline).")
    ] = Path("certs"),
    name: Annotated[str, typer.Option(help="The CA's common name.")] = "fedscan federation CA",
    force: Force = False,
) -> None:
    """Create the federation's certificate authority (the coordinator operator runs this once)."""
    _report(
        lambda: init_ca(out, name=name, force=force),
        "Give ca.crt to every site (site.toml: ca-certificate); keep ca.key off networked "
        "machines.",
    )


@certs_app.command("server")
def server(
    host: Annotated[
        list[str], typer.Option(help="DNS name or IP address sites dial; repeat for each.")
    ],
    ca: Annotated[Path, typer.Option(help="Folder holding ca.crt and ca.key.")] = Path("certs"),
    out: Annotated[Path, typer.Option(help="Folder for server.crt and server.key.")] = Path(
        "certs"
    ),
    force: Force = False,
) -> None:
    """Issue the coordinator's TLS certificate, signed by the federation CA."""
    _report(
        lambda: issue_server_certificate(ca, out, hosts=host, force=force),
        f"It covers {', '.join(dict.fromkeys([*host, *LOOPBACK_HOSTS]))} (loopback is always "
        "included: the coordinator's own commands use it). Point coordinator.toml's [tls] at "
        "these two files.",
    )


@certs_app.command("site")
def site(
    name: Annotated[str, typer.Argument(help="The site's name, e.g. st-marys.")],
    out: Annotated[Path, typer.Option(help="Folder for NAME.key and NAME.pub.")] = Path("keys"),
    force: Force = False,
) -> None:
    """Create a site's authentication key pair (the hospital runs this; only NAME.pub leaves the
    site)."""
    _report(
        lambda: site_key_pair(out, name, force=force),
        f"Send {name}.pub to the coordinator operator (`fedscan server sites add {name} "
        f"{name}.pub`); "
        f"{name}.key stays here (site.toml: private-key).",
    )


def _report(make: Callable[[], KeyPair], advice: str) -> None:
    try:
        pair = make()
    except (FedscanError, OSError) as exc:
        raise fail(str(exc)) from None
    # markup=False: the advice names TOML sections such as [tls], which rich would take for tags.
    console.print(
        f"wrote {pair.public}\nwrote {pair.private} (mode 0600)\n{advice}",
        highlight=False,
        markup=False,
        soft_wrap=True,  # paths whole, for copying
    )
