"""Keep ICE on loopback when talking to a local peer.

aiortc asks a public STUN server by default and aioice gathers every interface *except*
127.0.0.1, so two aiortc peers on one machine would pair over eth0 and ping Google first.
Against a loopback emulator we want neither: no STUN (``rtc_configuration``) and host
candidates on 127.0.0.1 only (``loopback_candidates``).

aioice 0.13 has no option for the interface list, so we wrap its module-level
``get_host_addresses`` once; the wrapper only changes behaviour inside a
``loopback_candidates()`` block (a context variable, so concurrent peers that talk to the
real API in the same process keep aioice's normal gathering).
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Iterator
from typing import Any

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

_loopback_only: contextvars.ContextVar[bool] = contextvars.ContextVar("rtkit_ice_loopback", default=False)
_original = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    if _loopback_only.get():
        return ["127.0.0.1"] if use_ipv4 else ["::1"]
    return _original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)


aioice.ice.get_host_addresses = _host_addresses


@contextlib.contextmanager
def loopback_candidates(enabled: bool = True) -> Iterator[None]:
    """Within this block (and tasks started in it), ICE gathers 127.0.0.1 only."""
    token = _loopback_only.set(enabled)
    try:
        yield
    finally:
        _loopback_only.reset(token)


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: hosts whose peers live on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def rtc_configuration(ice_servers: list[dict[str, Any]] | None = None) -> RTCConfiguration:
    """An explicit ICE configuration: no servers unless given (never aiortc's implicit STUN)."""
    servers = [RTCIceServer(**server) for server in ice_servers or []]
    return RTCConfiguration(iceServers=servers)
