"""Objects that were never opened: ``KvStore()`` is refused with TypeError, and
a store, Wal or WriteBatch obtained without ``open`` (``KvStore.__new__``,
``Wal()``, ``WriteBatch(...)``) raises a clear exception from every public
method, or does nothing harmful -- never a crash of the interpreter.

Each call runs in its own interpreter (sys.executable -c), so that a
segfault fails that case instead of killing pytest."""

import subprocess
import sys
import textwrap

import pytest

TIMEOUT = 60

SETUP = textwrap.dedent("""
    import sys
    from norikv import KvStore, Wal, WriteBatch, Record, Position
    s = KvStore.__new__(KvStore)
    w = Wal()
""")

RUN = SETUP + textwrap.dedent("""
    code = sys.argv[1]
    try:
        exec(code)
    except BaseException as e:
        print("raised", type(e).__name__, e)
    else:
        print("ok")
""")

# (code, expected): "ok" or the name of the exception it must raise.
CASES = [
    # KvStore itself
    ("KvStore()", "TypeError"),
    ("KvStore('/tmp/x')", "TypeError"),
    ("class Sub(KvStore): pass\nSub()", "TypeError"),
    # a store that never went through KvStore.open
    ("s.get(b'k')", "ClosedError"),
    ("s.get(b'k', 1)", "ClosedError"),
    ("s.get('k')", "TypeError"),
    ("s.put(b'k', b'v')", "ClosedError"),
    ("s.put(b'k', b'v', ttl=5)", "ClosedError"),
    ("s.put(b'k', b'v', compression='lz4')", "ClosedError"),
    ("s[b'k'] = b'v'", "ClosedError"),
    ("s[b'k']", "ClosedError"),
    ("del s[b'k']", "ClosedError"),
    ("s.delete(b'k')", "ClosedError"),
    ("s.pop(b'k')", "ClosedError"),
    ("s.pop(b'k', None)", "ClosedError"),
    ("s.popitem()", "ClosedError"),
    ("s.setdefault(b'k', b'v')", "ClosedError"),
    ("s.update({b'k': b'v'})", "ClosedError"),
    ("s.update()", "ok"),
    ("s.clear()", "ClosedError"),
    ("s.ttl(b'k')", "ClosedError"),
    ("b'k' in s", "ClosedError"),
    ("len(s)", "ClosedError"),
    ("s.is_empty()", "ClosedError"),
    ("list(iter(s))", "ClosedError"),
    ("s.keys()", "ClosedError"),
    ("s.items()", "ClosedError"),
    ("s.values()", "ClosedError"),
    ("list(s.range())", "ClosedError"),
    ("list(s.range(b'a', b'z', reverse=True))", "ClosedError"),
    ("list(s.prefix(b'k'))", "ClosedError"),
    ("s.batch()", "ClosedError"),
    ("s.sync()", "ClosedError"),
    ("s.compact()", "ClosedError"),
    ("s.stats()", "ClosedError"),
    ("s.dead_ratio()", "ClosedError"),
    ("s.dead_ratio(100)", "ClosedError"),
    ("s._apply_batch([(b'k', b'v', -1, None)])", "ClosedError"),
    ("assert s.closed is True", "ok"),
    ("assert s.live_bytes == 0 and s.max_keys == 0", "ok"),
    ("s.close(); s.close(); assert s.closed", "ok"),
    ("with s: pass", "ok"),
    ("assert 'closed' in repr(s)", "ok"),
    # WriteBatch
    ("WriteBatch(None)", "TypeError"),
    ("WriteBatch(object())", "TypeError"),
    ("b = WriteBatch(s); b.put(b'k', b'v'); b.delete(b'j'); assert len(b) == 2; b.write()", "ClosedError"),
    ("with WriteBatch(s) as b: b.put(b'k', b'v')", "ClosedError"),
    ("b = WriteBatch(s); b.put(b'k', b'v'); b.clear(); b.write(); b.write()", "ClosedError"),
    # a Wal that never went through Wal.open
    ("w.append(Record.put(b'k', b'v'))", "ClosedError"),
    ("w.append_batch([Record.put(b'k', b'v')], atomic=True)", "ClosedError"),
    ("assert w.append_batch([]) == []", "ok"),
    ("w.sync()", "ClosedError"),
    ("w.flush()", "ClosedError"),
    ("w.current_position()", "ClosedError"),
    ("list(w.read_from(Position(0, 0)))", "ClosedError"),
    ("w.delete_segments_before(Position(3, 0))", "ClosedError"),
    ("assert w.closed", "ok"),
    ("w.close(); w.close()", "ok"),
    ("with w: pass", "ok"),
    ("assert 'closed' in repr(w)", "ok"),
]


@pytest.mark.parametrize("code,expected", CASES, ids=[c for c, _ in CASES])
def test_unopened_object(code, expected):
    out = subprocess.run([sys.executable, "-c", RUN, code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.returncode == 0, f"interpreter died (rc {out.returncode}): {out.stderr[-2000:]}"
    got = out.stdout.strip()
    if expected == "ok":
        assert got == "ok", got
    else:
        assert got.startswith(f"raised {expected} "), got
        if expected == "TypeError" and code.startswith(("KvStore(", "class Sub")):
            assert "KvStore.open(path)" in got


def test_store_after_open_is_not_constructible_either(tmp_path):
    """KvStore.open goes through a private path; the public constructor stays refused."""
    from norikv import KvStore

    with KvStore.open(tmp_path) as s:
        s.put(b"k", b"v")
        with pytest.raises(TypeError, match=r"KvStore\.open\(path\)"):
            type(s)()
        assert s.get(b"k") == b"v"
