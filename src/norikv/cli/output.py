"""How a command's results reach the user: data on stdout, informational
lines, one-line errors and exit codes; keys and values shown as text or JSON."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_DAMAGE = 1
EXIT_USAGE = 2
EXIT_STORE = 3


class CliError(Exception):
    """A failure reported as one line on stderr with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_STORE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def out(data: bytes | str) -> None:
    """Data on stdout (text in UTF-8, undecodable bytes as they came)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    sys.stdout.buffer.write(data)


def note(args: argparse.Namespace, text: str) -> None:
    """An informational line on stdout, suppressed by --quiet."""
    if not getattr(args, "quiet", False):
        out(text + "\n")


def text(b: bytes) -> str:
    """Bytes as one line of text: UTF-8 where it decodes; backslash, tab, CR,
    LF, other control characters and undecodable bytes escaped (\\\\, \\t, \\r,
    \\n, \\xNN)."""
    s = b.decode("utf-8", "surrogateescape")
    if s.isprintable() and "\\" not in s:
        return s
    parts = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            parts.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            parts.append("\\\\")
        elif ch == "\t":
            parts.append("\\t")
        elif ch == "\n":
            parts.append("\\n")
        elif ch == "\r":
            parts.append("\\r")
        elif o < 0x20 or o == 0x7F:
            parts.append(f"\\x{o:02x}")
        else:
            parts.append(ch)
    return "".join(parts)


def json_field(obj: dict[str, Any], name: str, b: bytes) -> None:
    """name: text when the bytes are UTF-8, else name_base64: base64."""
    try:
        obj[name] = b.decode("utf-8")
    except UnicodeDecodeError:
        obj[name + "_base64"] = base64.b64encode(b).decode("ascii")


def encode_value(b: bytes, enc: str) -> bytes:
    """A value printed in the command's --hex/--base64 encoding (else raw)."""
    if enc == "hex":
        return b.hex().encode("ascii")
    if enc == "base64":
        return base64.b64encode(b)
    return b
