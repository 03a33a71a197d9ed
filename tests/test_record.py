"""The record codec: FORMAT.md test vectors, roundtrips, interop with the
independent spec codec (tests/spec_codec.py), Record semantics and hostile input."""

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

import spec_codec as spec
from norikv import Compression, CorruptionError, FsyncPolicy, Position, Record, Wal, WalConfig

ERR = b"ERROR: " * 20

# (norikv record, spec record, hex) for every FORMAT.md vector
VECTORS = [
    (Record.put(b"user:1", b"alice"), spec.SpecRecord(b"user:1", b"alice"), "060500757365723a31616c6963652516ede1"),
    (Record.delete(b"user:1"), spec.SpecRecord(b"user:1", tombstone=True), "060001757365723a31dbdcf6e6"),
    (
        Record(b"session:abc", b"data", ttl_ms=3_600_000),
        spec.SpecRecord(b"session:abc", b"data", ttl_ms=3_600_000),
        "0b040280dddb0173657373696f6e3a61626364617461ec92952e",
    ),
    (Record.put(b"k", b"v").with_version(2, 7), spec.SpecRecord(b"k", b"v", version=(2, 7)), "01011002076b7645f6ee06"),
    (
        Record.put(b"log", ERR).with_compression(Compression.LZ4),
        spec.SpecRecord(b"log", ERR, compression=spec.LZ4),
        "0313046c6f678c017f4552524f523a2007006d50524f523a20a7303b14",
    ),
    (Record.put(b"", b""), spec.SpecRecord(b""), "0000007aa36460"),
]
IDS = ["put", "delete", "ttl", "version", "lz4", "empty"]


def cfg(path, **kw):
    kw.setdefault("max_segment_size", 1 << 20)
    kw.setdefault("fsync_policy", FsyncPolicy.OS)
    return WalConfig(dir=str(path), **kw)


def as_spec(r: Record) -> spec.SpecRecord:
    return spec.SpecRecord(
        key=r.key,
        value=r.value,
        tombstone=r.tombstone,
        ttl_ms=r.ttl_ms,
        version=r.version,
        compression=int(r.compression),
    )


def as_record(s: spec.SpecRecord) -> Record:
    return Record(s.key, s.value, tombstone=s.tombstone, ttl_ms=s.ttl_ms, compression=s.compression, version=s.version)


# ---------------------------------------------------------------- vectors


@pytest.mark.parametrize("rec,srec,hexstr", VECTORS, ids=IDS)
def test_vector_encode(rec, srec, hexstr):
    assert rec.encode() == bytes.fromhex(hexstr)
    assert spec.encode(srec) == bytes.fromhex(hexstr)  # the oracle agrees with the spec


@pytest.mark.parametrize("rec,srec,hexstr", VECTORS, ids=IDS)
def test_vector_decode(rec, srec, hexstr):
    data = bytes.fromhex(hexstr)
    got, size = Record.decode(data)
    assert size == len(data)
    assert got == rec
    assert as_spec(got) == srec
    # decoding at an offset inside a larger buffer
    got2, size2 = Record.decode(b"\xaa" * 5 + data + b"\xbb" * 3, 5)
    assert (got2, size2) == (got, size)


def test_lz4_vector_value():
    r, _ = Record.decode(bytes.fromhex(VECTORS[4][2]))
    assert r.value == b"ERROR: " * 20
    assert r.compression is Compression.LZ4
    assert r.key == b"log" and r.ttl_ms is None and r.version is None and not r.tombstone


def test_ttl_vector_fields():
    r, _ = Record.decode(bytes.fromhex(VECTORS[2][2]))
    assert r.ttl_ms == 3_600_000
    assert bytes.fromhex(VECTORS[2][2])[3:7] == bytes.fromhex("80dddb01")  # not the docs' 80 8D 36


