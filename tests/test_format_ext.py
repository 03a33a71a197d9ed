"""norikv's format extensions against what a nori-wal writer can do
(issue 11, points 4 and 6): TTLs too large for the clock, and atomic batches
torn by a crash and then appended to by a writer that ignores bits 5-7."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spec_codec as spec
from norikv import Record, RecoveryMode, Wal, WalConfig, _engine
from storeutil import open_store, wal_entries

BATCH_CONT, TTL_ABS, BATCH_END = 0x20, 0x40, 0x80
MAX = (1 << 63) - 1  # DEADLINE_MAX: int64 Unix ms
HUGE = [(1 << 63) - 1, 1 << 63, (1 << 64) - 1]

# Issue 11, point 6: norikv wrote `before` and a batch b1..b5 (old scheme:
# BATCH_CONT on all but the last), a crash cut the file at b4, nori-wal
# opened the directory and appended `later`.
ISSUE_SEGMENT = bytes.fromhex(
    "0601006265666f72653047f1f33d020120623131e8ceb89b02012062323285950fbc020120623333f18ec65d0501006c617465727804bde505"
)


def write_segments(root: Path, *segments: bytes) -> None:
    (root / "wal").mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(segments):
        (root / "wal" / spec.segment_name(i)).write_bytes(data)


def rec(key: bytes, value: bytes = b"v", flags: int = 0, ttl_ms: int | None = None) -> bytes:
    """A record's bytes with the given extension bits (spec_codec, not norikv)."""
    return spec.encode(spec.SpecRecord(key, value, ttl_ms=ttl_ms, reserved=flags))


def flags_on_disk(root: Path) -> list[tuple[bytes, int]]:
    return [(r.key, r.flags & (BATCH_CONT | BATCH_END)) for r, _ in wal_entries(str(root))]


@pytest.fixture
def clock():
    _engine._set_clock_offset_ms(0)
    yield
    _engine._set_clock_offset_ms(0)


# ------------------------------------------------------------------ point 6: atomic batches


def test_issue_reproduction_gives_before_and_later_only(tmp_path):
    write_segments(tmp_path, ISSUE_SEGMENT)
    for _ in range(2):  # nothing is cut: the same on every open
        with open_store(tmp_path) as s:
            assert dict(s.items()) == {b"before": b"0", b"later": b"x"}
            info = s.recovery_info
            assert info.batch_records_dropped == 3
            assert info.valid_records == 2 and not info.corruption_detected
            assert s.stats()["recovery_records"] == 2
    assert (tmp_path / "wal" / "000000.wal").read_bytes() == ISSUE_SEGMENT
    res = _engine.scan_segment(str(tmp_path / "wal" / "000000.wal"), 0, None)
    assert (res["records"], res["batch_dropped"], res["batch_open"]) == (5, 3, None)
    # the Wal alone reads every record (it applies nothing)
    assert [r.key for r in (e[0] for e in wal_entries(str(tmp_path)))] == [b"before", b"b1", b"b2", b"b3", b"later"]
    # compaction drops the broken batch for good
    with open_store(tmp_path) as s:
        s.compact()
    with open_store(tmp_path) as s:
        assert dict(s.items()) == {b"before": b"0", b"later": b"x"}
        assert s.recovery_info.batch_records_dropped == 0


@pytest.mark.parametrize("mode", list(RecoveryMode), ids=lambda m: m.name)
def test_torn_batch_then_a_foreign_plain_append(tmp_path, mode):
    """norikv writes a batch, a crash tears it at b4, nori-wal recovers the
    directory (cutting the torn record) and appends a plain record: norikv
    then applies none of the batch, and the appended record."""
    with open_store(tmp_path) as s:
        s.put(b"before", b"0")
        with s.batch() as b:
            for i in range(1, 6):
                b.put(b"b%d" % i, b"%d" % i)
    entries = wal_entries(str(tmp_path))
    assert [f for _, f in flags_on_disk(tmp_path)] == [0] + [BATCH_CONT] * 4 + [BATCH_END]
    seg = tmp_path / "wal" / "000000.wal"
    b4 = entries[4][1].offset
    # what nori-wal leaves: the valid prefix (its recovery cuts the torn b4),
    # then its own record, bits 5-7 zero
    seg.write_bytes(seg.read_bytes()[:b4] + Record.put(b"later", b"x").encode())
    with open_store(tmp_path, recovery_mode=mode) as s:
        assert dict(s.items()) == {b"before": b"0", b"later": b"x"}
        assert s.recovery_info.batch_records_dropped == 3
        s.put(b"after", b"y")
    with open_store(tmp_path, recovery_mode=mode) as s:
        assert dict(s.items()) == {b"before": b"0", b"later": b"x", b"after": b"y"}


def test_foreign_append_after_torn_batch_with_skip_mode_rewrite(tmp_path):
    """SKIP_ANY_CORRUPTED_RECORDS rewrites a damaged segment without its
    damaged span; the broken batch stays in the log (as in every mode: replay
    never applies it, a compaction removes it), everything else is kept."""
    bad = bytearray(rec(b"damaged", b"zzzz"))
    bad[-1] ^= 0xFF
    write_segments(tmp_path, ISSUE_SEGMENT + bytes(bad) + rec(b"tail"))
    with open_store(tmp_path, recovery_mode=RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS) as s:
        assert dict(s.items()) == {b"before": b"0", b"later": b"x", b"tail": b"v"}
        assert s.recovery_info.batch_records_dropped == 3
        assert s.recovery_info.spans_skipped == 1
    assert [k for k, _ in flags_on_disk(tmp_path)] == [b"before", b"b1", b"b2", b"b3", b"later", b"tail"]
    with open_store(tmp_path) as s:
        assert dict(s.items()) == {b"before": b"0", b"later": b"x", b"tail": b"v"}
        assert s.recovery_info.batch_records_dropped == 3
        assert not s.recovery_info.corruption_detected


def test_batch_open_at_the_end_of_the_log_is_cut(tmp_path):
    """A run of BATCH_CONT records at the end of the log (its BATCH_END never
    written) is cut as before, and reported."""
    write_segments(tmp_path, rec(b"a") + rec(b"b1", flags=BATCH_CONT) + rec(b"b2", flags=BATCH_CONT))
    size_a = len(rec(b"a"))
    with open_store(tmp_path) as s:
        assert dict(s.items()) == {b"a": b"v"}
        info = s.recovery_info
        assert info.corruption_detected and info.bytes_truncated == 2 * len(rec(b"b1"))
        assert info.batch_records_dropped == 0 and info.valid_records == 1
        s.put(b"c", b"w")
    assert (tmp_path / "wal" / "000000.wal").stat().st_size == size_a + len(Record.put(b"c", b"w").encode())
    with open_store(tmp_path) as s:
        assert dict(s.items()) == {b"a": b"v", b"c": b"w"}
    # ABSOLUTE_CONSISTENCY refuses it, as before
    write_segments(tmp_path, rec(b"a") + rec(b"b1", flags=BATCH_CONT))
    from norikv import CorruptionError

    with pytest.raises(CorruptionError, match="unterminated"):
        open_store(tmp_path, recovery_mode=RecoveryMode.ABSOLUTE_CONSISTENCY)


def test_batch_open_at_the_end_of_a_non_final_segment_is_dropped(tmp_path):
    write_segments(
        tmp_path,
        rec(b"a") + rec(b"b1", flags=BATCH_CONT) + rec(b"b2", flags=BATCH_CONT),
        rec(b"c", flags=BATCH_END) + rec(b"d"),
    )
    for mode in RecoveryMode:
        with open_store(tmp_path, recovery_mode=mode) as s:
            # c's BATCH_END has no run before it in its segment: a plain record
            assert dict(s.items()) == {b"a": b"v", b"c": b"v", b"d": b"v"}, mode
            assert s.recovery_info.batch_records_dropped == 2
            assert not s.recovery_info.corruption_detected


def test_complete_batches_and_lone_batch_end(tmp_path):
    write_segments(
        tmp_path,
        rec(b"x", flags=BATCH_END)  # no run: plain
        + rec(b"b1", flags=BATCH_CONT)
        + rec(b"b2", flags=BATCH_END)
        + rec(b"c1", flags=BATCH_CONT)
        + rec(b"c2", flags=BATCH_CONT)
        + rec(b"y")  # breaks c1, c2
        + rec(b"d1", flags=BATCH_CONT)
        + rec(b"d2", flags=BATCH_END),
    )
    with open_store(tmp_path) as s:
        assert sorted(s.keys()) == [b"b1", b"b2", b"d1", b"d2", b"x", b"y"]
        assert s.recovery_info.batch_records_dropped == 2
    # the Wal-level collector applies the same rule, in log order
    sink = _engine._RecordCollector()
    _engine.scan_segment(str(tmp_path / "wal" / "000000.wal"), 0, sink)
    assert [r.key for r, _ in sink.records] == [b"x", b"b1", b"b2", b"y", b"d1", b"d2"]


