"""A seeded grammar of malformed Wyoming frames, shared by the fuzz test and the memory benchmark."""

from __future__ import annotations

import json
import random


def fuzzed_frame(rng: random.Random) -> bytes:
    """One frame from a grammar of the ways a header, data block and payload can go wrong; the
    event types are cheap ones (no synthesis), so the test stays bounded."""
    event_type = rng.choice(["ping", "describe", "synthesize", "synthesize-stop", "nonsense", 5, None, ""])
    header: dict = {"type": event_type} if event_type is not None else {}
    data_obj = rng.choice([{}, {"text": "hi"}, {"text": "\ud83d"}, {"voice": [1]}, [1], "s", None, {"a": {"b": []}}])
    if rng.random() < 0.5:
        header["data"] = data_obj
    data = b""
    if rng.random() < 0.5:
        data = rng.choice([b'{"text": "x"}', b"[1]", b"{", b"\xff\xfe", b"[" * 5000, b'{"t": "\\udc00"}', b"null"])
        header["data_length"] = rng.choice([len(data), len(data) + 7, -1, "3", 1.5, 2**40, None, True])
    payload = b""
    if rng.random() < 0.3:
        payload = b"\0" * rng.randrange(0, 64)
        header["payload_length"] = rng.choice([len(payload), -3, 2**33, "x", len(payload) * 2])
    line = json.dumps(header).encode() if rng.random() < 0.9 else json.dumps(list(header.items())).encode()
    cut = rng.random()
    if cut < 0.05:
        line = line[: rng.randrange(len(line))]  # EOF inside the header
    elif cut < 0.1:
        line = bytes(b ^ 0x20 if rng.random() < 0.1 else b for b in line)  # flipped bits
    # json.dumps writes the lone surrogate above as the escape "\\ud83d", as a client could.
    return line + b"\n" + data + payload
