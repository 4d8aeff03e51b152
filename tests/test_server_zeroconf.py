"""Zeroconf: advertise `_wyoming._tcp.local.` with a real IP. Loopback ONLY: never multicast elsewhere."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from wyoming_gsv.server.zeroconf import SERVICE_TYPE, ZeroconfAdvertiser, advertise_address

LOOPBACK = ["127.0.0.1"]


def test_advertise_address_is_never_unspecified() -> None:
    assert advertise_address("0.0.0.0", "192.168.1.20") == "192.168.1.20"
    assert advertise_address("127.0.0.1") == "127.0.0.1"
    detected = advertise_address("0.0.0.0")
    assert not ipaddress.ip_address(detected).is_unspecified
    assert not ipaddress.ip_address(advertise_address("localhost")).is_unspecified


async def test_refuses_to_advertise_unspecified_address() -> None:
    advertiser = ZeroconfAdvertiser(name="gsv-test", port=10200, address="0.0.0.0", interfaces=LOOPBACK)
    with pytest.raises(ValueError, match="zeroconf-host"):
        await advertiser.start()


@pytest.mark.zeroconf
async def test_registered_service_is_found_on_loopback() -> None:
    advertiser = ZeroconfAdvertiser(name="gsv-zc-test", port=10234, address="127.0.0.1", interfaces=LOOPBACK)
    await advertiser.start()
    browser_zc = AsyncZeroconf(interfaces=LOOPBACK, ip_version=IPVersion.V4Only)
    found: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_change(zeroconf, service_type, name, state_change) -> None:  # names required by zeroconf
        if state_change is ServiceStateChange.Added and name == advertiser.service_name and not found.done():
            found.set_result(name)

    browser = AsyncServiceBrowser(browser_zc.zeroconf, [SERVICE_TYPE], handlers=[on_change])
    try:
        name = await asyncio.wait_for(found, 10)
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        assert await info.async_request(browser_zc.zeroconf, 3000)
        assert info.parsed_addresses() == ["127.0.0.1"]
        assert info.port == 10234
    finally:
        await browser.async_cancel()
        await browser_zc.async_close()
        await advertiser.stop()
