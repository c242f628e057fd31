"""What this machine's network looks like: its own addresses, the address it reaches the world
from, and what a host name resolves to (the mail host name check, the wizard)."""
from __future__ import annotations

import ipaddress
import json
import socket
import subprocess

# TEST-NET-2 (RFC 5737): connecting a UDP socket towards it sends nothing, but makes the kernel
# pick the source address of the default route
_ROUTE_PROBE = "198.51.100.1"


def resolve(name: str) -> list[str]:
    """The addresses the system resolver (files, then DNS, as nsswitch.conf says) gives for
    `name`; an empty list when it does not resolve."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos))


def local_addresses() -> set[str]:
    """Every address configured on this machine's interfaces (ip -j addr), loopback included."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=10, check=True)
        links = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return set()
    return {str(ipaddress.ip_address(a["local"])) for link in links for a in link.get("addr_info", [])
            if "local" in a}


def is_loopback(address: str) -> bool:
    """A loopback address, or the name localhost; any other name is taken as reachable."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address.lower().rstrip(".") == "localhost"


def primary_address() -> str | None:
    """The IPv4 address this machine reaches other networks from (its default route's source),
    or None without a default route."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((_ROUTE_PROBE, 9))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address == "0.0.0.0" or is_loopback(address) else address
