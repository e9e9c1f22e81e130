"""Separate hosts on one machine: network namespaces on a private bridge (``../shared/netns.md``).

Each host is a namespace with one veth into a bridge namespace and one address of a random
private /24 that exists only inside these namespaces; there is no default route, so nothing in
them can reach anything else. Names carry a random suffix so parallel or leftover runs cannot
collide. :meth:`Hosts.close` stops every process still inside a namespace (SIGKILL, bounded) and
deletes the namespaces, also when the test failed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

IP = shutil.which("ip") or "/usr/sbin/ip"


def unavailable() -> str:
    """Why namespaces cannot be made here ('' when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if not Path(IP).is_file():
        return "iproute2's `ip` is not installed"
    probe = f"fsprobe{secrets.token_hex(3)}"
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return ""


def _ip(*args: str, netns: str | None = None) -> None:
    command = [IP, *(["netns", "exec", netns, IP] if netns else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")


class Hosts:
    """Namespaces named ``host`` → address, all on one bridge."""

    def __init__(self, names: list[str]) -> None:
        suffix = secrets.token_hex(3)
        self.subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250) + 1}"
        self.bridge = f"fs{suffix}br"
        self.netns = {name: f"fs{suffix}{index}" for index, name in enumerate(names)}
        self.address = {name: f"{self.subnet}.{10 + index}" for index, name in enumerate(names)}
        self._made: list[str] = []
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _build(self) -> None:
        _ip("netns", "add", self.bridge)
        self._made.append(self.bridge)
        _ip("link", "add", "br0", "type", "bridge", netns=self.bridge)
        _ip("link", "set", "br0", "up", netns=self.bridge)
        for name, netns in self.netns.items():
            _ip("netns", "add", netns)
            self._made.append(netns)
            veth = f"v{netns}"
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("link", "set", veth, "netns", self.bridge)
            _ip("link", "set", veth, "master", "br0", "up", netns=self.bridge)
            _ip("link", "set", "lo", "up", netns=netns)
            _ip("addr", "add", f"{self.address[name]}/24", "dev", "eth0", netns=netns)
            _ip("link", "set", "eth0", "up", netns=netns)

    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace (``ip netns exec`` execs it: same PID)."""
        return [IP, "netns", "exec", self.netns[host], *argv]

    def pids(self, netns: str) -> list[int]:
        listed = subprocess.run(
            [IP, "netns", "pids", netns], capture_output=True, text=True, timeout=30
        )
        return [int(pid) for pid in listed.stdout.split()]

    def leftovers(self) -> dict[str, list[int]]:
        """Processes still running inside each host's namespace."""
        return {host: pids for host, netns in self.netns.items() if (pids := self.pids(netns))}

    def close(self) -> None:
        """SIGKILL what is left inside (bounded), then delete every namespace this made."""
        deadline = time.monotonic() + 30
        for netns in self._made:
            while (pids := self.pids(netns)) and time.monotonic() < deadline:
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.2)
        for netns in reversed(self._made):
            subprocess.run([IP, "netns", "del", netns], capture_output=True, timeout=30)
        self._made.clear()