def test_vectors_through_segment_file(tmp_path):
    """The bytes a Wal writes to its segment are exactly the vectors, in order."""
    with Wal.open(cfg(tmp_path))[0] as wal:
        positions = [wal.append(rec) for rec, _, _ in VECTORS]
    data = (tmp_path / "000000.wal").read_bytes()
    expected = b"".join(bytes.fromhex(h) for _, _, h in VECTORS)
    assert data == expected  # also: finalized to the logical size on close
    offs = [0]
    for _, _, h in VECTORS[:-1]:
        offs.append(offs[-1] + len(h) // 2)
    assert positions == [Position(0, o) for o in offs]


def test_vectors_segment_opened_by_wal(tmp_path):
    spec.write_segment(tmp_path, 0, [bytes.fromhex(h) for _, _, h in VECTORS])
    wal, info = Wal.open(cfg(tmp_path))
    with wal:
        assert info.valid_records == len(VECTORS)
        assert not info.corruption_detected
        got = [r for r, _ in wal.read_from(Position(0, 0))]
    assert got == [rec for rec, _, _ in VECTORS]


# ---------------------------------------------------------------- roundtrips

u64 = st.integers(0, (1 << 64) - 1)
values = st.one_of(
    st.binary(max_size=600), st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(1, 300))
)


@st.composite
def records(draw):
    key = draw(st.binary(max_size=80))
    tomb = draw(st.booleans()) and draw(st.booleans())
    value = b"" if tomb else draw(values)
    ttl = draw(st.none() | u64)
    version = draw(st.none() | st.tuples(u64, u64))
    comp = 0 if tomb else draw(st.sampled_from([0, 1, 2]))
    return spec.SpecRecord(key, value, tombstone=tomb, ttl_ms=ttl, version=version, compression=comp)


@given(records())
def test_roundtrip_and_interop(srec):
    rec = as_record(srec)
    data = rec.encode()
    got, size = Record.decode(data)
    assert size == len(data)
    assert got == rec
    assert got.value == srec.value and got.key == srec.key
    # norikv -> spec
    s2, n2 = spec.decode(data)
    assert n2 == len(data) and s2 == srec
    # spec -> norikv
    sdata = spec.encode(srec)
    got3, n3 = Record.decode(sdata)
    assert n3 == len(sdata) and got3 == rec
    # byte-identical between the two encoders (zstd: both stream like nori-wal)
    assert sdata == data


@given(st.lists(records(), min_size=1, max_size=25))
def test_interop_through_files(tmp_path_factory, srecs):
    # norikv writes, the spec codec reads the segment files
    d1 = tmp_path_factory.mktemp("w")
    with Wal.open(cfg(d1))[0] as wal:
        positions = wal.append_batch([as_record(s) for s in srecs])
    got = spec.read_dir(d1)
    assert [r for _, _, r in got] == srecs
    assert [Position(seg, off) for seg, off, _ in got] == positions
    # the spec codec writes, norikv reads
    d2 = tmp_path_factory.mktemp("s")
    offsets = spec.write_segment(d2, 0, srecs)
    wal, info = Wal.open(cfg(d2))
    with wal:
        assert info.valid_records == len(srecs) and not info.corruption_detected
        back = list(wal.read_from(Position(0, 0)))
    assert [r for r, _ in back] == [as_record(s) for s in srecs]
    assert [p for _, p in back] == [Position(0, o) for o in offsets]


def test_reserved_flag_bits_ignored_for_fields():
    """nori-wal writes 0 in bits 5-7 and ignores them on read: a record with
    them set still decodes to the same key/value."""
    data = spec.encode(spec.SpecRecord(b"k", b"v", reserved=0x80))
    r, n = Record.decode(data)
    assert n == len(data) and r.key == b"k" and r.value == b"v" and not r.tombstone


# ---------------------------------------------------------------- Record semantics


def test_equality_by_fields():
    a = Record.put(b"k", b"v")
    assert a == Record.put(b"k", b"v") == Record(b"k", b"v")
    assert hash(a) == hash(Record.put(b"k", b"v"))
    assert a != Record.put(b"k", b"w")
    assert a != Record.put(b"j", b"v")
    assert a != Record.delete(b"k")
    assert Record.delete(b"k") == Record(b"k", tombstone=True)
    assert a != a.with_version(1, 2)
    assert a.with_version(1, 2) == Record.put(b"k", b"v").with_version(1, 2)
    assert a.with_version(1, 2) != a.with_version(1, 3)
    assert a != a.with_compression(Compression.LZ4)
    assert a != Record(b"k", b"v", ttl_ms=5)
    assert Record(b"k", b"v", ttl_ms=5) != Record(b"k", b"v", ttl_ms=6)
    assert a != (b"k", b"v")
    assert len({a, Record.put(b"k", b"v"), Record.put(b"k", b"w")}) == 2


