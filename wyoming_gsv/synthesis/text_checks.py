"""Request text checks done before any work is queued: is there anything to say at all."""

from __future__ import annotations


def has_speakable(text: str) -> bool:
    """At least one letter or digit (punctuation alone has nothing to say)."""
    return any(char.isalnum() for char in text)