def test_batches_written_by_the_old_scheme_read_as_torn(tmp_path):
    """Before BATCH_END (0.1.0 was never released) a batch ended with a plain
    record: such a batch now reads as broken, and only its last record applies
    (docs/FORMAT.md, CHANGELOG)."""
    write_segments(tmp_path, rec(b"a1", flags=BATCH_CONT) + rec(b"a2", flags=BATCH_CONT) + rec(b"a3"))
    with open_store(tmp_path) as s:
        assert dict(s.items()) == {b"a3": b"v"}
        assert s.recovery_info.batch_records_dropped == 2


def test_batch_flags_written(tmp_path):
    """KvStore batches and Wal.append_batch(atomic=True) mark the end; a
    one-record batch is a plain record; a non-atomic append_batch clears any
    batch bits its records carry."""
    with open_store(tmp_path) as s:
        with s.batch() as b:
            b.put(b"one", b"1")
        with s.batch() as b:
            b.put(b"p", b"1")
            b.delete(b"one")
            b.put(b"q", b"2", ttl=60)
    assert flags_on_disk(tmp_path) == [(b"one", 0), (b"p", BATCH_CONT), (b"one", BATCH_CONT), (b"q", BATCH_END)]
    d = tmp_path / "w"
    with Wal.open(WalConfig(dir=str(d)))[0] as wal:
        wal.append_batch([Record.put(b"s", b"1")], atomic=True)
        wal.append_batch([Record.put(b"t%d" % i, b"1") for i in range(3)], atomic=True)
        marked = Record.decode(rec(b"m", flags=BATCH_CONT))[0]
        wal.append_batch([marked, Record.decode(rec(b"n", flags=BATCH_END))[0]])
        got = [(r.key, r.flags & 0xA0) for r, _ in wal.read_from(_engine.Position(0, 0))]
    assert got == [(b"s", 0), (b"t0", BATCH_CONT), (b"t1", BATCH_CONT), (b"t2", BATCH_END), (b"m", 0), (b"n", 0)]


# A log as a list of events; the model is what the batch rule applies.
_event = st.one_of(
    st.tuples(st.just("put"), st.integers(0, 5)),
    st.tuples(st.just("batch"), st.lists(st.integers(0, 5), min_size=1, max_size=4)),
    # a batch torn by a crash (the records before its end), then a record
    # appended by nori-wal (after a torn batch, norikv's own recovery cuts it
    # before anything else is written)
    st.tuples(st.just("torn"), st.lists(st.integers(0, 5), min_size=1, max_size=3)),
)


def _batch_bytes(root: Path, keys: list[int], val: bytes) -> bytes:
    """The bytes of an atomic batch as norikv's Wal.append_batch writes it."""
    d = root / "batchwal"
    with Wal.open(WalConfig(dir=str(d)))[0] as w:
        w.append_batch([Record.put(b"k%d" % k, val) for k in keys], atomic=True)
    data = (d / spec.segment_name(0)).read_bytes()
    for p in d.iterdir():
        p.unlink()
    return data


@settings(max_examples=60, deadline=None)
@given(events=st.lists(_event, max_size=12), tail=st.lists(st.integers(0, 5), max_size=3))
def test_batch_rule_model(tmp_path_factory, events, tail):
    """Random logs of plain puts, whole batches (written by norikv) and
    batches torn by a crash followed by a foreign append, maybe ending in a
    torn batch: replay applies exactly the whole batches and the other
    records; the torn ones are dropped (mid-log) or cut (at the end)."""
    root = tmp_path_factory.mktemp("model")
    data = b""
    model: dict[bytes, bytes] = {}
    dropped = 0
    for n, (kind, arg) in enumerate(events):
        val = b"%d" % n
        if kind == "put":
            data += rec(b"k%d" % arg, val)
            model[b"k%d" % arg] = val
        elif kind == "batch":
            data += _batch_bytes(root, arg, val)
            model.update((b"k%d" % k, val) for k in arg)
        else:
            data += b"".join(rec(b"k%d" % k, val, flags=BATCH_CONT) for k in arg)
            data += rec(b"foreign", val)
            model[b"foreign"] = val
            dropped += len(arg)
    size = len(data)
    data += b"".join(rec(b"k%d" % k, b"torn", flags=BATCH_CONT) for k in tail)
    write_segments(root, data)
    with open_store(root) as s:
        assert dict(s.items()) == model
        assert s.recovery_info.batch_records_dropped == dropped
        assert s.recovery_info.corruption_detected == bool(tail)
    assert (root / "wal" / spec.segment_name(0)).stat().st_size == size
    with open_store(root) as s:
        assert dict(s.items()) == model