def test_fields_of_constructors():
    p = Record.put(b"k", bytearray(b"v"))
    assert (p.key, p.value, p.tombstone, p.ttl_ms, p.version, p.compression) == (
        b"k",
        b"v",
        False,
        None,
        None,
        Compression.NONE,
    )
    assert type(p.value) is bytes
    d = Record.delete(memoryview(b"k"))
    assert (d.key, d.value, d.tombstone) == (b"k", b"", True)
    with pytest.raises(ValueError):
        Record(b"k", b"v", tombstone=True)


@pytest.mark.parametrize(
    "seconds,ms", [(30.0, 30_000), (1.5, 1500), (0, 0), (2, 2000), (0.0004, 0), (0.0006, 1), (3600, 3_600_000)]
)
def test_put_with_ttl(seconds, ms):
    r = Record.put_with_ttl(b"session:abc", b"data", seconds)
    assert r.ttl_ms == ms
    assert r.key == b"session:abc" and r.value == b"data" and not r.tombstone
    if seconds == 3600:
        assert r.encode() == bytes.fromhex(VECTORS[2][2])


def test_put_with_ttl_errors():
    with pytest.raises(ValueError):
        Record.put_with_ttl(b"k", b"v", -1)
    with pytest.raises(ValueError):
        Record.put_with_ttl(b"k", b"v", float("nan"))
    with pytest.raises(TypeError):
        Record.put_with_ttl(b"k", b"v", "30")
    with pytest.raises(TypeError):
        Record.put_with_ttl(b"k", b"v", None)
    with pytest.raises(TypeError):
        Record.put_with_ttl(b"k", b"v", True)


def test_with_compression_and_version_are_copies():
    base = Record.put_with_ttl(b"k", b"v" * 100, 5)
    z = base.with_compression(Compression.ZSTD)
    assert base.compression is Compression.NONE
    assert z.compression is Compression.ZSTD
    assert (z.key, z.value, z.ttl_ms) == (base.key, base.value, base.ttl_ms)
    assert base.with_compression("lz4").compression is Compression.LZ4
    assert z.with_compression(None).compression is Compression.NONE
    assert z.with_compression(None) == base
    v = z.with_version(3, 9)
    assert v.version == (3, 9) and z.version is None
    assert v.with_version(4, 1).version == (4, 1)
    assert (v.compression, v.ttl_ms) == (Compression.ZSTD, 5000)
    # stored compressed, decoded back to the original
    for c in (Compression.LZ4, Compression.ZSTD):
        data = base.with_compression(c).encode()
        assert len(data) < 100
        r, _ = Record.decode(data)
        assert r.value == b"v" * 100 and r.compression is c
    with pytest.raises(ValueError):
        base.with_compression("snappy")
    with pytest.raises(ValueError):
        base.with_compression(3)
    with pytest.raises(TypeError):
        base.with_compression(1.5)
    with pytest.raises((TypeError, ValueError)):
        base.with_version(-1, 0)
    with pytest.raises((TypeError, ValueError)):
        base.with_version(0, 1 << 64)
    with pytest.raises(TypeError):
        base.with_version("1", 0)


@pytest.mark.parametrize("bad", ["text", 1, None, 1.0, [1], object()])
def test_type_errors_for_non_bytes(bad):
    with pytest.raises(TypeError):
        Record.put(bad, b"v")
    with pytest.raises(TypeError):
        Record.put(b"k", bad)
    with pytest.raises(TypeError):
        Record.delete(bad)
    with pytest.raises(TypeError):
        Record.put_with_ttl(bad, b"v", 1)
    with pytest.raises(TypeError):
        Record(bad, b"v")


def test_decode_type_and_offset_errors():
    with pytest.raises(TypeError):
        Record.decode("0000007aa36460")
    with pytest.raises(ValueError):
        Record.decode(bytes.fromhex("0000007aa36460"), 8)
    with pytest.raises(ValueError):
        Record.decode(bytes.fromhex("0000007aa36460"), -1)


# ---------------------------------------------------------------- hostile decoding


def _with_crc(body: bytes) -> bytes:
    return body + spec.crc32c(body).to_bytes(4, "little")


@pytest.mark.parametrize("cut", range(0, 18))
def test_truncated_record_is_incomplete(cut):
    data = bytes.fromhex(VECTORS[0][2])[:cut]
    with pytest.raises(CorruptionError, match="incomplete"):
        Record.decode(data)


