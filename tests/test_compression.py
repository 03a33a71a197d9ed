"""Compressed values: nori-wal's exact bytes, compressed deletes, and the one
bound on value sizes, ``max_value_size`` (issue #11, points 1, 3 and 5).

* norikv writes a zstd value as nori-wal's ``zstd::encode_all(value, 3)``
  does (a stream: window descriptor, no content size), byte for byte.
* A delete written with compression (nori-wal stores its empty value
  compressed) reads back with value b"", deletes in a replay, and encodes back
  to the same bytes.
* ``max_value_size`` (default 256 MiB) is the largest value put/append accept
  and the most a compressed value may decompress to on read; everything a
  store could write reads back, and nothing larger is ever decompressed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lz4.block
import pytest
import zstandard

import spec_codec as spec
from norikv import (
    Compression,
    ConfigError,
    CorruptionError,
    FsyncPolicy,
    KvStore,
    Position,
    Record,
    RecoveryMode,
    Wal,
    WalConfig,
)
from norikv.compression import DEFAULT_MAX_VALUE_SIZE, compress, decompress

DATA = Path(__file__).resolve().parent / "data" / "noriwal-corpus"
SEG = 1 << 20


def wal_config(path: Path, **kw: object) -> WalConfig:
    kw.setdefault("max_segment_size", SEG)
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    return WalConfig(dir=str(path), **kw)  # type: ignore[arg-type]


def records_of(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, raw bytes) of every record of a segment's bytes."""
    out = []
    pos = 0
    while pos < len(data):
        _, n = Record.decode(data, pos)
        out.append((pos, data[pos : pos + n]))
        pos += n
    return out


# ---------------------------------------------------------------- point 5: nori-wal's zstd bytes


def test_zstd_record_is_noriwal_bytes():
    """The record nori-wal writes for key b"z", value b"x", Zstd."""
    rec = Record.put(b"z", b"x").with_compression(Compression.ZSTD)
    assert rec.encode() == bytes.fromhex("010a087a28b52ffd0058090000785a9900a2")
    assert Record.decode(rec.encode())[0] == rec


@pytest.mark.parametrize("case,kind", [("04-zstd", Compression.ZSTD), ("03-lz4", Compression.LZ4)])
def test_compressed_records_of_noriwal_corpus_reencode_to_the_same_bytes(case, kind):
    """Every compressed record nori-wal wrote in corpus cases 04 (Zstd) and
    03 (LZ4) (empty, 1 byte, 600 B text, 10 KiB pattern, 20000 zeros,
    incompressible random 300 B and 4 KiB, 0-length key), decoded and encoded
    again by norikv, is nori-wal's bytes (libzstd 1.5.4 wrote them; this
    python-zstandard bundles 1.5.7: same bytes)."""
    data = (DATA / case / "wal" / "000000.wal").read_bytes()
    seen = 0
    for pos, raw in records_of(data):
        rec, _ = Record.decode(raw)
        if rec.compression is not kind:
            continue
        seen += 1
        again = Record.put(rec.key, rec.value).with_compression(kind)
        assert again.encode() == raw, (pos, rec)
        assert rec.encode() == raw
    assert seen == 9


def test_lz4_records_are_noriwal_bytes():
    """LZ4 is written as nori-wal writes it too (case 03's encoder, checked
    through the spec codec, which follows nori-wal's source)."""
    for value in (b"", b"x", b"hello " * 100, bytes(20000), os.urandom(300)):
        rec = Record.put(b"k", value).with_compression(Compression.LZ4)
        assert rec.encode() == spec.encode(spec.SpecRecord(b"k", value, compression=spec.LZ4))


def test_zstd_values_written_by_kvstore_are_noriwal_bytes(tmp_path):
    """put(compression="zstd") stores the same frame as Record/nori-wal."""
    value = b"abcdefgh" * 1000
    with KvStore.open(tmp_path / "s", compress_min_size=0) as s:
        s.put(b"k", value, compression="zstd")
    raw = (tmp_path / "s" / "wal" / "000000.wal").read_bytes()
    assert raw == Record.put(b"k", value).with_compression(Compression.ZSTD).encode()
    c = zstandard.ZstdCompressor(level=3).compressobj()
    assert (c.compress(value) + c.flush()) in raw
    assert zstandard.get_frame_parameters(compress(2, value)).content_size == zstandard.CONTENTSIZE_UNKNOWN