# ------------------------------------------------------------------ point 4: huge TTLs


@pytest.mark.parametrize("ttl_ms", [0, 1, 1 << 32] + HUGE)
def test_relative_ttl_of_any_size(tmp_path, clock, ttl_ms):
    """A relative ttl_ms as nori-wal writes it: 0 is expired at once, a TTL
    too large for the clock means practically never (the deadline saturates
    at DEADLINE_MAX), never expired and never "no TTL"; the key stays so after
    the pinning open, a reopen and compact()."""
    with Wal.open(WalConfig(dir=str(tmp_path / "wal")))[0] as wal:
        wal.append(Record(b"k", b"v", ttl_ms=ttl_ms))
        wal.append(Record.put(b"plain", b"p"))
    before = _engine.now_ms()
    s = open_store(tmp_path)
    after = _engine.now_ms()
    if ttl_ms == 0:
        assert s.get(b"k") is None and s.stats()["ttl_keys"] == 0
        s.close()
        return
    if ttl_ms == 1:
        _engine._set_clock_offset_ms(1000)
        assert s.get(b"k") is None
        s.close()
        return
    want = min(ttl_ms, MAX) if ttl_ms in HUGE else None
    for step in ("open", "reopen", "compact"):
        assert s.get(b"k") == b"v", step
        deadline = s._deadline_of(b"k")
        if want is not None:
            assert deadline == want, step
        else:
            assert before + ttl_ms <= deadline <= after + ttl_ms, step
        assert s.stats()["ttl_keys"] == 1
        if step == "compact":
            # pinned once (not again by the reopen), with the deadline as it is
            raw, _ = spec.decode_segment((tmp_path / "wal" / "000000.wal").read_bytes())
            assert [(r.reserved, r.ttl_ms) for r, _ in raw if r.key == b"k"] == [(0, ttl_ms), (TTL_ABS, deadline)]
            s.compact()
        s.close()
        s = open_store(tmp_path)
    assert s.get(b"k") == b"v" and s._deadline_of(b"k") == deadline
    s.close()
    recs = [r for r, _ in wal_entries(str(tmp_path)) if r.key == b"k"]
    assert [(r.flags & (0x02 | TTL_ABS), r.ttl_ms) for r in recs] == [(0x02 | TTL_ABS, deadline)]


def test_expired_relative_ttl_then_a_plain_put_keeps_no_ttl(tmp_path, clock):
    """A relative-TTL put that has expired by the open, then a plain put of the
    same key: the plain value is live and carries no TTL (the pinning of
    expired relative TTLs must not reach the later value)."""
    with Wal.open(WalConfig(dir=str(tmp_path / "wal")))[0] as wal:
        wal.append(Record(b"k", b"old", ttl_ms=0))
        wal.append(Record.put(b"k", b"new"))
        wal.append(Record(b"gone", b"x", ttl_ms=0))
    for _ in range(2):
        with open_store(tmp_path) as s:
            assert s.get(b"k") == b"new" and s._deadline_of(b"k") is None
            assert s.get(b"gone") is None and s.stats()["ttl_keys"] == 0
    # `gone` is pinned by a tombstone, `k` by nothing
    tail = [(r.key, r.tombstone) for r, _ in wal_entries(str(tmp_path))][3:]
    assert tail == [(b"gone", True)]