@pytest.mark.parametrize(
    "klen,vlen", [(1 << 62, 0), (0, 1 << 62), ((1 << 64) - 1, (1 << 64) - 1), (1 << 40, 5), (50, 0)]
)
def test_claimed_lengths_beyond_data(klen, vlen):
    data = spec.put_varint(klen) + spec.put_varint(vlen) + b"\x00" + b"abcdefgh" + b"\0\0\0\0"
    with pytest.raises(CorruptionError, match="incomplete"):
        Record.decode(data)


@pytest.mark.parametrize(
    "prefix",
    [
        b"\x80" * 10 + b"\x00",  # 11 bytes
        b"\xff" * 10 + b"\x01",  # 11 bytes
        b"\xff" * 9 + b"\x02",  # 10 bytes but past 64 bits
        b"\xff" * 9 + b"\x7f",
        b"\x80" * 20,
    ],
)
def test_bad_varints(prefix):
    data = prefix + b"\x00\x00" + b"x" * 40
    with pytest.raises(CorruptionError, match="varint"):
        Record.decode(data)
    # also as vlen and as ttl
    with pytest.raises(CorruptionError, match="varint"):
        Record.decode(b"\x01" + prefix + b"\x00" + b"x" * 40)
    with pytest.raises(CorruptionError, match="varint"):
        Record.decode(b"\x01\x01\x02" + prefix + b"x" * 40)
    with pytest.raises(spec.SpecError):
        spec.decode(data)


def test_max_u64_varint_is_valid():
    r = Record(b"k", b"v", ttl_ms=(1 << 64) - 1, version=((1 << 64) - 1, 0))
    data = r.encode()
    assert spec.put_varint((1 << 64) - 1) == b"\xff" * 9 + b"\x01"
    assert Record.decode(data)[0] == r


def test_compression_bits_3_is_an_error():
    data = _with_crc(b"\x01\x01\x0c" + b"kv")
    with pytest.raises(CorruptionError, match="compression"):
        Record.decode(data)
    with pytest.raises(CorruptionError, match="compression"):
        Record.decode(_with_crc(b"\x01\x00\x0d" + b"k"))  # even on a tombstone


def test_crc_mismatch():
    data = bytearray.fromhex(VECTORS[0][2])
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x10
        with pytest.raises(CorruptionError):
            Record.decode(bytes(bad))


def _lz4_record(claim: int, block: bytes) -> bytes:
    stored = spec.put_varint(claim) + block
    return _with_crc(b"\x03" + spec.put_varint(len(stored)) + b"\x04" + b"log" + stored)


def test_lz4_claims_that_disagree():
    import lz4.block

    block = lz4.block.compress(ERR, store_size=False)
    assert Record.decode(_lz4_record(len(ERR), block))[0].value == ERR
    for claim in (len(ERR) - 1, len(ERR) + 1, 1, 2 * len(ERR), 1 << 40, (1 << 64) - 1):
        with pytest.raises(CorruptionError):
            Record.decode(_lz4_record(claim, block))
    with pytest.raises(CorruptionError):
        Record.decode(_lz4_record(len(ERR), b"\xff" * 10))  # not an LZ4 block
    with pytest.raises(CorruptionError):
        Record.decode(_with_crc(b"\x03\x03\x04log\x80\x80\x80"))  # length prefix cut short


def test_zstd_garbage_is_corruption():
    stored = b"\x28\xb5\x2f\xfd" + b"\x00" * 12
    data = _with_crc(b"\x01" + spec.put_varint(len(stored)) + b"\x08k" + stored)
    with pytest.raises(CorruptionError):
        Record.decode(data)


