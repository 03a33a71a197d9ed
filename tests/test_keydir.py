"""The key directory of values="disk" (_KeyDir, include/keydir.h) against a
dict: puts, replacements, removals, relocations, insertion order, growth of
the slots (at once, and in steps for large tables) and the arena, compaction
of the arena, colliding hashes, and the hash it shares with Python's hash of
bytes."""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from norikv._engine import _KeyDir

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parent / "src" / "norikv" / "_engine" / "include"
U64 = (1 << 64) - 1
SAT = 0xFFFFFFFF  # a value size read back as this means "ask the record"

# Keys of 0..300 bytes, many sharing prefixes, the empty key among them.
PREFIXES = [b"", b"k", b"user/", b"user/0001/", b"\x00", b"\xff" * 8, b"p" * 200]
KEYS = st.builds(lambda p, s: (p + s)[:300], st.sampled_from(PREFIXES), st.binary(max_size=100))

# The hash a key is filed under: Python's, or crafted so that keys collide
# (same tag: the high 32 bits), which only the key bytes can tell apart.
HASHES = {
    "python": lambda k: None,
    "first_byte": lambda k: (k[:1] or b"\x00")[0] << 32 | 7,
    "constant": lambda k: 0xDEADBEEF << 32,
    "low_bits_only": lambda k: hash(k) & 0xFFFFFFFF,  # tag 0 for every key
}


def vsize_back(vsize: int) -> int:
    return min(vsize, SAT)


class KeyDirModel(RuleBasedStateMachine):
    keys = Bundle("keys")

    @initialize(
        mode=st.sampled_from(sorted(HASHES)),
        floor=st.sampled_from([0, 64, 4096]),
        steps_from=st.sampled_from([16, 64, None]),
    )
    def start(self, mode, floor, steps_from):
        self.h = HASHES[mode]
        self.kd = _KeyDir(_compact_floor=floor, _steps_from=steps_from)
        self.model: dict[bytes, tuple[int, int]] = {}

    @rule(target=keys, key=KEYS)
    def new_key(self, key):
        return key

    @rule(key=keys, loc=st.integers(0, U64), vsize=st.integers(0, 1 << 40))
    def put(self, key, loc, vsize):
        assert self.kd.set(key, loc, vsize, self.h(key)) is (key in self.model)
        self.model[key] = (loc, vsize_back(vsize))  # a replaced key keeps its place, as in a dict

    @rule(key=keys)
    def remove(self, key):
        assert self.kd.discard(key, self.h(key)) == self.model.pop(key, None)

    @rule(key=keys)
    def remove_and_put_again(self, key):
        # a key removed and put again goes to the end of the order
        self.remove(key)
        self.put(key, 1, 2)

    @rule(key=keys, new=st.integers(0, U64), stale=st.booleans())
    def relocate(self, key, new, stale):
        old = self.model.get(key)
        if old is None:
            assert self.kd.move(key, 0, new, self.h(key)) is False
        elif stale:
            assert self.kd.move(key, old[0] ^ 1, new, self.h(key)) is False
        else:
            assert self.kd.move(key, old[0], new, self.h(key)) is True
            self.model[key] = (new, old[1])

    @rule(n=st.integers(1, 400), seed=st.integers(0, 1 << 30), length=st.integers(0, 40))
    def bulk_put(self, n, seed, length):
        # enough keys at once to grow the slots and the arena
        rnd = random.Random(seed)
        for i in range(n):
            key = rnd.randbytes(length) + i.to_bytes(2, "big")
            self.put(key, i, i * 3)

    @precondition(lambda self: len(self.model) > 0)
    @rule(fraction=st.floats(0.1, 1.0), seed=st.integers(0, 1 << 30))
    def bulk_remove(self, fraction, seed):
        # enough garbage to compact the arena
        rnd = random.Random(seed)
        doomed = rnd.sample(list(self.model), max(1, int(len(self.model) * fraction)))
        for key in doomed:
            self.remove(key)

    def hash_of(self, key):
        h = self.h(key)
        return _KeyDir._hash(key) if h is None else h

    @rule(key=KEYS)
    def lookup_any(self, key):
        assert self.kd.lookup(key, self.h(key)) == self.model.get(key)
        if not any(self.hash_of(k) >> 32 == self.hash_of(key) >> 32 for k in self.model):
            assert self.kd.locate_hash(self.hash_of(key)) is None  # no key with its tag

    @rule(more=st.integers(0, 3000))
    def reserve_then_fit(self, more):
        # a loader's reserve for more keys than come, then the open's fit
        self.kd._reserve(len(self.model) + more, more, more * 40)
        self.kd._fit()

    @rule()
    def clear(self):
        self.kd._reset()
        self.model.clear()

    @invariant()
    def agrees(self):
        assert len(self.kd) == self.kd.count == len(self.model)
        assert self.kd.key_bytes == sum(map(len, self.model))
        assert self.kd.items() == [(k, *v) for k, v in self.model.items()]
        for key, value in self.model.items():
            assert self.kd.lookup(key, self.h(key)) == value
        # locate: the loc in the first slot with the key's tag, which is the
        # key's own when no other live key shares that tag
        tags: dict[int, list[bytes]] = {}
        for key in self.model:
            tags.setdefault(self.hash_of(key) >> 32, []).append(key)
        for keys in tags.values():
            found = self.kd.locate_hash(self.hash_of(keys[0]))
            assert found in [self.model[k][0] for k in keys]
            if len(keys) == 1:
                assert found == self.model[keys[0]][0]
        stats = self.kd._stats()
        assert stats["garbage"] <= stats["units"] <= stats["arena_cap"]
        slots = stats["slots"] + stats["old_slots"] + stats["next_slots"]
        assert self.kd.nbytes() == slots * 16 + stats["arena_cap"] * 8
        assert stats["next_touched"] <= stats["next_slots"] * 16
        assert len(self.model) * 5 <= stats["slots"] * 4  # load <= 4/5
        assert stats["swept"] < stats["old_slots"] or stats["old_slots"] == stats["swept"] == 0


