"""norikv.crc32c against the ``crc32c`` package as the oracle, on both the
hardware and the software code paths."""

import os
import random
import subprocess
import sys

import crc32c as oracle
import pytest

import norikv
from norikv import _engine

HW = _engine.select_crc32c_implementation("hardware")


@pytest.fixture(params=["hardware", "software"])
def impl(request):
    name = _engine.select_crc32c_implementation(request.param)
    if request.param == "software":
        assert name == "software"
    else:
        assert name == HW
    yield name
    _engine.select_crc32c_implementation("hardware")


def test_implementation_names():
    assert _engine.crc32c_implementation() in ("sse4.2", "armv8-crc", "software")
    with pytest.raises(ValueError):
        _engine.select_crc32c_implementation("fast")


def test_known_values(impl):
    assert norikv.crc32c(b"") == 0
    assert norikv.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert norikv.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert norikv.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert norikv.crc32c(bytes(range(32))) == 0x46DD794E


def test_every_length_0_to_4096(impl):
    rnd = random.Random(1234)
    buf = rnd.randbytes(4096 + 16)
    for n in range(4097):
        data = buf[n % 13 : n % 13 + n]
        assert norikv.crc32c(data) == oracle.crc32c(data), n


def test_misaligned_starts(impl):
    rnd = random.Random(99)
    buf = bytearray(rnd.randbytes(8192))
    mv = memoryview(buf)
    for start in range(16):
        for n in (0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 255, 256, 1000, 4096, 8192 - 16):
            view = mv[start : start + n]
            assert norikv.crc32c(view) == oracle.crc32c(bytes(view)), (start, n)


def test_multi_megabyte(impl):
    rnd = random.Random(7)
    for size in (1 << 20, (3 << 20) + 5, (8 << 20) - 3):
        data = rnd.randbytes(size)
        assert norikv.crc32c(data) == oracle.crc32c(data), size


def test_chunked_continuation(impl):
    rnd = random.Random(5)
    data = rnd.randbytes(200_003)
    whole = oracle.crc32c(data)
    for chunk in (1, 7, 64, 4095, 65536):
        if chunk == 1:
            part = data[:5000]
            acc = 0
            for i in range(len(part)):
                acc = norikv.crc32c(part[i : i + 1], acc)
            assert acc == oracle.crc32c(part)
            continue
        acc = 0
        for i in range(0, len(data), chunk):
            acc = norikv.crc32c(data[i : i + chunk], acc)
        assert acc == whole, chunk
    # the same convention as the oracle's continuation argument
    a, b = data[:1234], data[1234:]
    assert norikv.crc32c(b, norikv.crc32c(a)) == oracle.crc32c(b, oracle.crc32c(a))


def test_bytes_like_inputs(impl):
    data = bytes(range(256)) * 3
    expected = oracle.crc32c(data)
    assert norikv.crc32c(bytearray(data)) == expected
    assert norikv.crc32c(memoryview(data)) == expected
    with pytest.raises(TypeError):
        norikv.crc32c("text")
    with pytest.raises(TypeError):
        norikv.crc32c(None)


def test_paths_agree_on_random_inputs():
    rnd = random.Random(42)
    for _ in range(300):
        data = rnd.randbytes(rnd.randrange(0, 3000))
        seed = rnd.randrange(0, 1 << 32)
        _engine.select_crc32c_implementation("software")
        soft = norikv.crc32c(data, seed)
        _engine.select_crc32c_implementation("hardware")
        hard = norikv.crc32c(data, seed)
        assert soft == hard == oracle.crc32c(data, seed)


def test_env_var_forces_software():
    code = (
        "import norikv, norikv._engine as w, crc32c, os\n"
        "print(w.crc32c_implementation())\n"
        "d = os.urandom(100000)\n"
        "assert norikv.crc32c(d) == crc32c.crc32c(d)\n"
        "r = norikv.Record.put(b'user:1', b'alice').encode()\n"
        "assert r.hex() == '060500757365723a31616c6963652516ede1'\n"
        "assert norikv.Record.decode(r)[0].value == b'alice'\n"
    )
    env = dict(os.environ, NORIKV_CRC32C_SOFTWARE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "software"
    env.pop("NORIKV_CRC32C_SOFTWARE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == HW


def test_record_codec_on_both_paths(impl, tmp_path):
    """The record encoder and the recovery scan use the selected path too."""
    from norikv import FsyncPolicy, Position, Record, Wal, WalConfig

    rec = Record.put(b"user:1", b"alice")
    assert rec.encode().hex() == "060500757365723a31616c6963652516ede1"
    big = Record.put(b"big", bytes(range(256)) * 400)
    data = big.encode()
    assert int.from_bytes(data[-4:], "little") == oracle.crc32c(data[:-4])
    with Wal.open(WalConfig(dir=str(tmp_path), max_segment_size=1 << 20, fsync_policy=FsyncPolicy.OS))[0] as wal:
        wal.append(rec)
        wal.append(big)
    wal, info = Wal.open(WalConfig(dir=str(tmp_path), max_segment_size=1 << 20, fsync_policy=FsyncPolicy.OS))
    with wal:
        assert info.valid_records == 2 and not info.corruption_detected
        assert [r for r, _ in wal.read_from(Position(0, 0))] == [rec, big]
