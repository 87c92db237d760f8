"""Whether a host or a ``host:port`` address stays on this machine (loopback)."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` or ``::1`` (brackets allowed)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_address(address: str) -> bool:
    """``host:port`` (``[::1]:port`` for IPv6) or a bare host on this machine."""
    host = address.rsplit(":", 1)[0] if ":" in address and not address.endswith("]") else address
    return is_loopback_host(host) or is_loopback_host(address)
