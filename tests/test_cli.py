"""The ``norikv`` command, run as a subprocess the way a user runs it:
``python -m norikv ...`` and the console script installed next to the
interpreter."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from norikv import KvStore, Record
from ptyutil import run_with_tty_stderr
from storeutil import THREE_SEGMENT_KEYS

BIN = Path(sys.executable).parent / "norikv"
TIMEOUT = 60
SEG = 1 << 20


def run(*args: object, input: bytes | None = None, script: bool = False) -> subprocess.CompletedProcess:
    cmd = [str(BIN)] if script else [sys.executable, "-m", "norikv"]
    return subprocess.run(cmd + [str(a) for a in args], input=input, capture_output=True, timeout=TIMEOUT)


def ok(*args: object, input: bytes | None = None) -> bytes:
    r = run(*args, input=input)
    assert r.returncode == 0, (args, r.returncode, r.stderr.decode())
    return r.stdout


def one_line_error(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The command failed with ``code`` and exactly one line on stderr, no traceback."""
    err = r.stderr.decode()
    assert r.returncode == code, (r.returncode, err)
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, (n, err)
    return err


def fingerprint(store: Path) -> dict[str, tuple[int, str]]:
    """Every file under the store with its size and content hash; LOCK's
    content (the pid of the last process that took the lock, written even by
    an open that recovery then refuses) and SHM's (the processes' shared
    state) are not data: only their presence counts."""
    out = {}
    for p in sorted(store.rglob("*")):
        if p.name in ("LOCK", "SHM"):
            out[str(p.relative_to(store))] = (0, "")
        elif p.is_file():
            out[str(p.relative_to(store))] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def record_start(path: Path, offset: int) -> int:
    """Offset of the record holding byte ``offset`` of a segment."""
    data = path.read_bytes()
    pos = 0
    while True:
        _, size = Record.decode(data, pos)
        if pos + size > offset:
            return pos
        pos += size


def flip(path: Path, offset: int) -> int:
    """Inverts one byte of a segment; returns the offset of the record it damaged."""
    start = record_start(path, offset)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    return start


KEYS = THREE_SEGMENT_KEYS


@pytest.fixture
def store(store_copy: Path) -> Path:
    """A store of KEYS keys in three 1 MiB segments (conftest's three_segment_store)."""
    return store_copy


def segments(store: Path) -> list[Path]:
    return sorted((store / "wal").glob("*.wal"))


def value_of(i: int) -> bytes:
    return b"v%06d" % i + b"." * 93


# ---------------------------------------------------------------- entry points


def test_console_script_and_module_are_the_same_command(tmp_path: Path) -> None:
    assert BIN.exists()
    a = run("--version", script=True)
    b = run("--version")
    assert a.returncode == b.returncode == 0
    assert a.stdout == b.stdout and a.stdout.startswith(b"norikv ")
    d = tmp_path / "s"
    assert run("put", d, "k", "v", "--create", script=True).returncode == 0
    assert ok("get", d, "k") == b"v\n"
    h = run("--help", script=True).stdout.decode()
    for cmd in (
        "info",
        "get",
        "put",
        "delete",
        "scan",
        "dump",
        "verify",
        "compact",
        "repair",
        "export",
        "import",
        "bench",
    ):
        assert cmd in h


def test_no_command_is_a_usage_error() -> None:
    r = run()
    assert r.returncode == 2 and b"Traceback" not in r.stderr


# ---------------------------------------------------------------- get / put / delete


def test_put_get_delete_text(tmp_path: Path) -> None:
    d = tmp_path / "s"
    one_line_error(run("put", d, "k", "v"), 3, "no such directory")
    assert not d.exists()
    ok("put", d, "user:1", "Alice", "--create")
    ok("put", d, "user:2", "Bob ünïcode")
    assert ok("get", d, "user:1") == b"Alice\n"
    assert ok("get", d, "user:2", "-n") == "Bob ünïcode".encode()
    ok("delete", d, "user:1")
    one_line_error(run("get", d, "user:1"), 1, "key not found: user:1")
    one_line_error(run("delete", d, "user:1"), 1, "key not found")
    with KvStore.open(d) as s:
        assert s.items() == [(b"user:2", "Bob ünïcode".encode())]


def test_hex_and_base64_keys_and_values(tmp_path: Path) -> None:
    d = tmp_path / "s"
    key, value = b"\x00\xff\n\t", b"\x00\x01\r\n\xfe"
    ok("put", d, "--hex", key.hex(), value.hex(), "--create")
    assert ok("get", d, "--hex", key.hex()) == value.hex().encode() + b"\n"
    assert ok("get", d, "--base64", base64.b64encode(key).decode()) == base64.b64encode(value) + b"\n"
    b64k = base64.b64encode(b"\x01\x02").decode()
    ok("put", d, "--base64", b64k, base64.b64encode(b"\xff" * 3).decode())
    with KvStore.open(d) as s:
        assert s.get(key) == value and s.get(b"\x01\x02") == b"\xff\xff\xff"
    ok("delete", d, "--hex", key.hex())
    one_line_error(run("get", d, "--hex", "zz"), 2, "invalid hex for key")
    one_line_error(run("get", d, "--hex", "abc"), 2, "invalid hex")
    one_line_error(run("put", d, "--hex", "00", "xyz"), 2, "invalid hex for value")
    one_line_error(run("get", d, "--base64", "a"), 2, "invalid base64 for key")
    one_line_error(run("delete", d, "--base64", "!!!!"), 2, "invalid base64")


def test_put_with_ttl_survives_export_and_is_counted(tmp_path: Path) -> None:
    d = tmp_path / "s"
    ok("put", d, "t", "x", "--ttl", "3600", "--create")
    info = json.loads(ok("info", d, "--json"))
    assert info["keys"] == 1 and info["ttl_keys"] == 1
    line = json.loads(ok("export", d))
    assert base64.b64decode(line["key"]) == b"t"
    assert line["expires_at_ms"] > 0
    one_line_error(run("put", d, "t", "x", "--ttl", "0"), 2, "--ttl")


# ---------------------------------------------------------------- scan / info


def test_scan_order_bounds_and_formats(tmp_path: Path) -> None:
    d = tmp_path / "s"
    items = {b"a": b"1", b"b/1": b"x", b"b/2": b"y", b"b/3": b"tab\there", b"c": b"\xff\x00", b"d\nnl": b"back\\slash"}
    with KvStore.open(d) as s:
        for k, v in items.items():
            s.put(k, v)
        s.put(b"gone", b"z")
        s.delete(b"gone")
    lines = ok("scan", d).decode().splitlines()
    assert lines == ["a\t1", "b/1\tx", "b/2\ty", "b/3\ttab\\there", "c\t\\xff\\x00", "d\\nnl\tback\\\\slash"]
    assert ok("scan", d, "--prefix", "b/").decode().splitlines() == ["b/1\tx", "b/2\ty", "b/3\ttab\\there"]
    assert ok("scan", d, "--start", "b/2", "--end", "c").decode().splitlines() == ["b/2\ty", "b/3\ttab\\there"]
    assert ok("scan", d, "--reverse", "--limit", "2").decode().splitlines() == [
        "d\\nnl\tback\\\\slash",
        "c\t\\xff\\x00",
    ]
    assert ok("scan", d, "--prefix", "b/", "--reverse", "--limit", "1").decode() == "b/3\ttab\\there\n"
    hexed = [ln.split("\t") for ln in ok("scan", d, "--format", "hex").decode().splitlines()]
    assert [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in hexed] == sorted(items.items())
    objs = [json.loads(ln) for ln in ok("scan", d, "--format", "json").decode().splitlines()]
    assert objs[0] == {"key": "a", "value": "1"}
    assert objs[4] == {"key": "c", "value_base64": base64.b64encode(b"\xff\x00").decode()}
    assert ok("scan", d, "--hex", "--prefix", b"b/".hex(), "--limit", "1") == b"b/1\tx\n"
    assert ok("scan", d, "--prefix", "zzz") == b""
    one_line_error(run("scan", d, "--hex", "--start", "q"), 2, "invalid hex for --start")


def test_info_matches_the_store(store: Path) -> None:
    info = json.loads(ok("info", store, "--json"))
    with KvStore.open(store, max_segment_size=SEG) as s:
        st = s.stats()
    for name in ("keys", "live_bytes", "wal_bytes", "segments"):
        assert info[name] == st[name], name
    assert info["keys"] == KEYS
    assert info["recovery_records"] == KEYS
    assert info["tail_damage"] is None and info["locked_by"] == []
    text = ok("info", store).decode()
    assert f"keys           {KEYS:,}" in text and "lock           free" in text


# ---------------------------------------------------------------- dump


def test_dump_lists_every_record_with_its_position(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with KvStore.open(d) as s:
        s.put(b"a", b"12345")
        s.put(b"b", b"x", ttl=3600)
        s.delete(b"a")
        with s.batch() as b:
            b.put(b"c", b"1")
            b.put(b"\xff", b"22")
        s.put(b"big", b"y" * 4000, compression="zstd")
    seg = d / "wal" / "000000.wal"
    data = seg.read_bytes()
    expected = []
    pos = 0
    while pos < len(data):
        rec, size = Record.decode(data, pos)
        expected.append((pos, rec))
        pos += size
    lines = [ln.split("\t") for ln in ok("dump", d).decode().splitlines()]
    assert [ln[0] for ln in lines] == [f"0:{p}" for p, _ in expected]
    assert [ln[1] for ln in lines] == ["put", "put", "delete", "put", "put", "put"]
    assert [ln[2] for ln in lines] == ["a", "b", "a", "c", "\\xff", "big"]
    assert lines[0][3] == "5" and lines[2][3] == "0"
    assert lines[1][4].startswith("0x42 ttl_ms=") and lines[1][4].endswith("(abs)")
    assert lines[3][4] == "0x20 batch" and lines[4][4] == "0x80 batch-end"
    assert "zstd" in lines[5][4] and int(lines[5][3]) < 4000  # stored (compressed) size
    objs = [json.loads(ln) for ln in ok("dump", d, "--format", "json").decode().splitlines()]
    assert [(o["segment"], o["offset"]) for o in objs] == [(0, p) for p, _ in expected]
    assert objs[4]["key_base64"] == base64.b64encode(b"\xff").decode()
    # --from a record boundary lists that record and everything after it.
    third = expected[2][0]
    tail = ok("dump", d, "--from", f"0:{third}").decode().splitlines()
    assert [ln.split("\t")[0] for ln in tail] == [f"0:{p}" for p, _ in expected[2:]]
    assert ok("dump", d, "--from", f"000000.wal:{third}").decode().splitlines() == tail
    one_line_error(run("dump", d, "--from", "0:1"), 2, "bad --from 0:1", "no record starts")
    one_line_error(run("dump", d, "--from", "7:0"), 2, "no segment 000007.wal")
    one_line_error(run("dump", d, "--from", "0:99999999"), 2, "past the end")
    one_line_error(run("dump", d, "--from", "zero"), 2, "bad --from")


def test_dump_reports_damage_and_goes_on(store: Path) -> None:
    seg0 = segments(store)[0]
    at = flip(seg0, 5000)
    r = run("dump", store)
    err = one_line_error(r, 1, "000000.wal", f"offset {at}")
    assert "CRC32C mismatch" in err
    out = r.stdout.decode().splitlines()
    assert out[0].startswith("0:0\tput\tk000000")
    assert any(ln.startswith("1:0\t") for ln in out)  # later segments still listed


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "argv",
    [
        ["info"],
        ["get", "k"],
        ["put", "k", "v"],
        ["delete", "k"],
        ["scan"],
        ["dump"],
        ["verify"],
        ["compact"],
        ["repair", "--mode", "point_in_time"],
        ["export"],
        ["import"],
    ],
)
def test_missing_directory_is_one_line(tmp_path: Path, argv: list[str]) -> None:
    missing = tmp_path / "nope"
    r = run(argv[0], missing, *argv[1:], input=b"")
    one_line_error(r, 3, str(missing), "no such directory")
    assert not missing.exists()


def test_a_directory_without_wal_is_not_a_store(tmp_path: Path) -> None:
    one_line_error(run("info", tmp_path), 3, "not a norikv store")
    one_line_error(run("verify", tmp_path), 3, "not a norikv store")


# ---------------------------------------------------------------- verify


def test_verify_clean_store(store: Path) -> None:
    before = fingerprint(store)
    r = run("verify", store)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "000000.wal: ok" in out and f"clean: 3 segment(s), {KEYS} records" in out
    assert r.stderr == b""
    rep = json.loads(ok("verify", store, "--json"))
    assert rep["clean"] and rep["records"] == KEYS
    assert run("verify", store, "--quiet").stdout == b""
    assert fingerprint(store) == before


def _crashed_store(path: Path, n: int) -> None:
    """A store whose writer was SIGKILLed: the active segment keeps its
    preallocated zero tail."""
    code = textwrap.dedent(f"""
        import sys
        from norikv import KvStore
        s = KvStore.open({str(path)!r}, max_segment_size={SEG})
        for i in range({n}):
            s.put(b"c%05d" % i, b"w" * 50)
        sys.stdout.write("done\\n"); sys.stdout.flush()
        sys.stdin.readline()
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"done\n"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(TIMEOUT)


def test_zero_filled_preallocated_tail_is_clean_and_left_alone(tmp_path: Path) -> None:
    d = tmp_path / "s"
    _crashed_store(d, 1000)
    (seg,) = segments(d)
    assert seg.stat().st_size == SEG  # preallocated, never finalized
    before = fingerprint(d)
    r = run("verify", d)
    assert r.returncode == 0, r.stderr
    assert "zero bytes of preallocation" in r.stdout.decode()
    assert ok("get", d, "c00999") == b"w" * 50 + b"\n"
    assert len(ok("scan", d).splitlines()) == 1000
    assert len(ok("export", d).splitlines()) == 1000
    assert len(ok("dump", d).splitlines()) == 1000
    ok("info", d)
    assert fingerprint(d) == before  # no read-only command truncated anything


def test_verify_finds_damage_in_a_non_final_segment(store: Path) -> None:
    seg0 = segments(store)[0]
    at = flip(seg0, 300_000)
    before = fingerprint(store)
    r = run("verify", store)
    err = one_line_error(r, 1, str(seg0), f"offset {at}", "CRC32C mismatch", "refuses")
    assert f"000000.wal: DAMAGED at offset {at}" in r.stdout.decode()
    rep = json.loads(run("verify", store, "--json").stdout)
    assert not rep["clean"]
    (dmg,) = rep["segments"][0]["damage"]
    assert dmg["offset"] == at and dmg["records_after"] > 0
    assert [s["damage"] for s in rep["segments"][1:]] == [[], []]
    # Commands that need the whole state refuse with one line; nothing changes.
    one_line_error(run("get", store, "k000000"), 3, "corrupt store", "000000.wal")
    one_line_error(run("info", store), 3, "corrupt store")
    one_line_error(run("put", store, "a", "b"), 3, "corrupt store", "repair")
    one_line_error(run("compact", store), 3, "corrupt store")
    assert fingerprint(store) == before
    assert "corruption" in err


def test_verify_finds_damage_in_the_last_segment_and_nothing_truncates_it(store: Path) -> None:
    last = segments(store)[-1]
    size = last.stat().st_size
    at = flip(last, size - 50)
    before = fingerprint(store)
    r = run("verify", store)
    one_line_error(r, 1, str(last), f"offset {at}", "would cut the damaged tail")
    # Read-only commands see what an open would keep, and cut nothing.
    assert ok("get", store, "k000000").startswith(b"v000000")
    one_line_error(run("get", store, "k%06d" % (KEYS - 1)), 1, "key not found")
    info = json.loads(ok("info", store, "--json"))
    assert info["keys"] == KEYS - 1
    assert info["tail_damage"]["offset"] == at and info["tail_damage"]["file"] == last.name
    assert fingerprint(store) == before
    # Writing commands refuse until an explicit repair.
    one_line_error(run("put", store, "a", "b"), 3, "repair")
    assert fingerprint(store) == before


def test_verify_while_another_process_holds_the_store(tmp_path: Path) -> None:
    d = tmp_path / "s"
    code = textwrap.dedent(f"""
        import sys
        from norikv import KvStore, FsyncPolicy
        s = KvStore.open({str(d)!r}, max_segment_size={SEG})
        for i in range(12000):
            s.put(b"h%05d" % i, b"z" * 100)
        print("ready", flush=True)
        sys.stdin.readline()
        s.put(b"after", b"verify")     # the lock is still ours: writes go on
        s.close()
        print("closed", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        r = run("verify", d)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert f"open in pid {p.pid}" in out and "clean: 2 segment(s)" in out
        info = json.loads(ok("info", d, "--json"))
        assert info["locked_by"] == [p.pid] and info["keys"] == 12000
        assert ok("get", d, "h11999") == b"z" * 100 + b"\n"
        assert len(ok("export", d).splitlines()) == 12000
        # the store is shared: put and compact join the process that has it open
        assert ok("put", d, "x", "y") == b""
        assert ok("get", d, "x") == b"y\n"
        assert run("compact", d).returncode == 0
        # repair rewrites the log: it needs the directory to itself
        one_line_error(run("repair", d, "--mode", "point_in_time"), 3, "locked", f"pid {p.pid}")
        p.stdin.write(b"go\n")
        p.stdin.flush()
        assert p.stdout.readline() == b"closed\n"
        assert p.wait(TIMEOUT) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(TIMEOUT)
    assert ok("get", d, "after") == b"verify\n"
    assert json.loads(ok("info", d, "--json"))["locked_by"] == []


# ---------------------------------------------------------------- repair


def test_repair_tolerate_cuts_a_damaged_tail_and_keeps_a_copy(store: Path) -> None:
    last = segments(store)[-1]
    size = last.stat().st_size
    at = flip(last, size - 50)
    original = last.read_bytes()
    r = run("repair", store, "--mode", "tolerate_corrupted_tail")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    backups = list((store / "wal").glob("repair-backup-*"))
    assert len(backups) == 1
    assert str(backups[0]) in out
    assert (backups[0] / last.name).read_bytes() == original
    manifest = json.loads((backups[0] / "MANIFEST.json").read_text())
    assert manifest["mode"] == "tolerate_corrupted_tail"
    assert [f["file"] for f in manifest["files"]] == [last.name]
    assert last.stat().st_size == at
    assert run("verify", store).returncode == 0
    ok("put", store, "new", "key")
    assert json.loads(ok("info", store, "--json"))["keys"] == KEYS  # KEYS-1 + "new"
    # A clean store: nothing to do, no backup made.
    r = run("repair", store, "--mode", "tolerate_corrupted_tail")
    assert r.returncode == 0 and b"nothing to repair" in r.stdout
    assert len(list((store / "wal").glob("repair-backup-*"))) == 1


def test_repair_modes_on_damage_before_the_last_segment(store: Path, tmp_path: Path) -> None:
    segs = segments(store)
    at = flip(segs[0], 500_000)
    originals = {p.name: p.read_bytes() for p in segs}
    before = fingerprint(store)
    for mode in ("tolerate_corrupted_tail", "absolute_consistency"):
        one_line_error(run("repair", store, "--mode", mode), 3, "refuses", "nothing was changed")
        assert fingerprint(store) == before
    skip = tmp_path / "skip"
    shutil.copytree(store, skip)
    # point_in_time: the log is cut at the damage; the later segments go, copied first.
    r = run("repair", store, "--mode", "point_in_time")
    assert r.returncode == 0, r.stderr
    (backup,) = (store / "wal").glob("repair-backup-*")
    for name, data in originals.items():
        assert (backup / name).read_bytes() == data
    assert [p.name for p in segments(store)] == ["000000.wal"]
    assert segs[0].stat().st_size == at
    info = json.loads(ok("info", store, "--json"))
    assert 0 < info["keys"] < KEYS and info["tail_damage"] is None
    assert run("verify", store).returncode == 0
    # skip_any_corrupted_records: only the damaged record is lost; only its segment is copied.
    r = run("repair", skip, "--mode", "skip_any_corrupted_records")
    assert r.returncode == 0, r.stderr
    (backup,) = (skip / "wal").glob("repair-backup-*")
    assert sorted(p.name for p in backup.glob("*.wal")) == ["000000.wal"]
    assert (backup / "000000.wal").read_bytes() == originals["000000.wal"]
    assert json.loads(ok("info", skip, "--json"))["keys"] == KEYS - 1
    assert run("verify", skip).returncode == 0


# ---------------------------------------------------------------- export / import / compact


def test_export_import_roundtrip_with_binary_keys(tmp_path: Path) -> None:
    src = tmp_path / "src"
    items = {
        b"": b"empty key",
        b"\x00": b"\x00" * 10,
        b"\xff\xfe\n\t": b"\r\n",
        "ключ".encode(): b"v",
        b"plain": b"x" * 5000,
    }
    items.update({bytes([i, 0, 255 - i]): bytes([i]) * i for i in range(256)})
    with KvStore.open(src) as s:
        for k, v in items.items():
            s.put(k, v)
        s.put(b"ttl", b"t", ttl=3600)
    dumped = ok("export", src)
    lines = dumped.splitlines()
    assert len(lines) == len(items) + 1
    got = {base64.b64decode(o["key"]): base64.b64decode(o["value"]) for o in map(json.loads, lines)}
    assert got == {**items, b"ttl": b"t"}
    dst = tmp_path / "dst"
    one_line_error(run("import", dst, input=dumped), 3, "no such directory")
    r = run("import", dst, "--create", input=dumped)
    assert r.returncode == 0, r.stderr
    assert f"imported {len(items) + 1} keys".encode() in r.stdout
    assert ok("export", dst) == dumped
    assert ok("scan", dst, "--format", "hex") == ok("scan", src, "--format", "hex")
    with KvStore.open(dst) as s:
        assert s._deadline_of(b"ttl") is not None
    f = tmp_path / "out.jsonl"
    r = run("export", src, "--file", f)
    assert r.returncode == 0 and f.read_bytes() == dumped
    dst2 = tmp_path / "dst2"
    ok("import", dst2, "--file", f, "--create", "--quiet")
    assert ok("export", dst2) == dumped


def test_import_rejects_bad_input_before_writing_anything(tmp_path: Path) -> None:
    d = tmp_path / "s"
    ok("put", d, "keep", "me", "--create")
    before = fingerprint(d)
    good = b'{"key": "YQ==", "value": "Yg=="}\n'
    for bad, msg in (
        (b"not json\n", "line 2: invalid JSON"),
        (b'{"key": "YQ=="}\n', "line 2: 'value'"),
        (b'{"key": "***", "value": "Yg=="}\n', "line 2: invalid base64 in 'key'"),
        (b"[1, 2]\n", "line 2: expected a JSON object"),
        (b'{"key": "YQ==", "value": "Yg==", "expires_at_ms": "soon"}\n', "expires_at_ms"),
    ):
        one_line_error(run("import", d, input=good + bad), 2, msg)
        assert fingerprint(d) == before
    one_line_error(run("import", d, "--file", tmp_path / "missing.jsonl"), 2, "cannot read")


def test_compact_shrinks_the_log_and_keeps_the_data(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with KvStore.open(d, auto_compact=False) as s:
        for r in range(5):
            for i in range(2000):
                s.put(b"k%04d" % i, b"%d" % r * 100)
    before = json.loads(ok("info", d, "--json"))
    scan_before = ok("scan", d)
    r = run("compact", d, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["bytes_after"] < res["bytes_before"] and res["keys"] == 2000
    after = json.loads(ok("info", d, "--json"))
    assert after["wal_bytes"] < before["wal_bytes"] / 3
    assert after["dead_ratio"] < 0.1 < before["dead_ratio"]
    assert ok("scan", d) == scan_before


# ---------------------------------------------------------------- terminal behaviour


def _run_with_tty_stderr(tmp_path: Path, *args: object) -> tuple[int, bytes, bytes]:
    """Runs the command with stderr on a pseudo-terminal (stdout to a file)."""
    out_path = tmp_path / "stdout"
    with open(out_path, "wb") as out:
        rc, err = run_with_tty_stderr([sys.executable, "-m", "norikv", *map(str, args)], out, TIMEOUT)
    return rc, out_path.read_bytes(), err


def test_progress_bar_only_on_a_terminal_and_never_with_quiet(store: Path, tmp_path: Path) -> None:
    rc, out, err = _run_with_tty_stderr(tmp_path, "verify", store)
    assert rc == 0 and b"clean" in out
    assert b"verifying" in err and b"%" in err
    rc, out, err = _run_with_tty_stderr(tmp_path, "export", store, "--quiet")
    assert rc == 0 and len(out.splitlines()) == KEYS and err == b""
    r = run("export", store)  # stderr is a pipe: no progress
    assert r.returncode == 0 and r.stderr == b""


def test_output_cut_short_by_a_closed_pipe_is_quiet(store: Path) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "norikv", "scan", str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert p.stdout.readline().startswith(b"k000000\t")
    p.stdout.close()
    err = p.stderr.read()
    p.wait(TIMEOUT)
    assert b"Traceback" not in err and b"Exception" not in err


# ---------------------------------------------------------------- bench


def test_bench_passes_its_arguments_to_the_runner() -> None:
    r = run("bench", "--help")
    assert r.returncode == 0, r.stderr
    assert b"--quick" in r.stdout  # norikv.bench's own option parser answered


def test_bench_without_the_runner_is_a_clear_error() -> None:
    code = (
        "import sys; sys.modules['norikv.bench'] = None; "
        "from norikv.cli import main; sys.exit(main(['bench', '--quick']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT)
    one_line_error(r, 2, "norikv bench", "not available")


def test_verify_and_info_while_another_process_keeps_writing(tmp_path: Path) -> None:
    """Records being copied into the active segment, rotations and
    compactions in the writer never show up as damage."""
    d = tmp_path / "s"
    stop = tmp_path / "stop"
    code = textwrap.dedent(f"""
        import os
        from norikv import KvStore
        s = KvStore.open({str(d)!r}, max_segment_size={SEG}, compact_min_bytes={SEG})
        for i in range(2000):
            s.put(b"k%04d" % i, b"x" * 100)
        print("ready", flush=True)
        i = 0
        while not os.path.exists({str(stop)!r}):
            s.put(b"k%04d" % (i % 2000), b"x" * (i % 300))
            if i % 500 == 0:
                with s.batch() as b:
                    for j in range(20):
                        b.put(b"b%02d" % j, b"y" * 50)
            i += 1
        s.close()
    """)
    err = tmp_path / "writer-stderr"
    with open(err, "wb") as errf:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=errf)
    try:
        assert p.stdout.readline() == b"ready\n", err.read_text()
        for _ in range(3):
            r = run("verify", d, "--quiet")
            assert r.returncode == 0, r.stderr
            info = json.loads(ok("info", d, "--json"))
            assert info["keys"] >= 2000 and info["locked_by"] == [p.pid], err.read_text()
    finally:
        stop.touch()
        assert p.wait(TIMEOUT) == 0, err.read_text()
    assert run("verify", d).returncode == 0


def test_a_torn_atomic_batch_is_reported_and_only_repair_removes_it(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with KvStore.open(d) as s:
        s.put(b"before", b"1")
        with s.batch() as b:
            b.put(b"in-batch-1", b"2")
            b.put(b"in-batch-2", b"3")
    (seg,) = segments(d)
    data = seg.read_bytes()
    first, size = Record.decode(data, 0)
    second_at = size
    _, size2 = Record.decode(data, second_at)
    seg.write_bytes(data[: second_at + size2])  # the batch's last record never made it
    before = fingerprint(d)
    r = run("verify", d)
    one_line_error(r, 1, f"offset {second_at}", "never terminated")
    assert ok("scan", d) == b"before\t1\n"  # replay drops the partial batch
    one_line_error(run("put", d, "x", "y"), 3, "unterminated", f"offset {second_at}", "repair")
    assert fingerprint(d) == before
    r = run("repair", d, "--mode", "tolerate_corrupted_tail")
    assert r.returncode == 0, r.stderr
    (backup,) = (d / "wal").glob("repair-backup-*")
    assert (backup / seg.name).read_bytes() == data[: second_at + size2]
    assert seg.stat().st_size == second_at
    ok("put", d, "x", "y")
    assert ok("scan", d) == b"before\t1\nx\ty\n"


def test_put_value_from_stdin_and_from_a_file(tmp_path: Path) -> None:
    d = tmp_path / "s"
    blob = bytes(range(256)) * 40 + b"\n"
    ok("put", d, "from-stdin", "-", "--create", input=blob)
    f = tmp_path / "value.bin"
    f.write_bytes(b"\x00file\xff")
    ok("put", d, "--hex", b"fk".hex(), "--value-file", f)  # the file's bytes are raw, never hex-decoded
    ok("put", d, "empty", "-", input=b"")
    with KvStore.open(d) as s:
        assert s[b"from-stdin"] == blob
        assert s[b"fk"] == b"\x00file\xff"
        assert s[b"empty"] == b""
    one_line_error(run("put", d, "k"), 2, "VALUE")
    one_line_error(run("put", d, "k", "v", "--value-file", f), 2, "not both")
    one_line_error(run("put", d, "k", "--value-file", tmp_path / "missing"), 2, "--value-file", "No such file")
    one_line_error(run("put", d, "k", "-", "--max-value-size", "10", input=b"x" * 11), 2, "larger than")
    ok("put", d, "k10", "-", "--max-value-size", "10", input=b"x" * 10)
    with KvStore.open(d) as s:
        assert b"k" not in s and s[b"k10"] == b"x" * 10


def test_an_unexpected_exception_is_exit_70(monkeypatch, capsys, tmp_path: Path) -> None:
    # 70 (EX_SOFTWARE) is documented in docs/cli.md's exit code table.
    from norikv import cli

    def boom(args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "info", boom)
    monkeypatch.delenv("NORIKV_DEBUG", raising=False)
    assert cli.main(["info", str(tmp_path)]) == 70
    assert "internal error: RuntimeError: a bug" in capsys.readouterr().err


def test_every_exit_code_in_the_source_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    from norikv import cli
    from norikv.cli import output

    codes = {v for k, v in vars(output).items() if k.startswith("EXIT_")}
    codes |= {v for k, v in vars(cli).items() if k.startswith("_EXIT_")}
    for code in codes:
        assert f"\n| {code} |" in doc, code
