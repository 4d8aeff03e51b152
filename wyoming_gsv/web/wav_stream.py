"""Speech as a WAV the browser can start playing before it is complete."""

from __future__ import annotations

import struct

STREAM_SIZE = 0xFFFFFFFF - 36  # unknown length: the largest a RIFF header can say


def wav_header(rate: int, channels: int = 1, width: int = 2, data_bytes: int = STREAM_SIZE) -> bytes:
    """The 44-byte header of 16-bit PCM; for a stream the sizes say "as long as it goes"."""
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", min(0xFFFFFFFF, data_bytes + 36)),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * width, channels * width, width * 8),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )
