"""The pending directory of values="memory" (follow.pyx, docs/DESIGN.md):
a read of one key applies another process's plain puts as locations in the
log instead of values in the map. Every read sees them, this process's own
writes replace them, every other operation folds them into the map first,
and nothing about the store's bookkeeping, compaction, segments rolling,
damage or fork() changes."""

from __future__ import annotations

import os

import pytest

from conftest import fork_with_threads
from norikv import CorruptionError, KvStore
from spec_codec import segment_name

MEM = dict(values="memory", auto_compact=False)


def _fresh(path) -> tuple[dict, dict]:
    with KvStore.open(path, **MEM) as s:
        return dict(s.items()), s.stats()


def test_a_read_of_one_key_leaves_another_processs_puts_pending(tmp_path, workers):
    with KvStore.open(tmp_path, **MEM) as s:
        for i in range(100):
            s.put(b"k%03d" % i, b"mine")
        w = workers(tmp_path, **MEM)
        w("run", "for i in range(200): s.put(b'k%03d' % i, b'theirs%d' % i)")  # 100 replaced, 100 new
        assert s.get(b"k000") == b"theirs0"
        assert s._pending_len() == 200
        for i in range(200):  # every read of one key sees them
            k, v = b"k%03d" % i, b"theirs%d" % i
            assert s.get(k) == v and s[k] == v and k in s and s.get(k, b"default") == v
            assert s.setdefault(k, b"other") == v
        assert s.get(b"absent") is None and b"absent" not in s
        assert s._pending_len() == 200  # and leave them pending
        assert len(s) == 200  # any other operation folds them in
        assert s._pending_len() == 0
        w.stop()
        mine = (dict(s.items()), s.stats())
    items, stats = _fresh(tmp_path)
    assert mine[0] == items == {b"k%03d" % i: b"theirs%d" % i for i in range(200)}
    assert (mine[1]["keys"], mine[1]["live_bytes"]) == (stats["keys"], stats["live_bytes"])


def test_this_processs_writes_replace_pending_values(tmp_path, workers):
    with KvStore.open(tmp_path, **MEM) as s:
        s.put(b"b", b"mine")
        w = workers(tmp_path, **MEM)
        for k in "abcdef":
            w("put", k, "theirs")
        assert s.get(b"e") == b"theirs" and s._pending_len() == 6
        s.put(b"a", b"put")
        assert s.get(b"a") == b"put" and s._pending_len() == 5
        s[b"f"] = b"setitem"
        assert s.get(b"f") == b"setitem"
        assert s.delete(b"b") is True and s.get(b"b") is None
        w("put", "b", "again")  # pending again, then popped
        assert s.get(b"b") == b"again" and s._pending_len() > 0
        assert s.pop(b"b") == b"again" and s.get(b"b") is None
        w("put", "c", "newer")
        assert s.get(b"c") == b"newer"
        with s.batch() as bt:
            bt.put(b"c", b"batch")
            bt.delete(b"d")
        assert s.get(b"c") == b"batch" and s.get(b"d") is None
        expected = {b"a": b"put", b"c": b"batch", b"e": b"theirs", b"f": b"setitem"}
        assert dict(s.items()) == expected
        assert s.stats()["live_bytes"] == sum(len(k) + len(v) for k, v in expected.items())
        w.stop()
    assert _fresh(tmp_path)[0] == expected


def test_another_processs_later_records_replace_pending_values(tmp_path, workers):
    """A tombstone, a TTL or a batch of a pending key is applied at once and
    its pending value goes."""
    with KvStore.open(tmp_path, **MEM) as s:
        w = workers(tmp_path, **MEM)
        for k in "abc":
            w("put", k, "plain")
        assert s.get(b"a") == b"plain" and s._pending_len() == 3
        assert w("delete", "a") is True
        w("run", "s.put(b'b', b'with ttl', ttl=3600)")
        w("batch", [["c", "batched"]])
        assert s.get(b"a") is None and b"a" not in s
        assert s.get(b"b") == b"with ttl" and s.get(b"c") == b"batched"
        assert s._pending_len() == 0
        assert 3500 < s.ttl(b"b") <= 3600
        assert dict(s.items()) == {b"b": b"with ttl", b"c": b"batched"}
        w.stop()


@pytest.mark.parametrize(
    "state",
    ["max_keys", "ttl", "walk"],
)
def test_stores_with_limits_deadlines_or_live_walks_apply_every_record_at_once(tmp_path, workers, state):
    opts = dict(MEM, max_keys=1000) if state == "max_keys" else MEM
    with KvStore.open(tmp_path, **opts) as s:
        s.put(b"x", b"1", ttl=3600 if state == "ttl" else None)
        for i in range(400):  # past a walk's first chunk: it keeps a snapshot
            s.put(b"y%03d" % i, b"1")
        walk = s.range(b"y") if state == "walk" else None
        if walk is not None:
            assert next(walk) == (b"y000", b"1")
        w = workers(tmp_path, **MEM)
        w("put", "y001", "theirs")
        assert s.get(b"y001") == b"theirs"
        assert s._pending_len() == 0
        if walk is not None:
            assert next(walk) == (b"y001", b"1")  # the snapshot's
        w.stop()