def test_model():
    run_state_machine_as_test(KeyDirModel, settings=settings(max_examples=150, stateful_step_count=40, deadline=None))


def check_all(kd, model, h=lambda k: None):
    assert len(kd) == len(model)
    for key, value in model.items():
        assert kd.lookup(key, h(key)) == value, key
    assert kd.items() == [(k, *v) for k, v in model.items()]


def test_empty():
    kd = _KeyDir()
    assert len(kd) == 0 and kd.nbytes() == 0 and kd.keys() == []
    assert kd.lookup(b"") is None and kd.discard(b"x") is None and kd.move(b"x", 0, 1) is False


def test_growth_boundaries():
    """Every key stays findable across each growth of the slots and the arena,
    checked just before and just after it."""
    kd = _KeyDir()
    model = {}
    last = kd._stats()
    grew_slots = grew_arena = 0
    for i in range(20000):
        key = b"g" * (i % 37) + i.to_bytes(4, "little")
        assert kd.set(key, i, i) is False
        model[key] = (i, i)
        stats = kd._stats()
        if stats["slots"] != last["slots"] or stats["arena_cap"] != last["arena_cap"]:
            grew_slots += stats["slots"] != last["slots"]
            grew_arena += stats["arena_cap"] != last["arena_cap"]
            check_all(kd, model)
            assert stats["slots"] >= last["slots"] and stats["arena_cap"] >= last["arena_cap"]
        last = stats
        assert len(model) * 5 <= stats["slots"] * 4
    assert grew_slots > 10 and grew_arena > 10
    check_all(kd, model)


@pytest.mark.parametrize("mode", sorted(HASHES))
def test_growth_in_steps(mode):
    """A table of steps_from slots or more grows in steps: no put moves more
    than a few clusters of the old slots (a rebuild at once moved them all
    in one put), every key stays findable, replaceable, relocatable and
    removable while keys sit in both tables, and each growth's sweep ends
    before the next growth. The new slots were allocated and their pages
    touched before the growth, by the puts that came before it, so the
    sweep takes few page faults."""
    h = HASHES[mode]
    n = 1500 if mode in ("constant", "low_bits_only") else 60000
    kd = _KeyDir(_steps_from=64)
    model = {}
    rnd = random.Random(mode)
    growths = most = checks = largest = sweep_faults = new_pages = 0
    for i in range(n):
        key = rnd.randbytes(rnd.randrange(0, 9)) + i.to_bytes(3, "big")
        before = kd._stats()
        faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        assert kd.set(key, i, i, h(key)) is False
        if before["old_slots"]:
            sweep_faults += resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults
        model[key] = (i, i)
        stats = kd._stats()
        if stats["old_slots"] and not before["old_slots"]:
            growths += 1
            assert stats["swept"] < stats["old_slots"] // 2 or stats["old_slots"] < 256
            # prepared: the very slots, every page of them touched
            assert before["next_slots"] == stats["slots"] and stats["next_slots"] == 0
            assert before["next_touched"] == stats["slots"] * 16
            new_pages += stats["slots"] * 16 // 4096
        if stats["old_slots"] and before["old_slots"] == stats["old_slots"]:
            most = max(most, stats["swept"] - before["swept"])
            largest = max(largest, stats["old_slots"])
        if stats["old_slots"] and rnd.random() < (0.2 if n > 10000 else 1.0):
            # keys in both tables: a key swept, one not yet, the one just put
            checks += 1
            for k in (key, *rnd.sample(list(model), 3)):
                assert kd.lookup(k, h(k)) == model[k]
            old = rnd.choice(list(model))
            assert kd.move(old, model[old][0], i + n, h(old)) is True
            model[old] = (i + n, model[old][1])
            gone = rnd.choice(list(model))
            assert kd.discard(gone, h(gone)) == model.pop(gone)
        assert len(model) * 5 <= stats["slots"] * 4
    assert growths >= 3 and checks > 50
    if mode == "python":  # 16 slots and the rest of a cluster, never the table (~60,000 slots)
        assert 16 <= most < largest // 50
        assert sweep_faults < new_pages // 4, (sweep_faults, new_pages)
    check_all(kd, model, h)
    assert kd.keys() == list(model)


def test_no_next_slots_while_a_loader_fills_its_reserve():
    """A loader that reserved room for its keys (hint files announce their
    counts) fills the table without preparing a growth that will not come;
    after fit() the puts past a load of 0.75 prepare it again."""
    kd = _KeyDir(_steps_from=64)
    kd._reserve(5400)
    slots = kd._stats()["slots"]
    assert 5400 * 5 <= slots * 4 < 5400 * 5 * 1.5  # the load at 5,400 keys is over 0.75 ...
    n = 0
    while n * 16 <= slots * 15 * 4 // 5:  # ... past which a growth is prepared
        kd.set(n.to_bytes(4, "big"), n, n)
        n += 1
    assert kd._stats()["next_slots"] == 0 and n <= 5400
    kd._fit()
    kd.set(b"one more", 0, 0)
    stats = kd._stats()
    assert stats["slots"] == slots and stats["next_slots"] > slots and stats["next_touched"] > 0


@pytest.mark.parametrize("mode", sorted(HASHES))
def test_colliding_hashes(mode):
    """Keys filed under equal tags (all of them, or many per tag) are told
    apart by their bytes, through growth, removal (backward shifts across the
    wrap-around) and compaction."""
    h = HASHES[mode]
    n = 600 if mode in ("constant", "low_bits_only") else 5000
    kd = _KeyDir(_compact_floor=0)
    model = {}
    rnd = random.Random(mode)
    keys = [rnd.randbytes(rnd.randrange(0, 12)) for _ in range(n)]
    for i, key in enumerate(keys):
        kd.set(key, i, i, h(key))
        model[key] = (i, i)
    check_all(kd, model, h)
    for key in keys[::3]:
        assert kd.discard(key, h(key)) == model.pop(key, None)
    check_all(kd, model, h)
    for key in keys[1::3]:
        assert kd.discard(key, h(key)) == model.pop(key, None)
    assert kd._stats()["compactions"] > 0
    check_all(kd, model, h)


def test_tags_at_the_ends_of_the_table():
    """Tags at 0 and 0xFFFFFFFF: homes at the first and last slot, clusters
    wrapping around the end, deletions shifting across it."""
    kd = _KeyDir()
    model = {}
    for i in range(200):
        key = i.to_bytes(2, "big")
        h = (0xFFFFFFFF if i % 2 else 0) << 32
        kd.set(key, i, i, h)
        model[key] = (i, i, h)
    for i in range(0, 200, 3):
        key = i.to_bytes(2, "big")
        assert kd.discard(key, model[key][2]) == model.pop(key)[:2]
    for key, (loc, vsize, h) in model.items():
        assert kd.lookup(key, h) == (loc, vsize)
    assert kd.keys() == list(model)


def test_compaction_keeps_order_and_gives_memory_back():
    kd = _KeyDir()  # the default floor: 64 KiB of garbage
    model = {}
    for i in range(50000):
        key = b"c%07d" % i
        kd.set(key, i, 10)
        model[key] = (i, 10)
    big = kd.nbytes()
    arena_cap = kd._stats()["arena_cap"]
    for i in range(50000):
        if i % 10:
            key = b"c%07d" % i
            assert kd.discard(key) == model.pop(key)
    stats = kd._stats()
    assert stats["compactions"] >= 1
    assert stats["garbage"] * 8 < 64 * 1024 or stats["garbage"] <= stats["units"] - stats["garbage"]
    assert stats["arena_cap"] < arena_cap / 2 and kd.nbytes() < big
    check_all(kd, model)
    # removed and put again: at the end; replaced: in place
    kd.set(b"c0000000", 7, 7)
    model[b"c0000000"] = (7, 7)
    assert kd.discard(b"c0000010") == model.pop(b"c0000010")
    kd.set(b"c0000010", 8, 8)
    model[b"c0000010"] = (8, 8)
    check_all(kd, model)
    assert kd.keys()[0] == b"c0000000" and kd.keys()[-1] == b"c0000010"


def test_value_size_saturates():
    kd = _KeyDir()
    for vsize, back in [(0, 0), (SAT - 1, SAT - 1), (SAT, SAT), (1 << 32, SAT), (U64, SAT)]:
        kd.set(b"v", 5, vsize)
        assert kd.lookup(b"v") == (5, back)
    assert kd.set(b"v", U64, 1) is True
    assert kd.discard(b"v") == (U64, 1)


def test_replacement_and_relocation():
    kd = _KeyDir()
    assert kd.set(b"a", 1, 10) is False
    assert kd.set(b"b", 2, 20) is False
    assert kd.set(b"a", 3, 30) is True
    assert kd.keys() == [b"a", b"b"]
    assert kd.move(b"a", 1, 9) is False  # written again since: compaction's copy is stale
    assert kd.move(b"a", 3, 9) is True
    assert kd.lookup(b"a") == (9, 30)
    assert kd.move(b"zz", 3, 9) is False
    assert kd.key_bytes == 2 and len(kd) == 2


@pytest.mark.parametrize("length", [*range(0, 70), 127, 128, 255, 256, 1000, 4096, 65537])
def test_hash_is_pythons(length):
    """_kd_hash of raw bytes (the loader's, which has no object) equals
    Python's hash of the same bytes (the store's, from the object), so a key
    filed by one is found by the other."""
    rnd = random.Random(length)
    for _ in range(20):
        key = rnd.randbytes(length)
        fresh = bytes(bytearray(key))  # no cached hash yet
        assert _KeyDir._hash(fresh) == hash(key) & U64
    kd = _KeyDir()
    key = rnd.randbytes(length)
    kd.set(key, 1, 2, _KeyDir._hash(key))
    assert kd.lookup(bytes(bytearray(key))) == (1, 2)


def test_hash_is_pythons_under_other_seeds():
    code = (
        "import random\n"
        "from norikv._engine import _KeyDir\n"
        "r = random.Random(5)\n"
        "for n in list(range(40)) + [100, 1000]:\n"
        "    k = r.randbytes(n)\n"
        "    assert _KeyDir._hash(k) == hash(k) & (2**64 - 1), n\n"
        "print(hash(b'seeded'))\n"
    )
    outs = set()
    for seed in ("0", "1", "12345", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outs.add(out.stdout)
    assert len(outs) >= 3  # the seeds changed the hash, and it still matched


def test_memory_per_key():
    """About 16 bytes of header per key in the arena plus 16-byte slots at a
    load of at least 0.53: well under 100 bytes for a 16-byte key."""
    kd = _KeyDir()
    n = 100000
    rnd = random.Random(1)
    for i in range(n):
        kd.set(rnd.randbytes(16), i, 1000)
    assert len(kd) == n
    assert kd.nbytes() / n < 16 + 16 + 16 / 0.53 + 8  # header + key + slots + arena slack


def test_fit_gives_back_what_a_reserve_left_unused():
    """A reserve for 100,000 keys of which 1,000 came: fit() rebuilds the
    slots for a load of 2/3 and trims the arena; every key stays findable."""
    kd = _KeyDir()
    kd._reserve(100_000, 100_000, 100_000 * 16)
    keys = [b"f%05d" % i for i in range(1000)]
    for i, key in enumerate(keys):
        kd.set(key, i, i)
    big = kd.nbytes()
    kd._fit()
    stats = kd._stats()
    assert stats["slots"] == 1500 and stats["arena_cap"] < 4 * 1000 * 2
    assert kd.nbytes() < big / 20
    check_all(kd, {k: (i, i) for i, k in enumerate(keys)})
    kd._fit()  # at a normal load: nothing to give back
    assert kd._stats() == stats


def test_reserve_then_no_growth():
    """reserve() sizes both parts up front: the puts it announced grow nothing."""
    kd = _KeyDir()
    kd.set(b"first", 0, 0)
    keys = [b"r%05d" % i + b"x" * (i % 13) for i in range(5000)]
    kd._reserve(len(keys) + 1, len(keys), sum(map(len, keys)))
    before = kd._stats()
    assert before["slots"] * 4 >= (len(keys) + 1) * 5
    for i, key in enumerate(keys):
        kd.set(key, i, i)
    after = kd._stats()
    assert (after["slots"], after["arena_cap"]) == (before["slots"], before["arena_cap"])
    assert after["units"] <= after["arena_cap"]
    check_all(kd, {b"first": (0, 0), **{k: (i, i) for i, k in enumerate(keys)}})
    kd._reserve(10)  # never shrinks
    assert kd._stats()["slots"] == after["slots"]
    with pytest.raises(MemoryError):
        kd._reserve(1 << 40)  # more keys than 2^32 slots can hold
    with pytest.raises(MemoryError):
        kd._reserve(0, 1 << 33, 0)  # past the 32 GiB arena
    check_all(kd, {b"first": (0, 0), **{k: (i, i) for i, k in enumerate(keys)}})


def test_c_fuzz_under_sanitizers(tmp_path):
    """keydir.h itself, built with AddressSanitizer and UBSan, against a
    reference over a million random operations (tests/c/keydir_fuzz.c)."""
    if not (INCLUDE / "keydir.h").is_file():
        pytest.skip("no source checkout (the installed wheel carries no headers)")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "keydir_fuzz"
    flags = ["-O1", "-g", "-UNDEBUG", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    r = subprocess.run(
        [cc, *flags, "-Wall", "-Wextra", "-I", str(INCLUDE), "-o", str(exe), str(HERE / "c" / "keydir_fuzz.c")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot build with the sanitizers: {r.stderr[-500:]}")
    assert "warning" not in r.stderr, r.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("compactions") == 16