# ---------------------------------------------------------------- point 3: compressed deletes

LZ4_DELETE = bytes.fromhex("020205646c0000afd9efef")  # the record
ZSTD_DELETE = bytes.fromhex("0109096228b52ffd2000010000b6556285")  # corpus 07, at 28


@pytest.mark.parametrize(
    "raw,kind", [(LZ4_DELETE, Compression.LZ4), (ZSTD_DELETE, Compression.ZSTD)], ids=["lz4", "zstd"]
)
def test_compressed_delete_decodes_as_noriwal(raw, kind):
    rec, n = Record.decode(raw)
    assert n == len(raw)
    assert rec.tombstone and rec.value == b"" and rec.compression is kind
    assert rec.encode() == raw  # written back as it was read
    assert Record.decode(rec.encode())[0] == rec


def test_compressed_deletes_of_noriwal_corpus(tmp_path):
    """Corpus case 07: Wal.read_from gives b"" for every delete, and every
    record encodes back to nori-wal's bytes; a KvStore replay deletes."""
    data = (DATA / "07-compressed-tombstone" / "wal" / "000000.wal").read_bytes()
    for _, raw in records_of(data):
        assert Record.decode(raw)[0].encode() == raw
    d = tmp_path / "w"
    d.mkdir()
    (d / "000000.wal").write_bytes(data)
    wal, info = Wal.open(wal_config(d))
    with wal:
        got = [(r.key, r.value, r.tombstone, r.compression) for r, _ in wal.read_from(Position(0, 0))]
    assert info.valid_records == 8 and not info.corruption_detected
    assert got == [
        (b"a", b"1", False, Compression.NONE),
        (b"a", b"", True, Compression.LZ4),
        (b"b", b"2", False, Compression.NONE),
        (b"b", b"", True, Compression.ZSTD),
        (b"c", b"", True, Compression.LZ4),
        (b"d", b"", True, Compression.ZSTD),
        (b"e", b"", True, Compression.NONE),
        (b"f", b"after", False, Compression.NONE),
    ]
    s = tmp_path / "s"
    (s / "wal").mkdir(parents=True)
    (s / "wal" / "000000.wal").write_bytes(data)
    with KvStore.open(s) as store:
        assert dict(store.items()) == {b"f": b"after"}


def test_compressed_delete_replayed_by_kvstore_deletes(tmp_path):
    s = tmp_path / "s"
    (s / "wal").mkdir(parents=True)
    put = Record.put(b"dl", b"value").encode()
    (s / "wal" / "000000.wal").write_bytes(put + LZ4_DELETE + Record.put(b"x", b"y").encode())
    with KvStore.open(s) as store:
        assert store.get(b"dl") is None and store[b"x"] == b"y"
        assert store.recovery_info.valid_records == 3


def test_damaged_compressed_delete_is_a_damaged_record(tmp_path):
    """nori-wal decompresses a compressed delete's value: one that does not
    decompress is damage, as for a put."""
    body = b"\x02\x02\x05dl" + b"\x05\x00"  # LZ4 claims 5 bytes from an empty block
    bad = body + spec.crc32c(body).to_bytes(4, "little")
    with pytest.raises(CorruptionError) as ei:
        Record.decode(bad)
    assert ei.value.offset == 0
    s = tmp_path / "s"
    (s / "wal").mkdir(parents=True)
    good = Record.put(b"dl", b"value").encode()
    (s / "wal" / "000000.wal").write_bytes(good + bad)
    with pytest.raises(CorruptionError) as ei:
        KvStore.open(s)
    assert (ei.value.segment_id, ei.value.offset) == (0, len(good))


# ---------------------------------------------------------------- point 1: max_value_size


def test_default_max_value_size():
    assert DEFAULT_MAX_VALUE_SIZE == 256 << 20
    assert WalConfig().max_value_size == DEFAULT_MAX_VALUE_SIZE


