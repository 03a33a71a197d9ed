"""Value compression as nori-wal stores it (FORMAT.md).

* LZ4: ``varint(original_length)`` followed by one raw LZ4 *block*.
* Zstd: one complete zstd frame. norikv writes it as nori-wal does
  (``zstd::encode_all(value, 3)``): a streaming compressor at level 3, so the
  frame has a window descriptor and no content size (an empty value: a
  single-segment frame of size 0), and the bytes are nori-wal's.

Decompression is bounded by ``max_size`` (:data:`DEFAULT_MAX_VALUE_SIZE`
unless the caller passes a store's or Wal's ``max_value_size``), whatever the
stored bytes claim or omit. An LZ4 length prefix over it (or over the 255-fold
expansion an LZ4 block allows) is corruption before anything is allocated. A
zstd frame whose content size is over it is corruption at once; otherwise
its block headers are read first (a raw or RLE block says its size, a
compressed block makes at most 128 KiB): when they bound the output within
``max_size`` the frame is decompressed into one buffer of that bound, else
slice by slice (runs of whole blocks making at most 4 MiB each), stopping as
soon as the output passes ``max_size``. Frames with and without a content size
are read; one that claims a size must produce exactly that.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterator

import lz4.block

try:  # Python 3.14+ ships zstd in the standard library.
    from compression import zstd as _std_zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the interpreter
    _std_zstd = None
import zstandard as _zstandard

from norikv.errors import CorruptionError

__all__ = ["Compression", "compress", "decompress", "DEFAULT_MAX_VALUE_SIZE"]

#: The largest value (uncompressed) that ``put``/``append`` accept and that a
#: read decompresses, unless ``max_value_size`` says otherwise: 256 MiB.
DEFAULT_MAX_VALUE_SIZE = 256 << 20

MAX_LZ4_RATIO = 255
# No zstd block decompresses to more than BLOCKSIZE_MAX (128 KiB).
_ZSTD_BLOCK_MAX = _zstandard.BLOCKSIZE_MAX
_ZSTD_SLICE = 4 << 20  # most a slice of a frame fed to the decompressor may produce

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
        # A stream whose size is not given up front, as nori-wal's
        # zstd::encode_all writes it (same frame header, same bytes).
        c = _zstd_c().compressobj()
        return c.compress(value) + c.flush()
    return value


def decompress(kind: int, stored: bytes, max_size: int = DEFAULT_MAX_VALUE_SIZE) -> bytes:
    """The original value from its stored form. CorruptionError when it is not
    valid or would be larger than ``max_size`` bytes (never allocating much
    more than that, whatever the stored form claims)."""
    if kind == 1:
        return _lz4_decompress(stored, max_size)
    if kind == 2:
        return _zstd_decompress(stored, max_size)
    if kind == 0:
        return stored
    raise CorruptionError(f"invalid compression bits {kind}")


def _lz4_decompress(stored: bytes, max_size: int) -> bytes:
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
    if n > max_size:
        raise CorruptionError(f"LZ4 value claims {n} bytes, over max_value_size {max_size}")
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


def _zstd_blocks(stored: bytes, start: int) -> Iterator[tuple[int, int]]:
    """For each block of the zstd frame ``stored`` (its first block at
    ``start``): the offset just past the block (and past the checksum after
    the last one) and the most the block can decompress to. Raw and RLE
    blocks say their size; a compressed block gives at most _ZSTD_BLOCK_MAX."""
    n = len(stored)
    pos = start
    while True:
        if pos + 3 > n:
            raise CorruptionError("zstd value is not exactly one complete frame (cut short)")
        h = stored[pos] | stored[pos + 1] << 8 | stored[pos + 2] << 16
        kind = (h >> 1) & 3
        size = h >> 3
        if kind == 0:  # raw
            pos += 3 + size
            most = size
        elif kind == 1:  # RLE: one byte repeated size times
            pos += 4
            most = size
        elif kind == 2:  # compressed
            pos += 3 + size
            most = _ZSTD_BLOCK_MAX
        else:
            raise CorruptionError("zstd value has a block of the reserved type")
        last = h & 1
        if last and stored[4] & 0x04:  # Content_Checksum_flag of the frame header
            pos += 4
        if pos > n:
            raise CorruptionError("zstd value is not exactly one complete frame (cut short)")
        yield pos, most
        if last:
            return


def _zstd_decompress(stored: bytes, max_size: int) -> bytes:
    try:
        claimed = _zstandard.get_frame_parameters(stored).content_size
        if claimed != _zstandard.CONTENTSIZE_UNKNOWN and claimed > max_size:
            raise CorruptionError(f"zstd value claims {claimed} bytes, over max_value_size {max_size}")
        start = _zstandard.frame_header_size(stored)
        bound = 0
        end = start
        for end, most in _zstd_blocks(stored, start):  # noqa: B007 (end is read after the loop)
            bound += most
            if bound > max_size:
                break
        else:
            # The block headers bound the output within max_size: decompress
            # in one go into one buffer of that bound.
            if end != len(stored):
                raise CorruptionError("zstd value is not exactly one complete frame")
            out = _zstd_d().decompress(stored, max_output_size=max(bound, 1))
            if len(out) > max_size:  # (cannot happen: the blocks bound it)
                raise CorruptionError(f"zstd value decompresses past max_value_size {max_size}")
            return out
        # The blocks may produce more than max_size (a bomb, or a value near
        # the bound whose compressed blocks produce less than the most they
        # may): decompress slice by slice, each slice a run of whole blocks
        # producing at most about _ZSTD_SLICE bytes, and stop past max_size.
        dobj = _zstd_d().decompressobj()
        parts = []
        total = 0
        fed = 0
        pending = 0
        for end, most in _zstd_blocks(stored, start):
            pending += most
            if pending >= _ZSTD_SLICE:
                chunk = dobj.decompress(stored[fed:end])
                fed = end
                pending = 0
                total += len(chunk)
                if total > max_size:
                    raise CorruptionError(f"zstd value decompresses past max_value_size {max_size}")
                parts.append(chunk)
        chunk = dobj.decompress(stored[fed:])
        total += len(chunk)
        if total > max_size:
            raise CorruptionError(f"zstd value decompresses past max_value_size {max_size}")
        parts.append(chunk)
        # Exactly one complete frame: bytes after it are no value.
        if not dobj.eof or dobj.unused_data:
            raise CorruptionError("zstd value is not exactly one complete frame")
        out = b"".join(parts)
    except _zstandard.ZstdError as exc:
        raise CorruptionError(f"zstd value does not decompress: {exc}") from None
    if claimed != _zstandard.CONTENTSIZE_UNKNOWN and len(out) != claimed:
        raise CorruptionError(f"zstd value decompressed to {len(out)} bytes, {claimed} claimed")
    return out
