"""What one client may cost the server: frame sizes, open connections, idle time (the one place
for these defaults; the CLI flags read them from here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FrameLimits:
    """A TTS server receives text, never audio: 1 MiB of event data is far beyond any request."""

    max_data_bytes: int = 1024 * 1024
    max_payload_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class ConnectionLimits:
    frames: FrameLimits = field(default_factory=FrameLimits)
    max_connections: int = 64  # one more is answered with an error and closed at once
    # HA opens a connection per request and per describe poll; one that sends nothing for this
    # long while no answer is being made for it (an open stream included) is closed.
    idle_timeout: float = 60.0