@pytest.mark.parametrize(
    "bad, exc",
    [
        (0, ConfigError),
        (-1, ConfigError),
        (1 << 63, ConfigError),
        (1.5, TypeError),
        ("64", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_max_value_size_is_validated_before_anything_is_created(tmp_path, bad, exc):
    with pytest.raises(exc, match="max_value_size"):
        wal_config(tmp_path / "w", max_value_size=bad).validate()
    with pytest.raises(exc, match="max_value_size"):
        Wal.open(wal_config(tmp_path / "w", max_value_size=bad))
    with pytest.raises(exc, match="max_value_size"):
        KvStore.open(tmp_path / "s", max_value_size=bad)
    assert not (tmp_path / "w").exists() and not (tmp_path / "s").exists()


def test_put_over_max_value_size_writes_nothing(tmp_path):
    limit = 1000
    with KvStore.open(tmp_path / "s", max_value_size=limit) as s:
        assert s.max_value_size == limit
        s.put(b"at", b"v" * limit)
        before = s.wal.current_position()
        for call in (
            lambda: s.put(b"over", b"v" * (limit + 1)),
            lambda: s.put(b"over", b"\0" * (limit + 1), compression="zstd"),
            lambda: s.__setitem__(b"over", bytearray(limit + 1)),
        ):
            with pytest.raises(ValueError, match="max_value_size"):
                call()
        b = s.batch()
        b.put(b"ok", b"1")
        with pytest.raises(ValueError, match="max_value_size"):
            b.put(b"over", b"v" * (limit + 1))
        b.write()
        assert s.wal.current_position() > before
        assert b"over" not in s and s[b"ok"] == b"1"
    with KvStore.open(tmp_path / "s", max_value_size=limit) as s:
        assert s.keys() == [b"at", b"ok"]


def test_wal_append_over_max_value_size_writes_nothing(tmp_path):
    limit = 1000
    wal, _ = Wal.open(wal_config(tmp_path / "w", max_value_size=limit))
    with wal:
        assert wal.max_value_size == limit
        wal.append(Record.put(b"at", bytes(limit)).with_compression(Compression.ZSTD))
        before = wal.current_position()
        with pytest.raises(ValueError, match="max_value_size"):
            wal.append(Record.put(b"over", bytes(limit + 1)).with_compression(Compression.ZSTD))
        with pytest.raises(ValueError, match="max_value_size"):
            wal.append_batch([Record.put(b"a", b"1"), Record.put(b"over", bytes(limit + 1))])
        assert wal.current_position() == before


def _value(kind: str, n: int) -> bytes:
    return bytes(n) if kind == "zeros" else os.urandom(n)


@pytest.mark.parametrize("comp", [Compression.LZ4, Compression.ZSTD], ids=["lz4", "zstd"])
@pytest.mark.parametrize("content", ["zeros", "random"])
def test_values_at_and_over_the_bound_through_a_wal(tmp_path, comp, content):
    """Compressed records (compressible and not) of exactly max_value_size
    bytes read back; one byte more is a damaged record, refused at its
    offset, for Record.decode, recovery and read_from alike."""
    limit = 300_000
    d = tmp_path / "w"
    at = Record.put(b"at", _value(content, limit)).with_compression(comp)
    under = Record.put(b"under", _value(content, limit - 1)).with_compression(comp)
    over = Record.put(b"over", _value(content, limit + 1)).with_compression(comp)
    for r in (at, under):
        assert Record.decode(r.encode(), max_value_size=limit)[0] == r
    with pytest.raises(CorruptionError, match="max_value_size") as ei:
        Record.decode(b"\0" + over.encode(), 1, max_value_size=limit)
    assert ei.value.offset == 1
    assert Record.decode(over.encode(), max_value_size=limit + 1)[0] == over
    wal, _ = Wal.open(wal_config(d, max_value_size=limit + 1))
    with wal:
        positions = wal.append_batch([at, under, over])
    wal, info = Wal.open(wal_config(d, max_value_size=limit + 1))
    with wal:
        assert [r for r, _ in wal.read_from(Position(0, 0))] == [at, under, over]
    with pytest.raises(CorruptionError) as ei:
        Wal.open(wal_config(d, max_value_size=limit))
    assert (ei.value.segment_id, ei.value.offset) == (0, positions[2].offset)
    assert ei.value.path == str(d / "000000.wal")


@pytest.mark.parametrize("comp", ["lz4", "zstd"])
@pytest.mark.parametrize("content", ["zeros", "random"])
def test_values_put_at_the_bound_reopen(tmp_path, comp, content):
    """What put accepts reopens, with the store's compression or the put's,
    and after compact() rewrote it; a value bigger than the reopening store's
    max_value_size is refused at its offset."""
    limit = 200_000
    p = tmp_path / "s"
    with KvStore.open(p, max_value_size=limit, compression=comp, compress_min_size=0, auto_compact=False) as s:
        s.put(b"at", _value(content, limit))
        s.put(b"under", _value(content, limit - 1), compression=comp)
        s.put(b"small", b"s" * 100)
        expected = dict(s.items())
    with KvStore.open(p, max_value_size=limit, compression=comp, compress_min_size=0) as s:
        assert dict(s.items()) == expected
        s.compact()
    with KvStore.open(p, max_value_size=limit) as s:
        assert dict(s.items()) == expected
    if content == "zeros":  # stored compressed: its size is checked when decompressed
        with pytest.raises(CorruptionError, match="max_value_size") as ei:
            KvStore.open(p, max_value_size=limit - 1)
        assert ei.value.segment_id is not None and ei.value.offset is not None
        with KvStore.open(p, max_value_size=limit) as s:
            assert dict(s.items()) == expected


def test_compaction_never_compresses_a_value_over_the_bound(tmp_path):
    """An uncompressed value larger than the store's max_value_size (written
    by another nori-wal writer) stays readable across compact(): it is
    written back uncompressed, never in a form the next open would refuse."""
    p = tmp_path / "s"
    wal, _ = Wal.open(wal_config(p / "wal", max_value_size=10_000))
    with wal:
        wal.append(Record.put(b"huge", bytes(5000)))
    with KvStore.open(p, max_value_size=1000, compression="zstd", compress_min_size=0) as s:
        assert s[b"huge"] == bytes(5000)
        s.put(b"small", bytes(500))
        s.compact()
    with KvStore.open(p, max_value_size=1000) as s:
        assert s[b"huge"] == bytes(5000) and s[b"small"] == bytes(500)
    raws = [
        Record.decode(raw)[0] for seg in sorted((p / "wal").glob("*.wal")) for _, raw in records_of(seg.read_bytes())
    ]
    assert {r.key: r.compression for r in raws} == {b"huge": Compression.NONE, b"small": Compression.ZSTD}


def test_ttl_pin_never_compresses_a_value_over_the_bound(tmp_path):
    """A foreign relative-TTL put larger than max_value_size, in a store with
    compression: the open that pins its TTL writes it back raw (compressed,
    the next open would refuse it), and reopens keep it."""
    p = tmp_path / "s"
    wal, _ = Wal.open(wal_config(p / "wal", max_value_size=10_000))
    with wal:
        wal.append(Record(b"huge", bytes(5000), ttl_ms=3_600_000))
    for _ in range(2):
        with KvStore.open(p, max_value_size=1000, compression="zstd", compress_min_size=0) as s:
            assert s[b"huge"] == bytes(5000)
    raws = [
        Record.decode(raw)[0] for seg in sorted((p / "wal").glob("*.wal")) for _, raw in records_of(seg.read_bytes())
    ]
    assert [r.compression for r in raws] == [Compression.NONE, Compression.NONE]


@pytest.mark.parametrize("mode", list(RecoveryMode))
def test_a_65_mib_zstd_value_reopens_in_every_mode(tmp_path, mode):
    """The issue's reproduction: a 65 MiB zstd value (and the same written by
    store-level compression and compact()) reopens."""
    p = tmp_path / "s"
    big = bytes(65 << 20)
    with KvStore.open(p) as s:
        s.put(b"z", big, compression="zstd")
        s.put(b"a", b"1")
    with KvStore.open(p, recovery_mode=mode) as s:
        assert s[b"z"] == big and s[b"a"] == b"1"
        assert not s.recovery_info.corruption_detected
    with KvStore.open(p, compression="zstd", recovery_mode=mode) as s:
        s.put(b"y", big + b"\1")
        s.compact()
    with KvStore.open(p, recovery_mode=mode) as s:
        assert s[b"z"] == big and s[b"y"] == big + b"\1" and len(s) == 3


def test_decompress_bounds():
    for kind in (1, 2):
        for value in (b"", b"x", bytes(100_000), os.urandom(100_000)):
            stored = compress(kind, value)
            assert decompress(kind, stored, max(len(value), 1)) == value
            if value:
                with pytest.raises(CorruptionError, match="max_value_size"):
                    decompress(kind, stored, len(value) - 1)
    # A zstd frame with a content size (as norikv wrote before) is still read.
    framed = zstandard.ZstdCompressor(level=3).compress(b"q" * 5000)
    assert decompress(2, framed, 5000) == b"q" * 5000
    with pytest.raises(CorruptionError, match="claims 5000 bytes"):
        decompress(2, framed, 4999)
    with pytest.raises(CorruptionError, match="max_value_size"):
        decompress(1, spec.put_varint(1 << 40) + lz4.block.compress(b"x" * 100, store_size=False))


# A zstd frame built by hand: RLE blocks (4 stored bytes each for 128 KiB),
# no content size (what a streaming encoder writes), or one claiming 4 GiB.
def rle_frame(total: int, claim: int | None = None) -> bytes:
    if claim is None:
        head = b"\x28\xb5\x2f\xfd\x00\x58"  # window descriptor, no size
    else:
        head = b"\x28\xb5\x2f\xfd\xe0" + claim.to_bytes(8, "little")  # single segment, 8-byte size
    blocks = []
    while total > 0:
        n = min(total, 128 << 10)
        total -= n
        blocks.append(((n << 3) | 2 | (total == 0)).to_bytes(3, "little") + b"\0")
    return head + b"".join(blocks)


def test_rle_frame_helper_is_valid_zstd():
    assert decompress(2, rle_frame(300_000)) == bytes(300_000)
    assert zstandard.ZstdDecompressor().decompress(rle_frame(300_000), max_output_size=1 << 20) == bytes(300_000)


BOMB_SCRIPT = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {tests!r})
    from test_compression import rle_frame
    import lz4.block, spec_codec as spec
    from norikv import CorruptionError
    from norikv.compression import decompress, DEFAULT_MAX_VALUE_SIZE
    with open("/proc/self/status") as f:
        vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize")][0]
    bombs = [
        ("zstd without content size, 1 GiB", 2, rle_frame(1 << 30)),
        ("zstd without content size, max_value_size + 1", 2, rle_frame(DEFAULT_MAX_VALUE_SIZE + 1)),
        ("zstd claiming 4 GiB", 2, rle_frame(1 << 30, claim=4 << 30)),
        ("zstd claiming 4 MiB, holding 1 GiB", 2, rle_frame(1 << 30, claim=4 << 20)),
        ("lz4 claiming 1 TiB", 1, spec.put_varint(1 << 40) + lz4.block.compress(bytes(1 << 16), store_size=False)),
    ]
    # room for the interpreter, the bound (256 MiB) and a slice, not for 1 GiB
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + DEFAULT_MAX_VALUE_SIZE + (96 << 20), hard))
    for name, kind, stored in bombs:
        try:
            decompress(kind, stored)
        except CorruptionError:
            pass
        else:
            raise SystemExit("accepted: " + name)
    print("ok")
""")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status, RLIMIT_AS")
def test_decompression_never_allocates_much_past_the_bound():
    """Under an address-space limit of the bound plus 96 MiB, bombs of every
    kind give CorruptionError (never MemoryError): the zstd decompression is
    bounded by max_value_size whatever the frame header claims or omits."""
    script = BOMB_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    assert out.stdout.strip() == "ok"
