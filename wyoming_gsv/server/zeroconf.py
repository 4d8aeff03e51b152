"""Advertise the server as `_wyoming._tcp.local.` with a real IP (Home Assistant drops 0.0.0.0)."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

_LOGGER = logging.getLogger(__name__)

SERVICE_TYPE = "_wyoming._tcp.local."


def advertise_address(bind_host: str, explicit: str | None = None) -> str:
    """The IP to advertise: `--zeroconf-host`, else the bind address if it is a real one,
    else the address of the interface that routes toward the mDNS group."""
    if explicit:
        return explicit
    try:
        if not ipaddress.ip_address(bind_host).is_unspecified:
            return bind_host
    except ValueError:
        pass  # a host name: resolve below
    else:
        return _default_route_address()
    try:
        return socket.gethostbyname(bind_host)
    except OSError:
        return _default_route_address()


def _default_route_address() -> str:
    # A UDP connect sends nothing; it only asks the kernel which local address would be used.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("224.0.0.251", 5353))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


@dataclass
class ZeroconfAdvertiser:
    """Registers one service; `interfaces` limits where mDNS is sent (tests: loopback only)."""

    name: str
    port: int
    address: str
    interfaces: list[str] | None = None
    _zeroconf: AsyncZeroconf | None = None
    _info: AsyncServiceInfo | None = None

    @property
    def service_name(self) -> str:
        return f"{self.name}.{SERVICE_TYPE}"

    async def start(self) -> None:
        if ipaddress.ip_address(self.address).is_unspecified:
            raise ValueError(f"cannot advertise the unspecified address {self.address}; use --zeroconf-host")
        kwargs = {"interfaces": self.interfaces} if self.interfaces is not None else {}
        self._zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only, **kwargs)
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            self.service_name,
            addresses=[socket.inet_aton(self.address)],
            port=self.port,
            server=f"{self.name}.local.",
        )
        await self._zeroconf.async_register_service(self._info)
        _LOGGER.info("Zeroconf: advertising %s at %s:%d", self.service_name, self.address, self.port)

    async def stop(self) -> None:
        if self._zeroconf is None:
            return
        if self._info is not None:
            await self._zeroconf.async_unregister_service(self._info)
        await self._zeroconf.async_close()
        self._zeroconf = None