@pytest.mark.parametrize("ttl_ms", [0, 1, 1 << 32] + HUGE)
def test_absolute_ttl_of_any_size(tmp_path, clock, ttl_ms):
    """A TTL_ABS deadline past int64 saturates at DEADLINE_MAX (not "no TTL");
    small ones lie in 1970: expired."""
    write_segments(tmp_path, rec(b"k", flags=TTL_ABS, ttl_ms=ttl_ms) + rec(b"plain"))
    for step in ("open", "reopen", "compact"):
        with open_store(tmp_path) as s:
            if ttl_ms < (1 << 40):
                assert s.get(b"k") is None and s.stats()["ttl_keys"] == 0
                return
            assert s.get(b"k") == b"v", step
            assert s._deadline_of(b"k") == MAX
            assert s.stats()["ttl_keys"] == 1
            if step == "compact":
                s.compact()
    assert sorted((r.key, r.ttl_ms) for r, _ in wal_entries(str(tmp_path))) == [(b"k", MAX), (b"plain", None)]
    with open_store(tmp_path) as s:
        assert s.get(b"k") == b"v" and s._deadline_of(b"k") == MAX


def test_export_import_keeps_a_saturated_deadline(tmp_path):
    """The CLI shows and carries the saturated deadline: export writes it,
    import takes it back (it used to fail on `ttl must be at most 1e15`)."""
    with Wal.open(WalConfig(dir=str(tmp_path / "a" / "wal")))[0] as wal:
        wal.append(Record(b"k", b"v", ttl_ms=(1 << 64) - 1))
    cli = [sys.executable, "-m", "norikv"]
    out = subprocess.run(cli + ["export", str(tmp_path / "a")], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout)
    assert line["expires_at_ms"] == MAX
    info = subprocess.run(cli + ["info", "--json", str(tmp_path / "a")], capture_output=True, timeout=60)
    assert json.loads(info.stdout)["ttl_keys"] == 1
    line["expires_at_ms"] = 1 << 70  # beyond int64 too: saturates
    r = subprocess.run(
        cli + ["import", "--create", str(tmp_path / "b")],
        input=(json.dumps(line) + "\n").encode(),
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    with open_store(tmp_path / "b") as s:
        assert s.get(b"k") == b"v" and s._deadline_of(b"k") == MAX


def test_cli_reads_batches_by_the_library_rule(tmp_path):
    write_segments(tmp_path, ISSUE_SEGMENT)
    cli = [sys.executable, "-m", "norikv"]

    def run(*args):
        return subprocess.run(cli + [str(a) for a in args], capture_output=True, timeout=60)

    scan = run("scan", tmp_path, "--format", "tsv")
    assert scan.returncode == 0 and scan.stdout == b"before\t0\nlater\tx\n"
    assert run("get", tmp_path, "b1").returncode == 1
    info = json.loads(run("info", "--json", tmp_path).stdout)
    assert info["keys"] == 2 and info["recovery_records"] == 2
    assert info["recovery_batch_records_dropped"] == 3 and info["tail_damage"] is None
    verify = run("verify", tmp_path)
    assert verify.returncode == 0 and b"3 of them in broken atomic batches" in verify.stdout
    dump = run("dump", tmp_path).stdout.decode().splitlines()
    assert [ln.split("\t")[4] for ln in dump] == ["0x00", "0x20 batch", "0x20 batch", "0x20 batch", "0x00"]
    assert os.path.getsize(tmp_path / "wal" / "000000.wal") == len(ISSUE_SEGMENT)


def test_batch_put_with_an_absolute_deadline(tmp_path, clock):
    """WriteBatch.put(expires_at_ms=...): the deadline as given (saturated past
    DEADLINE_MAX), kept across a reopen; ttl and expires_at_ms exclude each other."""
    now = _engine.now_ms()
    with open_store(tmp_path) as s:
        with s.batch() as b:
            b.put(b"soon", b"v", expires_at_ms=now + 3_600_000)
            b.put(b"never", b"v", expires_at_ms=1 << 64)
        with pytest.raises(TypeError), s.batch() as b:
            b.put(b"k", b"v", ttl=1.0, expires_at_ms=now)
        with pytest.raises(ValueError), s.batch() as b:
            b.put(b"k", b"v", expires_at_ms=-1)
        with pytest.raises(TypeError), s.batch() as b:
            b.put(b"k", b"v", expires_at_ms=1.5)
    with open_store(tmp_path) as s:
        assert s._deadline_of(b"soon") == now + 3_600_000
        assert s._deadline_of(b"never") == MAX
        assert b"k" not in s
