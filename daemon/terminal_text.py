"""Text from outside, made safe to print on a terminal. Called by `rollbackd status`
(`daemon.live.print_status`), which shows annotation values anyone with `run.services.update` can
write.

Control characters (ESC starts the sequences that recolour, retitle, move the cursor or rewrite what
is already on screen), C1 controls, line and paragraph separators and invisible format characters
(bidirectional overrides, zero-width marks) are shown as `\\xNN` / `\\uNNNN` escapes, so nothing in
a value can act on the terminal and tampering stays visible. Credentials are redacted and the text
is cut to `max_chars`. Pure.
"""
from __future__ import annotations

import unicodedata

from daemon.core.redact import redact

_UNSAFE = ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object, max_chars: int = 500) -> str:
    """`text` as one line of plain characters: unsafe ones escaped, credentials redacted, capped."""
    value = redact(str(text)[: max_chars * 2])
    out = "".join(_escaped(ch) if unicodedata.category(ch) in _UNSAFE else ch for ch in value)
    return out if len(out) <= max_chars else out[: max_chars - 1] + "…"


__all__ = ["printable"]
