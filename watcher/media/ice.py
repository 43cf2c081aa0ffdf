"""Make WebRTC work on hosts whose only interface is loopback.

aioice gathers host candidates from every interface *except* loopback
(``aioice.ice.get_host_addresses`` skips ``127.0.0.1`` and ``::1``). Two
processes on one machine therefore connect over its non-loopback interface,
and a host (or container, or network namespace) with only ``lo`` gathers no
candidate at all: ICE fails and no frame ever arrives.

The fallback: :func:`ensure_ice_candidates`, called by the WHIP publisher and
the ingest before they create a peer connection, wraps aioice's
``get_host_addresses`` so that it also offers the loopback addresses, but
only when

* the host has no non-loopback IPv4/IPv6 address (checked on every
  gathering, so an interface that comes up later is used as usual), or
* ``WATCHER_ICE_LOOPBACK=1`` is set (to force it, e.g. in tests).

Loopback candidates can only reach the same host, which is exactly the case
they are needed for. The patch touches nothing else, is installed at most
once and can be undone with :func:`restore_ice_candidates`.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os
from collections.abc import Callable

import aioice.ice
import ifaddr

log = logging.getLogger(__name__)

ENV_VAR = "WATCHER_ICE_LOOPBACK"
_MARK = "_watcher_loopback_fallback"

HostAddresses = Callable[[bool, bool], list[str]]


def loopback_forced() -> bool:
    """True when ``WATCHER_ICE_LOOPBACK`` asks for loopback candidates."""
    return os.environ.get(ENV_VAR, "").strip().lower() in {"1", "true", "yes", "on"}


def interface_addresses() -> list[str]:
    """Every IP address of the host's interfaces (IPv6 without scope)."""
    addresses: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            addresses.append(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return addresses


def has_non_loopback_address() -> bool:
    """Whether aioice can gather a usable host candidate without help."""
    for address in interface_addresses():
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            continue
        if not parsed.is_loopback and not parsed.is_link_local:
            return True
    return False


def loopback_needed() -> bool:
    return loopback_forced() or not has_non_loopback_address()


def ensure_ice_candidates() -> bool:
    """Install the loopback fallback if this host needs it; True when it is installed.

    Idempotent and cheap: call it before creating every peer connection.
    """
    if getattr(aioice.ice.get_host_addresses, _MARK, False):
        return True
    if not loopback_needed():
        return False
    original: HostAddresses = aioice.ice.get_host_addresses

    @functools.wraps(original)
    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = list(original(use_ipv4, use_ipv6))
        if addresses and not loopback_forced():
            return addresses
        present = set(interface_addresses())
        for loopback, wanted in (("127.0.0.1", use_ipv4), ("::1", use_ipv6)):
            if wanted and loopback in present and loopback not in addresses:
                addresses.append(loopback)
        return addresses

    setattr(get_host_addresses, _MARK, True)
    get_host_addresses._watcher_original = original  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses
    reason = f"{ENV_VAR} is set" if loopback_forced() else "the host has only loopback"
    log.info("ICE: offering loopback host candidates (%s)", reason)
    return True


def restore_ice_candidates() -> None:
    """Undo :func:`ensure_ice_candidates` (for tests)."""
    current = aioice.ice.get_host_addresses
    original = getattr(current, "_watcher_original", None)
    if original is not None:
        aioice.ice.get_host_addresses = original
