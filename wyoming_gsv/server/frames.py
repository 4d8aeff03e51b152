"""Reading Wyoming frames from an untrusted peer, with every length bounded before it is buffered.

A frame is a JSON header line, then `data_length` bytes of JSON merged into the header's `data`,
then `payload_length` bytes of payload. The wyoming library's reader buffers whatever a header
announces and raises on malformed headers; this one refuses both with a FrameError instead.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wyoming.event import Event

from .limits import FrameLimits

# asyncio's StreamReader default: a header line longer than this is refused by readline().
MAX_HEADER_BYTES = 64 * 1024


class FrameError(Exception):
    """A frame the connection cannot go on after; `code` goes into the Wyoming `error` event."""

    def __init__(self, message: str, code: str = "bad-frame") -> None:
        super().__init__(message)
        self.code = code


async def read_frame(reader: asyncio.StreamReader, limits: FrameLimits) -> Event | None:
    """The next event, or None at a clean end of input (EOF between frames)."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError, re-raised by readline as ValueError
        raise FrameError(f"event header is longer than {MAX_HEADER_BYTES} bytes") from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise FrameError("input ended inside an event header", code="truncated-frame")
    header = _json_object(line, "event header")
    event_type = header.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise FrameError("event header has no 'type' string")
    data = header.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise FrameError("event 'data' is not an object")

    data_length = _length(header, "data_length", limits.max_data_bytes)
    if data_length:
        data.update(_json_object(await _read_exactly(reader, data_length, "data"), "event data"))
    payload_length = _length(header, "payload_length", limits.max_payload_bytes)
    payload = await _read_exactly(reader, payload_length, "payload") if payload_length else None
    _check_encodable(data)
    return Event(type=event_type, data=data, payload=payload)


def _length(header: dict[str, Any], field: str, limit: int) -> int:
    value = header.get(field)
    if value is None:
        return 0
    # bool is an int subclass: `true` is not a length either
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FrameError(f"{field} must be a whole number of bytes, got {_short(value)}")
    if value > limit:
        raise FrameError(f"{field} {_short(value)} is over the limit of {limit} bytes", code="frame-too-large")
    return value


async def _read_exactly(reader: asyncio.StreamReader, length: int, what: str) -> bytes:
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as err:
        raise FrameError(
            f"input ended inside the event {what} ({len(err.partial)} of {length} bytes)", code="truncated-frame"
        ) from None


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        reason = "nested too deeply" if isinstance(err, RecursionError) else "not valid JSON"
        raise FrameError(f"{what} is {reason}") from None
    if not isinstance(value, dict):
        raise FrameError(f"{what} is not a JSON object")
    return value


def _check_encodable(data: dict[str, Any]) -> None:
    """JSON allows escapes of lone surrogates ("\\ud800") that no reply could echo back in UTF-8."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError("event data has text that is not valid Unicode (a lone surrogate)") from None
    except (ValueError, RecursionError):  # e.g. NaN is fine for dumps; nesting is bounded above
        raise FrameError("event data cannot be encoded") from None


def _short(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 24 else text[:21] + "..."
    return f"a JSON {type(value).__name__}"
