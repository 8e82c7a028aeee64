"""A receiver's answer made harmless: text that every store holds and every screen and log
shows as it is.

Everything ccpush keeps of an answer (its body's excerpt, its reason phrase, its Location,
the texts of the errors it caused) passes through ``answer_text`` in the sender that read
it (``ccpush.senders.base.make_outcome``), before it goes anywhere else: the dispatcher, a push
process's parent, the store, the logs, the console. There:

* bytes are read as UTF-8, each invalid byte becoming U+FFFD (the replacement character);
  so does a lone surrogate in a text (aiohttp keeps a header's undecodable bytes so);
* a control character (C0, DEL, C1) and the line and paragraph separators U+2028 and
  U+2029 are written as Python writes them in a string: ``\\x00``, ``\\x1b``, ``\\n``,
  ``\\x85``, ``\\u2028``. Tab, CR and LF are kept in a body's excerpt (``lines``) and
  escaped in any other text, so that an error stays on one line of a log. A backslash the
  receiver sent is left as it is: the text is for people to read, not to decode;
* at most ``limit`` characters are kept.

PostgreSQL's ``text`` refuses NUL, and both stores refuse lone surrogates: a text made here
is stored by either, and cannot forge a log line or drive a terminal.
"""

from __future__ import annotations

import re
from typing import Final

UNSTORABLE_ANSWER: Final = "the receiver's answer could not be stored"
"""The error written, without an excerpt, in place of an attempt's outcome the store
refused (``ccpush.dispatcher``); the metrics count the attempts written with it."""

_CONTROLS: Final = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029"
"""Escaped in every text: the control characters but tab, LF and CR, and the separators."""
_SURROGATES: Final = "\ud800-\udfff"
_ESCAPED: Final = re.compile(f"[\t\n\r{_CONTROLS}{_SURROGATES}]")
_ESCAPED_IN_LINES: Final = re.compile(f"[{_CONTROLS}{_SURROGATES}]")


def answer_text(raw: str | bytes, limit: int | None = None, *, lines: bool = False) -> str:
    """``raw``, from a receiver's answer, as text safe to store and show (see the module):
    at most ``limit`` characters; tab, CR and LF kept if ``lines``."""
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "replace")
    else:  # each character is escaped alone: what the cut keeps is what it would have kept
        text = raw if limit is None else raw[:limit]
    escaped = _ESCAPED_IN_LINES if lines else _ESCAPED
    if escaped.search(text) is not None:
        text = escaped.sub(_escape, text)
    return text if limit is None or len(text) <= limit else text[:limit]


_SHORT_ESCAPES: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(found: re.Match[str]) -> str:
    char = found.group()
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return "\ufffd"
    if code < 0x100:
        return _SHORT_ESCAPES.get(char) or f"\\x{code:02x}"
    return f"\\u{code:04x}"
