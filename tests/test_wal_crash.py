"""SIGKILL of a writing subprocess under each fsync policy: every append that
returned (and was reported over a pipe) is present and intact after reopen,
in order, and the log is exactly a prefix of what the writer produced.

The quick variant runs a few kills per policy; ``NORIKV_SLOW=1`` runs many."""

import os
import random
import selectors
import signal
import subprocess
import sys
import textwrap

import pytest

from norikv import Compression, FsyncPolicy, Position, Record, Wal, WalConfig

MIB = 1 << 20
LINE_TIMEOUT = 60.0

WRITER = textwrap.dedent("""
    import os, random, sys
    sys.path.insert(0, {tests!r})
    from test_wal_crash import expected_record, POLICIES
    from norikv import Wal, WalConfig, Position
    d, policy, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    wal, info = Wal.open(WalConfig(dir=d, max_segment_size=1 << 20,
                                   fsync_policy=POLICIES[policy]))
    i = sum(1 for _ in wal.read_from(Position(0, 0)))
    os.write(1, b"start %d\\n" % i)
    rnd = random.Random(seed)
    while True:
        if rnd.random() < 0.15:
            k = rnd.randrange(1, 6)
            positions = wal.append_batch([expected_record(j) for j in range(i, i + k)])
        else:
            k = 1
            positions = [wal.append(expected_record(i))]
        os.write(1, b"".join(b"%d %d %d\\n" % (i + j, p.segment_id, p.offset)
                             for j, p in enumerate(positions)))
        i += k
""")

POLICIES = {"always": FsyncPolicy.ALWAYS, "os": FsyncPolicy.OS, "batch": FsyncPolicy.batch(0.005)}


def expected_record(i: int) -> Record:
    """Record number i of the writer: sizes vary up to ~4 KB so that
    segments rotate; some values are compressed, some carry a TTL/version."""
    value = (b"%d:" % i) * (1 + (i * 7919) % 700)
    r = Record.put(b"key-%08d" % i, value)
    if i % 7 == 3:
        r = r.with_compression(Compression.LZ4)
    elif i % 11 == 5:
        r = r.with_compression(Compression.ZSTD)
    if i % 5 == 1:
        r = r.with_version(i // 100, i)
    if i % 13 == 0:
        r = Record.delete(b"key-%08d" % i)
    return r


class Writer:
    def __init__(self, path, policy, seed):
        script = WRITER.format(tests=os.path.dirname(os.path.abspath(__file__)))
        self.p = subprocess.Popen(
            [sys.executable, "-c", script, str(path), policy, str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.p.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.acked: list[tuple[int, Position]] = []

    def _read(self) -> bool:
        if not self.sel.select(LINE_TIMEOUT):
            raise AssertionError("writer produced nothing for %ss" % LINE_TIMEOUT)
        chunk = os.read(self.p.stdout.fileno(), 65536)
        self.buf += chunk
        return bool(chunk)

    def _lines(self):
        *lines, self.buf = self.buf.split(b"\n")
        return lines

    def start(self) -> int:
        while b"\n" not in self.buf:
            if not self._read():
                raise AssertionError("writer died: " + self.p.stderr.read().decode()[-2000:])
        line, *rest = self._lines()
        assert line.startswith(b"start "), line
        self._take(rest)
        return int(line.split()[1])

    def _take(self, lines):
        for line in lines:
            i, seg, off = map(int, line.split())
            self.acked.append((i, Position(seg, off)))

    def run_until(self, n_acks: int) -> None:
        while len(self.acked) < n_acks:
            if not self._read():
                raise AssertionError("writer died: " + self.p.stderr.read().decode()[-2000:])
            self._take(self._lines())

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(LINE_TIMEOUT)
        # everything already in the pipe was acknowledged before the kill
        while self._read():
            self._take(self._lines())
        self.sel.close()
        self.p.stdout.close()
        self.p.stderr.close()
        assert self.p.returncode == -signal.SIGKILL


def crash_rounds(tmp_path, policy, kills, max_acks, seed):
    rnd = random.Random(seed)
    d = tmp_path / policy
    all_acked: dict[int, Position] = {}
    for k in range(kills):
        w = Writer(d, policy, rnd.randrange(1 << 30))
        first = w.start()
        # records from earlier rounds survived until this writer's open
        assert first >= (max(all_acked) + 1 if all_acked else 0)
        w.run_until(rnd.randrange(1, max_acks))
        w.kill()
        assert w.acked and w.acked[0][0] == first
        all_acked.update(w.acked)
        wal, info = Wal.open(WalConfig(dir=str(d), max_segment_size=MIB, fsync_policy=FsyncPolicy.OS))
        with wal:
            got = list(wal.read_from(Position(0, 0)))
        assert info.valid_records == len(got)
        # a prefix of what was written, every record intact and in order
        for i, (rec, _pos) in enumerate(got):
            assert rec == expected_record(i), i
        n = len(got)
        last_acked = max(all_acked)
        assert n > last_acked, f"round {k}: {n} records, acknowledged up to {last_acked}"
        positions = {i: p for i, (_, p) in enumerate(got)}
        for i, p in all_acked.items():
            assert positions[i] == p, i
    return all_acked


@pytest.mark.parametrize("policy,kills,max_acks", [("always", 5, 150), ("os", 6, 3000), ("batch", 6, 2000)])
def test_sigkill_keeps_acknowledged_appends(tmp_path, policy, kills, max_acks):
    acked = crash_rounds(tmp_path, policy, kills, max_acks, seed=hash(policy) & 0xFFFF)
    assert len(acked) >= kills


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["always", "os", "batch"])
def test_sigkill_soak(tmp_path, policy):
    crash_rounds(
        tmp_path, policy, kills=25, max_acks=400 if policy == "always" else 20000, seed=random.randrange(1 << 30)
    )
