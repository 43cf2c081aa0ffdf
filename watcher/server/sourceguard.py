"""Where a pull source may point: public addresses only, unless the server allows more.

A pull source makes the server open a connection wherever the caller says: a
server-side request forgery path into the server's own network. By default the
source URL's host must resolve only to global addresses; loopback, private,
link-local (cloud metadata services live at 169.254.169.254), carrier-grade
NAT, multicast, reserved and unspecified addresses are refused with a 422.
``allow_private_sources`` lifts the rule (cameras on a LAN, the daemon's own
embedded server).

The check resolves the host once, before the decoder connects. The decoder
resolves it again, follows HTTP redirects and fetches HLS segments from
whatever hosts a playlist names; none of that is checked here. A server that
must not reach private addresses at all needs that enforced by the network
(a firewall or an egress proxy) too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from watcher.server.problems import StreamProblem

RESOLVE_TIMEOUT_SECONDS = 5.0
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public one (``"loopback"``, ...), or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata)"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-public"
    return None


async def check_source_host(url: str, *, allow_private: bool) -> None:
    """422 unless ``url``'s host resolves only to public addresses (or ``allow_private``).

    Never echoes the URL or the host: a source URL may carry credentials.
    """
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        raise StreamProblem(422, "the source url has an invalid port") from None
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = await _resolve(host, port)
    for address in addresses:
        kind = address_kind(address)
        if kind is not None:
            raise StreamProblem(
                422, f"the source url's host is a {kind} address, which this server does not "
                "connect to (start it with --allow-private-sources, or set "
                "allow_private_sources, to pull cameras on private networks)")


async def _resolve(host: str, port: int) -> list[IPAddress]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):  # UnicodeError: a label over 63 characters
        raise StreamProblem(
            422, "Could not connect to source url: its host name does not resolve") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        try:
            addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        except ValueError:
            continue
    if not addresses:
        raise StreamProblem(422, "Could not connect to source url: its host has no address")
    return addresses
