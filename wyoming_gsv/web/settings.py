"""Where the voice studio listens and who may use it: one place for each default."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_UPLOAD_MB = 50
# Home Assistant's Supervisor proxies ingress (sidebar panel) requests from this address.
INGRESS_GATEWAY = "172.30.32.2"
TOKEN_HEADER = "X-Studio-Token"
TOKEN_COOKIE = "studio_token"
# Sent by the page with every change. A custom header makes browsers ask (CORS preflight) before a
# cross-site request, which the studio never allows: another website cannot add or delete voices.
PAGE_HEADER = "X-Studio-Page"


@dataclass(frozen=True)
class WebSettings:
    host: str = DEFAULT_HOST
    port: int = 8099
    token: str | None = None  # required from clients when set (header or cookie)
    ingress_only: bool = False  # accept only the ingress gateway and loopback (the add-on)
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 1024 * 1024

    def admits(self, remote: str) -> bool:
        """Whether a client at this address may connect at all (the token is checked after)."""
        if not self.ingress_only:
            return True
        address = remote[7:] if remote.startswith("::ffff:") else remote  # IPv4 on a dual-stack socket
        return address == INGRESS_GATEWAY or is_loopback(address)


def parse_web_address(text: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[V6]:PORT` -> (host, port); raises ValueError with the reason."""
    host, port_text = DEFAULT_HOST, text
    if text.startswith("["):
        closing = text.find("]:")
        if closing < 0:
            raise ValueError(f"{text!r}: write an IPv6 host as [ADDRESS]:PORT")
        host, port_text = text[1:closing], text[closing + 2 :]
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number, e.g. 8099 or 127.0.0.1:8099") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be 0-65535")
    if not host:
        raise ValueError(f"{text!r}: empty host")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything
