"""Property-based tests: KvStore against a plain dict over random operation
sequences with compactions, clean reopens and crashes (drop without close).

"Drop without close" in norikv: the store is freed by reference counting; its
Wal then unmaps the active segment and closes its descriptors without syncing
or truncating the preallocated tail, and releases the directory lock. The
files are left exactly as a killed process leaves them (kill -9 itself is
covered by test_store_crash.py)."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from norikv import ClosedError, FsyncPolicy, KvStore

KEYS = st.one_of(
    st.sampled_from([b"", b"a", b"ab", b"b", b"\x00", b"\xff", b"\xff\xff", b"key"]),
    st.binary(min_size=1, max_size=3),
)
VALUES = st.one_of(
    st.binary(max_size=40),
    # long, compressible values exercise the compressed paths
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=4), st.integers(10, 200)),
)
BYTES_LIKE = st.sampled_from([bytes, bytearray, memoryview])
BOUNDS = st.one_of(st.none(), KEYS)


class _Abort(Exception):
    pass


class KvStoreModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="norikv-model-")
        self.model: dict[bytes, bytes] = {}
        self.store = None
        self.opts: dict = {}
        self.walks: list = []  # live range() iterators: [iterator, the pairs due (model at its start), next index]

    @initialize(compression=st.sampled_from([None, "lz4", "zstd"]), min_size=st.sampled_from([0, 32]))
    def open(self, compression, min_size):
        self.opts = dict(
            fsync_policy=FsyncPolicy.OS, compression=compression, compress_min_size=min_size, max_segment_size=1 << 20
        )
        self.store = KvStore.open(self.dir, **self.opts)

    def teardown(self):
        try:
            if self.store is not None:
                self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # ---------------------------------------------------------------- writes

    @rule(k=KEYS, v=VALUES, kt=BYTES_LIKE, vt=BYTES_LIKE)
    def put(self, k, v, kt, vt):
        self.store.put(kt(k), vt(v))
        self.model[k] = v

    @rule(k=KEYS, v=VALUES)
    def setitem(self, k, v):
        self.store[k] = v
        self.model[k] = v

    @rule(k=KEYS)
    def delete(self, k):
        size = self.store.wal.written_total
        assert self.store.delete(k) is (k in self.model)
        if k not in self.model:
            assert self.store.wal.written_total == size  # no tombstone for an absent key
        self.model.pop(k, None)

    @rule(k=KEYS)
    def delitem(self, k):
        if k in self.model:
            del self.store[k]
            del self.model[k]
        else:
            with pytest.raises(KeyError):
                del self.store[k]

    @rule(ops=st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), max_size=8), abort=st.booleans())
    def batch(self, ops, abort):
        before = dict(self.model)
        try:
            with self.store.batch() as b:
                for k, v in ops:
                    if v is None:
                        b.delete(k)
                    else:
                        b.put(k, v)
                if abort:
                    raise _Abort
        except _Abort:
            assert dict(self.store.items()) == before
            return
        for k, v in ops:
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = v

    # ---------------------------------------------------------------- lifecycle

    @rule(then_crash=st.booleans(), data=st.data())
    def compact(self, then_crash, data):
        self.store.compact()
        if then_crash:
            # writes after the compaction land after the snapshot in the log
            if self.model:
                k = data.draw(st.sampled_from(sorted(self.model)))
                self.store.put(k, b"after-compaction")
                self.model[k] = b"after-compaction"
            self._crash()

    @rule(crash=st.booleans())
    def restart(self, crash):
        self._drop_walks()
        if crash:
            self._crash()
        else:
            self.store.close()
            with pytest.raises(ClosedError):
                self.store.get(b"a")
            self.store = KvStore.open(self.dir, **self.opts)
            assert not self.store.recovery_info.corruption_detected

    def _drop_walks(self):
        for walk in self.walks:
            walk[0].close()
        self.walks = []

    def _crash(self):
        """Drop without close, then reopen."""
        self._drop_walks()  # (they hold the store)
        self.store = None  # the only reference: freed at once
        self.store = KvStore.open(self.dir, **self.opts)
        info = self.store.recovery_info
        assert not info.corruption_detected and info.bytes_truncated == 0

    # ---------------------------------------------------------------- reads

    @rule(k=KEYS, kt=BYTES_LIKE)
    def get(self, k, kt):
        assert self.store.get(kt(k)) == self.model.get(k)
        assert (kt(k) in self.store) == (k in self.model)
        if k in self.model:
            assert self.store[k] == self.model[k]
        else:
            with pytest.raises(KeyError):
                self.store[k]

    @rule(start=BOUNDS, end=BOUNDS, reverse=st.booleans())
    def range(self, start, end, reverse):
        keys = sorted(k for k in self.model if (start is None or k >= start) and (end is None or k < end))
        if reverse:
            keys.reverse()
        assert list(self.store.range(start, end, reverse=reverse)) == [(k, self.model[k]) for k in keys]

    @rule(start=BOUNDS, end=BOUNDS, reverse=st.booleans())
    def start_walk(self, start, end, reverse):
        """A range() left live across the following rules (writes, compactions,
        the other process's writes): it must yield the model as it was now."""
        keys = sorted(k for k in self.model if (start is None or k >= start) and (end is None or k < end))
        if reverse:
            keys.reverse()
        if len(self.walks) < 3:
            self.walks.append([self.store.range(start, end, reverse=reverse), [(k, self.model[k]) for k in keys], 0])

    @rule(data=st.data())
    def advance_walk(self, data):
        if not self.walks:
            return
        walk = self.walks[data.draw(st.integers(0, len(self.walks) - 1))]
        it, due, i = walk
        n = data.draw(st.integers(1, 40))
        got = [pair for _, pair in zip(range(n), it)]
        assert got == due[i : i + n]
        walk[2] = i + len(got)
        if len(got) < n:
            self.walks.remove(walk)

    @rule(p=KEYS, reverse=st.booleans())
    def prefix(self, p, reverse):
        keys = sorted(k for k in self.model if k.startswith(p))
        if reverse:
            keys.reverse()
        assert list(self.store.prefix(p, reverse=reverse)) == [(k, self.model[k]) for k in keys]

    @invariant()
    def same_contents(self):
        if self.store is None:
            return
        assert len(self.store) == len(self.model)
        assert self.store.is_empty() == (not self.model)
        assert dict(self.store.items()) == self.model
        assert sorted(self.store.keys()) == sorted(self.model)
        assert self.store.stats()["live_bytes"] == sum(len(k) + len(v) for k, v in self.model.items())


def test_kvstore_matches_dict_model():
    run_state_machine_as_test(KvStoreModel)


class SmallSegmentsModel(KvStoreModel):
    """Same model with bigger values so that segments rotate (1 MiB minimum)
    and compaction snapshots span several segments."""

    @initialize()
    def open(self):
        self.opts = dict(fsync_policy=FsyncPolicy.OS, max_segment_size=1 << 20)
        self.store = KvStore.open(self.dir, **self.opts)

    @rule(k=KEYS, n=st.integers(50_000, 300_000), fill=st.binary(min_size=1, max_size=1))
    def put_big(self, k, n, fill):
        v = fill * n
        self.store.put(k, v)
        self.model[k] = v


def test_kvstore_matches_dict_model_with_rotation():
    from hypothesis import settings

    # a quarter of the profile's examples (15 under "ci"): each moves megabytes
    n = max(1, settings.default.max_examples // 4)
    run_state_machine_as_test(SmallSegmentsModel, settings=settings(max_examples=n, stateful_step_count=30))


class ManyProcessesModel(KvStoreModel):
    """The same model with a second process on the store: it puts, deletes,
    writes batches, compacts and is SIGKILLed (then started again) between
    this process's operations. Every read here must see what it acknowledged
    (read-your-writes across processes), and every restart and crash of this
    process rejoins a store the other still has open."""

    other = None
    other_values = None
    seen: frozenset = frozenset()

    @initialize(values=st.sampled_from(["memory", "disk"]))
    def other_mode(self, values):
        """The other process's value mode, drawn apart from this one's (the
        test's): memory-mode and disk-mode processes share one store."""
        self.other_values = values

    @invariant()
    def same_contents(self):
        """Reads of one key only (get, in): with values="memory" they leave
        the other process's puts pending (follow.pyx), so this process's next
        operations meet a pending directory. The rule below compares the
        whole map."""
        if self.store is None:
            return
        self.seen |= self.model.keys()
        for k in sorted(self.seen):
            assert self.store.get(k) == self.model.get(k)
            assert (k in self.store) == (k in self.model)

    @rule()
    def whole_contents(self):
        KvStoreModel.same_contents(self)

    @rule(crash=st.booleans())
    def restart(self, crash):
        KvStoreModel.same_contents(self)  # the whole map, before a reopen computes it again
        super().restart(crash)

    def _other(self):
        if self.other is None:
            from procutil import Worker

            opts = {k: v for k, v in self.opts.items() if k != "fsync_policy"}
            self.other = Worker(self.dir, fsync_policy="os", values=self.other_values, **opts)
        return self.other

    def teardown(self):
        if self.other is not None:
            self.other.kill()
        super().teardown()

    @rule(k=KEYS, v=VALUES)
    def other_put(self, k, v):
        self._other()("run", f"s.put({k!r}, {v!r})")
        self.model[k] = v

    @rule(k=KEYS)
    def other_delete(self, k):
        assert self._other()("run", f"result = s.delete({k!r})") == (k in self.model)
        self.model.pop(k, None)

    @rule(ops=st.lists(st.tuples(KEYS, st.one_of(st.none(), VALUES)), min_size=1, max_size=6))
    def other_batch(self, ops):
        code = "with s.batch() as b:\n" + "".join(
            f"    b.delete({k!r})\n" if v is None else f"    b.put({k!r}, {v!r})\n" for k, v in ops
        )
        self._other()("run", code)
        for k, v in ops:
            if v is None:
                self.model.pop(k, None)
            else:
                self.model[k] = v

    @rule()
    def other_compact(self):
        self._other()("compact")

    @rule()
    def other_killed(self):
        if self.other is not None:
            self.other.kill()
            self.other = None


def test_kvstore_matches_dict_model_with_another_process():
    from hypothesis import settings

    # a third of the profile's examples (20 under "ci"): each starts processes
    n = max(1, settings.default.max_examples // 3)
    run_state_machine_as_test(ManyProcessesModel, settings=settings(max_examples=n, stateful_step_count=30))