HOSTILE_SCRIPT = textwrap.dedent("""
    import resource, sys
    import lz4.block
    sys.path.insert(0, {tests!r})
    import spec_codec as spec
    from norikv import CorruptionError, Record, Wal, WalConfig, FsyncPolicy, Position, RecoveryMode
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    # room for the interpreter and a 1 MiB segment mapping, nowhere near the claims below
    with open("/proc/self/status") as f:
        vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize")][0]
    resource.setrlimit(resource.RLIMIT_AS, (vm + (400 << 20), hard))
    def crc(body):
        return body + spec.crc32c(body).to_bytes(4, "little")
    cases = [
        spec.put_varint(1 << 36) + b"\\x00\\x00" + b"x" * 100,
        b"\\x01" + spec.put_varint(3 << 30) + b"\\x00" + b"x" * 100,
        b"\\x01" + spec.put_varint((1 << 64) - 1) + b"\\x00" + b"x" * 100,
    ]
    for c in cases:
        try:
            Record.decode(c)
        except CorruptionError:
            pass
        else:
            raise SystemExit("accepted " + c[:12].hex())
    block = lz4.block.compress(b"ERROR: " * 20, store_size=False)
    for claim in (1 << 40, 3 << 30, 200 << 20):
        stored = spec.put_varint(claim) + block
        rec = crc(b"\\x03" + spec.put_varint(len(stored)) + b"\\x04log" + stored)
        try:
            Record.decode(rec)
        except CorruptionError:
            pass
        else:
            raise SystemExit("accepted lz4 claim %d" % claim)
    # the same claims inside a segment: recovery and read_from stay bounded
    d = sys.argv[1]
    good = spec.encode(spec.SpecRecord(b"a", b"b"))
    with open(d + "/000000.wal", "wb") as f:
        f.write(good + rec)
    with open(d + "/000001.wal", "wb") as f:
        f.write(good + cases[1])
    cfg = dict(dir=d, max_segment_size=1 << 20, fsync_policy=FsyncPolicy.OS)
    try:
        Wal.open(WalConfig(**cfg))      # a damaged record, not a torn tail: refused
    except CorruptionError as exc:
        assert (exc.segment_id, exc.offset) == (0, len(good)), exc
    else:
        raise SystemExit("recovery accepted the lz4 claim")
    wal, info = Wal.open(WalConfig(recovery_mode=RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS, **cfg))
    assert info.corruption_detected and info.valid_records == 2 and info.spans_skipped == 2, info
    with open(d + "/000000.wal", "ab") as f:   # put back behind the open Wal's back
        f.write(rec)
    it = wal.read_from(Position(0, 0))
    assert next(it)[0].key == b"a"
    try:
        next(it)
    except CorruptionError as exc:
        assert (exc.segment_id, exc.offset) == (0, len(good)), exc
    else:
        raise SystemExit("read_from accepted the lz4 claim")
    wal.close()
    print("ok")
""")


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="reads /proc/self/status and relies on RLIMIT_AS (Linux)")
def test_hostile_claims_never_allocate(tmp_path):
    """Under an address-space limit far below the claimed sizes, hostile
    lengths give CorruptionError, not MemoryError or a crash."""
    script = HOSTILE_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
    assert out.stdout.strip() == "ok"


def _zstd_stream(value: bytes) -> bytes:
    """A zstd frame without a content size, as nori-wal's streaming encoder writes it."""
    import io

    import zstandard

    buf = io.BytesIO()
    w = zstandard.ZstdCompressor(level=3).stream_writer(buf, closefd=False)
    w.write(value)
    w.close()
    return buf.getvalue()


def _zstd_record(stored: bytes) -> bytes:
    return _with_crc(b"\x01" + spec.put_varint(len(stored)) + b"\x08k" + stored)


@pytest.mark.parametrize("value", [b"", b"x", bytes(range(256)) * 40, b"abc" * 50_000])
def test_zstd_frames_with_and_without_size(value):
    import zstandard

    for stored in (zstandard.ZstdCompressor(level=3).compress(value), _zstd_stream(value)):
        r, _ = Record.decode(_zstd_record(stored))
        assert r.value == value and r.compression is Compression.ZSTD
        for bad in (stored[:-1], stored[: len(stored) // 2], stored + b"\x00", stored + stored):
            with pytest.raises(CorruptionError):
                Record.decode(_zstd_record(bad))


def test_zstd_bomb_is_bounded():
    stored = _zstd_stream(bytes(100 << 20))  # 100 MiB of zeros in ~3 KB, no size in the header
    assert len(stored) < 10_000
    with pytest.raises(CorruptionError, match="max_value_size"):
        Record.decode(_zstd_record(stored), max_value_size=64 << 20)


def test_delete_ignores_compression():
    """A delete has no value to compress: it is written without compression
    bits, so what is read back equals what was appended."""
    for d in (Record.delete(b"k").with_compression(Compression.LZ4), Record(b"k", tombstone=True, compression="zstd")):
        assert d.compression is Compression.NONE
        assert d == Record.delete(b"k")
        data = d.encode()
        assert data == bytes.fromhex("010001") + b"k" + data[-4:]
        assert Record.decode(data)[0] == d
