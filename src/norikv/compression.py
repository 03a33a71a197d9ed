"""Value compression as nori-wal stores it (FORMAT.md).

* LZ4: ``varint(original_length)`` followed by one raw LZ4 *block*.
* Zstd: one complete zstd frame (level 3 when norikv writes it).

Decompression never trusts a claimed size blindly: an LZ4 block can expand at
most 255-fold, so a claimed original length beyond that is corruption; a zstd
frame is decompressed with an output limit (:data:`MAX_ZSTD_RATIO` times the
stored size, at least 64 MiB) and must produce exactly what its header claims.
"""

from __future__ import annotations

import enum
import threading

import lz4.block

try:  # Python 3.14+ ships zstd in the standard library.
    from compression import zstd as _std_zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the interpreter
    _std_zstd = None
import zstandard as _zstandard

from norikv.errors import CorruptionError

__all__ = ["Compression", "compress", "decompress"]

MAX_LZ4_RATIO = 255
MAX_ZSTD_RATIO = 1024
_ZSTD_FLOOR = 64 << 20

# zstandard's compressor and decompressor objects must not be used by two
# threads at once (a writer thread and the background compactor both
# compress: shared objects gave ZstdError, heap corruption and segfaults), so
# each thread gets its own.
_zstd_local = threading.local()


def _zstd_c() -> _zstandard.ZstdCompressor:
    c = getattr(_zstd_local, "c", None)
    if c is None:
        c = _zstd_local.c = _zstandard.ZstdCompressor(level=3)
    return c


def _zstd_d() -> _zstandard.ZstdDecompressor:
    d = getattr(_zstd_local, "d", None)
    if d is None:
        d = _zstd_local.d = _zstandard.ZstdDecompressor()
    return d


class Compression(enum.IntEnum):
    """Compression of a record's value (flags bits 2-3)."""

    NONE = 0
    LZ4 = 1
    ZSTD = 2

    @classmethod
    def parse(cls, value: object) -> Compression:
        """Accepts a Compression, its int value, a name ('lz4', 'zstd', 'none') or None."""
        if value is None:
            return cls.NONE
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f"unknown compression {value!r}; use 'lz4', 'zstd' or None") from None
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(f"unknown compression {value!r}") from None
        raise TypeError(f"compression must be a Compression, a name or None, not {type(value).__name__}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def compress(kind: int, value: bytes) -> bytes:
    """The stored form of ``value`` under compression ``kind`` (1 LZ4, 2 Zstd)."""
    if kind == 1:
        return _varint(len(value)) + lz4.block.compress(value, store_size=False)
    if kind == 2:
        return _zstd_c().compress(value)
    return value


def decompress(kind: int, stored: bytes) -> bytes:
    """The original value from its stored form; CorruptionError when it is not valid."""
    if kind == 1:
        n = 0
        shift = 0
        pos = 0
        while True:
            if pos >= len(stored) or shift >= 64:
                raise CorruptionError("LZ4 value: bad length prefix")
            b = stored[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        block = stored[pos:]
        if n > MAX_LZ4_RATIO * len(block) + 16:
            raise CorruptionError(f"LZ4 value claims {n} bytes from a {len(block)}-byte block")
        if n == 0:
            return b""
        try:
            out = lz4.block.decompress(block, uncompressed_size=n)
        except lz4.block.LZ4BlockError as exc:
            raise CorruptionError(f"LZ4 value does not decompress: {exc}") from None
        if len(out) != n:
            raise CorruptionError(f"LZ4 value decompressed to {len(out)} bytes, {n} claimed")
        return out
    if kind == 2:
        limit = max(_ZSTD_FLOOR, MAX_ZSTD_RATIO * len(stored))
        try:
            params = _zstandard.get_frame_parameters(stored)
            claimed = params.content_size
            if claimed != _zstandard.CONTENTSIZE_UNKNOWN and claimed > limit:
                raise CorruptionError(f"zstd value claims {claimed} bytes, over the limit {limit}")
            # Feed the input in small slices so the output stays bounded, and
            # insist on exactly one complete frame (a stream reader returns a
            # truncated frame's partial output without complaint).
            parts = []
            total = 0
            dobj = _zstd_d().decompressobj()
            i = 0
            for i in range(0, len(stored), 1024):
                chunk = dobj.decompress(stored[i:i + 1024])
                parts.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise CorruptionError("zstd value decompresses past its limit")
                if dobj.eof:
                    break
            if not dobj.eof or dobj.unused_data or i + 1024 < len(stored):
                raise CorruptionError("zstd value is not exactly one complete frame")
            out = b"".join(parts)
        except _zstandard.ZstdError as exc:
            raise CorruptionError(f"zstd value does not decompress: {exc}") from None
        if claimed != _zstandard.CONTENTSIZE_UNKNOWN and len(out) != claimed:
            raise CorruptionError(f"zstd value decompressed to {len(out)} bytes, {claimed} claimed")
        return out
    if kind == 0:
        return stored
    raise CorruptionError(f"invalid compression bits {kind}")