def test_a_pending_value_damaged_after_the_read_is_named(tmp_path, workers):
    value = b"V" * 200
    with KvStore.open(tmp_path, **MEM) as s:
        w = workers(tmp_path, **MEM)
        w("put", "k", value.decode())
        w("put", "other", "x")
        assert s.get(b"other") == b"x" and s._pending_len() == 2
        path = os.path.join(s.wal.dir, segment_name(s.wal.seg_id))
        with open(path, "r+b") as f:
            data = f.read()
            at = data.index(value)
            f.seek(at + 100)
            f.write(b"W")  # the page cache the reader's mapping shows
        with pytest.raises(CorruptionError) as ei:
            s.get(b"k")
        assert ei.value.path == path and ei.value.offset is not None and ei.value.offset < at
        assert s.get(b"other") == b"x"  # the others stay readable
        with pytest.raises(CorruptionError):
            len(s)  # a fold meets it too, and keeps the pending directory as it was
        assert s._pending_len() == 2 and s.get(b"other") == b"x"
        w.stop()


def test_compaction_with_pending_values_keeps_them(tmp_path, workers):
    """This process compacts (its snapshot folds them in), then the other
    process compacts under pending values (they are read from the segments it
    deleted, still mapped, or the map is loaded again)."""
    expected = {}
    with KvStore.open(tmp_path, **MEM) as s:
        for i in range(300):
            s.put(b"k%03d" % i, b"old")
        w = workers(tmp_path, **MEM)
        w("run", "for i in range(0, 400, 2): s.put(b'k%03d' % i, b'theirs')")
        expected = {b"k%03d" % i: b"theirs" if i % 2 == 0 else b"old" for i in range(300)}
        expected.update({b"k%03d" % i: b"theirs" for i in range(300, 400, 2)})
        assert s.get(b"k000") == b"theirs" and s._pending_len() == 200
        s.compact()
        assert dict(s.items()) == expected
        w("run", "for i in range(1, 300, 2): s.put(b'k%03d' % i, b'second')")
        expected.update({b"k%03d" % i: b"second" for i in range(1, 300, 2)})
        assert s.get(b"k001") == b"second" and s._pending_len() > 0
        w("compact")
        assert all(s.get(k) == v for k, v in expected.items())
        assert dict(s.items()) == expected
        w.stop()
    assert _fresh(tmp_path)[0] == expected


def test_pending_values_across_rolling_segments(tmp_path, workers):
    """The catch-up folds the pending directory before it lets go of a
    segment its entries point into."""
    opts = dict(MEM, max_segment_size=1 << 20)
    with KvStore.open(tmp_path, **opts) as s:
        w = workers(tmp_path, **opts)
        for round_ in range(4):
            w("run", f"for i in range(300): s.put(b'k%03d' % i, b'{round_}' * 4000)")  # 1.2 MB a round
            assert s.get(b"k299") == str(round_).encode() * 4000
            assert all(s.get(b"k%03d" % i) == str(round_).encode() * 4000 for i in range(300))
            assert 0 < s._pending_len() < 300  # the records of the segments left behind are folded in
        assert len([n for n in os.listdir(s.wal.dir) if n.endswith(".wal")]) > 3
        assert dict(s.items()) == {b"k%03d" % i: b"3" * 4000 for i in range(300)}
        w.stop()


def test_a_forked_child_reads_the_pending_values(tmp_path, workers):
    with KvStore.open(tmp_path, **MEM) as s:
        w = workers(tmp_path, **MEM)
        w("run", "for i in range(50): s.put(b'k%02d' % i, b'theirs')")
        assert s.get(b"k00") == b"theirs" and s._pending_len() == 50
        pid = fork_with_threads()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                ok = len(s) == 50 and all(s.get(b"k%02d" % i) == b"theirs" for i in range(50))
                code = 0 if ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        w.stop()


def test_threads_reading_folding_and_writing_beside_another_process(tmp_path, workers):
    """Reads of one key never go back in time (each key's sequence number
    only grows) while other threads of this process fold the pending
    directory (len, items) and write keys of their own, and the other
    process writes; at the end the map is what a fresh open reads."""
    import threading

    with KvStore.open(tmp_path, **MEM) as s:
        w = workers(tmp_path, **MEM)
        w("run", "for i in range(50): s.put(b'k%02d' % i, b'%08d' % 0)")
        assert s.get(b"k00") == b"%08d" % 0 and s._pending_len() == 50  # the threads start with it
        w.send("run", "for i in range(30000): s.put(b'k%02d' % (i % 50), b'%08d' % i)")
        done = threading.Event()
        errors: list[BaseException] = []

        def wait_writer():
            try:
                w.reply()
            finally:
                done.set()

        def reader():
            seen = [-1] * 50
            try:
                while True:
                    for j in range(50):
                        v = s.get(b"k%02d" % j)
                        n = -1 if v is None else int(v)
                        assert n >= seen[j], (j, n, seen[j])
                        seen[j] = n
                    if done.is_set():
                        break
            except BaseException as exc:
                errors.append(exc)

        def folder_writer():
            i = 0
            try:
                while not done.is_set():
                    s.put(b"mine%d" % (i % 10), b"%d" % i)
                    if i % 20 == 0:
                        assert len(s) >= 10 or i < 10
                        dict(s.items())
                    i += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=f) for f in (wait_writer, reader, reader, folder_writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert all(s.get(b"k%02d" % j) == b"%08d" % (29950 + j) for j in range(50))
        mine = dict(s.items())
        w.stop()
    assert _fresh(tmp_path)[0] == mine
