"""An independent, pure-Python nori-wal record codec written from
/work/shared/FORMAT.md (docs/FORMAT.md), used as an oracle for norikv.

It deliberately does not import norikv: CRC32C comes from the ``crc32c``
package, LZ4 from ``lz4.block`` and Zstd from ``zstandard``.

Record layout::

    klen varint | vlen varint | flags u8 | [ttl_ms varint] | [term varint, index varint]
    | key | value (as stored) | crc32c u32 LE of everything before it
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import crc32c as _crc
import lz4.block
import zstandard

TOMBSTONE = 0x01
HAS_TTL = 0x02
COMP_SHIFT = 2
COMP_MASK = 0x0C
HAS_VERSION = 0x10

NONE, LZ4, ZSTD = 0, 1, 2


class SpecError(Exception):
    """Malformed bytes (bad varint, compression bits 3, CRC mismatch, bad value)."""


class SpecIncomplete(SpecError):
    """More bytes are needed than remain."""


def crc32c(data: bytes) -> int:
    return _crc.crc32c(data)


def put_varint(n: int) -> bytes:
    if n < 0 or n >= 1 << 64:
        raise ValueError("varint out of u64 range")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def get_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, new position). SpecIncomplete when cut short; SpecError when a
    shift reaches 64 bits or the value does not fit in a u64."""
    value = 0
    shift = 0
    while True:
        if pos >= len(buf):
            raise SpecIncomplete("varint cut short")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            break
        shift += 7
        if shift >= 64:
            raise SpecError("varint past 64 bits")
    if value >= 1 << 64:
        raise SpecError("varint past 64 bits")
    return value, pos


@dataclass(frozen=True)
class SpecRecord:
    key: bytes
    value: bytes = b""  # uncompressed
    tombstone: bool = False
    ttl_ms: int | None = None
    version: tuple[int, int] | None = None
    compression: int = NONE
    reserved: int = 0  # bits 5-7 as read (nori-wal ignores them)


def stored_value(rec: SpecRecord) -> bytes:
    """The value as nori-wal stores it: compressed whenever the record says so,
    a delete's (empty) value included."""
    if rec.compression == NONE:
        return rec.value
    if rec.compression == LZ4:
        return put_varint(len(rec.value)) + lz4.block.compress(rec.value, store_size=False)
    if rec.compression == ZSTD:
        # zstd::encode_all(value, 3): a stream, no content size up front.
        c = zstandard.ZstdCompressor(level=3).compressobj()
        return c.compress(rec.value) + c.flush()
    raise ValueError(f"bad compression {rec.compression}")


def encode(rec: SpecRecord, stored: bytes | None = None) -> bytes:
    """The record's bytes. ``stored`` overrides the stored value (e.g. to
    embed a particular compressor's output)."""
    if stored is None:
        stored = stored_value(rec)
    flags = rec.reserved & 0xE0
    if rec.tombstone:
        flags |= TOMBSTONE
    flags |= (rec.compression & 3) << COMP_SHIFT
    if rec.ttl_ms is not None:
        flags |= HAS_TTL
    if rec.version is not None:
        flags |= HAS_VERSION
    out = bytearray()
    out += put_varint(len(rec.key))
    out += put_varint(len(stored))
    out.append(flags)
    if rec.ttl_ms is not None:
        out += put_varint(rec.ttl_ms)
    if rec.version is not None:
        out += put_varint(rec.version[0])
        out += put_varint(rec.version[1])
    out += rec.key
    out += stored
    out += struct.pack("<I", crc32c(bytes(out)))
    return bytes(out)


def _decompress(kind: int, stored: bytes) -> bytes:
    if kind == NONE:
        return stored
    if kind == LZ4:
        n, p = get_varint(stored, 0)
        if n == 0:
            return b""
        try:
            out = lz4.block.decompress(stored[p:], uncompressed_size=n)
        except Exception as exc:  # noqa: BLE001 - any failure is corruption here
            raise SpecError(f"lz4: {exc}") from None
        if len(out) != n:
            raise SpecError("lz4 length mismatch")
        return out
    if kind == ZSTD:
        try:
            return zstandard.ZstdDecompressor().decompress(stored, max_output_size=1 << 28)
        except zstandard.ZstdError as exc:
            raise SpecError(f"zstd: {exc}") from None
    raise SpecError("compression bits 3")


def decode(buf: bytes, pos: int = 0) -> tuple[SpecRecord, int]:
    """Decodes the record at ``buf[pos:]``; returns (record, encoded size)."""
    start = pos
    klen, pos = get_varint(buf, pos)
    vlen, pos = get_varint(buf, pos)
    if pos >= len(buf):
        raise SpecIncomplete("flags cut short")
    flags = buf[pos]
    pos += 1
    kind = (flags & COMP_MASK) >> COMP_SHIFT
    if kind == 3:
        raise SpecError("compression bits 3")
    ttl = None
    version = None
    if flags & HAS_TTL:
        ttl, pos = get_varint(buf, pos)
    if flags & HAS_VERSION:
        term, pos = get_varint(buf, pos)
        index, pos = get_varint(buf, pos)
        version = (term, index)
    end = pos + klen + vlen + 4
    if end > len(buf):
        raise SpecIncomplete(f"record claims {end - start} bytes, {len(buf) - start} remain")
    key = bytes(buf[pos : pos + klen])
    stored = bytes(buf[pos + klen : pos + klen + vlen])
    (crc,) = struct.unpack_from("<I", buf, end - 4)
    if crc32c(bytes(buf[start : end - 4])) != crc:
        raise SpecError("CRC32C mismatch")
    tomb = bool(flags & TOMBSTONE)
    value = _decompress(kind, stored)  # a compressed delete's value too, as nori-wal does
    rec = SpecRecord(
        key=key, value=value, tombstone=tomb, ttl_ms=ttl, version=version, compression=kind, reserved=flags & 0xE0
    )
    return rec, end - start


def decode_segment(buf: bytes) -> tuple[list[tuple[SpecRecord, int]], int]:
    """Every valid record of a segment's bytes as (record, offset), and the
    offset where decoding stopped (end of data, zero tail, or first bad record)."""
    out = []
    pos = 0
    while pos < len(buf):
        if not any(buf[pos:]):
            break
        try:
            rec, n = decode(buf, pos)
        except SpecError:
            break
        out.append((rec, pos))
        pos += n
    return out, pos


def segment_name(seg_id: int) -> str:
    return f"{seg_id:06d}.wal"


def write_segment(directory: str | os.PathLike[str], seg_id: int, records, *, zero_tail: int = 0) -> list[int]:
    """Writes a segment file made of ``records`` (SpecRecord or raw bytes),
    optionally followed by a zero-filled preallocated tail; returns offsets."""
    offsets = []
    data = bytearray()
    for r in records:
        offsets.append(len(data))
        data += r if isinstance(r, (bytes, bytearray)) else encode(r)
    data += bytes(zero_tail)
    with open(os.path.join(directory, segment_name(seg_id)), "wb") as f:
        f.write(data)
    return offsets


def read_dir(directory: str | os.PathLike[str]) -> list[tuple[int, int, SpecRecord]]:
    """(segment id, offset, record) for every record of a WAL directory, in order."""
    ids = sorted(int(n[:-4]) for n in os.listdir(directory) if n.endswith(".wal") and n[:-4].isdigit() and len(n) >= 10)
    out = []
    for seg in ids:
        with open(os.path.join(directory, segment_name(seg)), "rb") as f:
            buf = f.read()
        recs, _ = decode_segment(buf)
        out.extend((seg, off, r) for r, off in recs)
    return out
