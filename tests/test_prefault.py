"""The background thread's prefault: it faults the active segment's mapping
in ahead of the writer, up to its lead past the log's end as it was when
the writer asked, in 1 MiB steps, then doubles the lead (2 MiB at first, at
most 16 MiB) and stops until the writer asks again (it wrote an eighth of
the lead); under the batch policy it steps aside as soon as an fsync falls
due (segment.pyx, _prefault_loop).

The bug these tests pin down: the target was recomputed at each step, so
while a writer ran the thread chased it a few pages per madvise (7,000 calls
for 120 MB) and, under the batch policy, did no fsync until the writer
paused: 63-96 fsyncs a second under batch(0.005) instead of about 200."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import wait_for
from norikv import FsyncPolicy, Position, Record, Wal, WalConfig, _engine

MIB = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")
AHEAD = 16 * MIB  # _PREFAULT_AHEAD (segment.pxd): the longest lead
FIRST = 2 * MIB  # _PREFAULT_REFILL: the lead of a Wal just opened
SYNCED_AHEAD = 4 * MIB  # _PREFAULT_SYNCED_AHEAD: the longest once sync() was called

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prefaulting is Linux-only")


def _open(path, policy):
    return Wal.open(WalConfig(dir=str(path), max_segment_size=64 * MIB, fsync_policy=policy))[0]


def _fill(wal, n=2000):
    for i in range(n):
        wal.append(Record.put(b"k%06d" % i, b"v" * 100))


def _settled(wal):
    """The thread's own prefault after the appends has finished."""
    assert wait_for(lambda: not wal.prefault_pending)


def test_the_prefault_fills_the_lead_from_the_end_it_was_asked_at(tmp_path):
    wal = _open(tmp_path / "db", FsyncPolicy.OS)
    try:
        _fill(wal)
        _settled(wal)
        end, lead, populated, pending = _engine._test_prefault(wal, False)
        assert not pending and FIRST <= lead <= AHEAD
        assert populated == -(-(end + lead) // PAGE) * PAGE
    finally:
        wal.close()


def test_the_lead_starts_small_and_doubles_up_to_16_mib(tmp_path):
    # One put in a store just opened faults in 2 MiB of zeros, not 16 (which
    # a close() then has to drop, and which an open store holds meanwhile).
    wal = _open(tmp_path / "db", FsyncPolicy.OS)
    try:
        wal.append(Record.put(b"k", b"v"))
        _settled(wal)
        leads = [_engine._test_prefault(wal, False)[1] for _ in range(5)]
        assert leads[0] <= 2 * FIRST  # (the thread's own prefault of the append may have doubled it once)
        assert all(b == min(2 * a, AHEAD) for a, b in zip(leads, leads[1:])), leads
        assert leads[-1] == AHEAD
    finally:
        wal.close()


@pytest.mark.parametrize("sync_first", [True, False])
def test_once_sync_is_called_the_lead_stops_at_4_mib(tmp_path, sync_first):
    """What the prefault maps ahead for writing (OS policy, commits of more
    than 1 MiB: page-cache folios stay large) the next sync() writes as
    zeros: a store whose caller syncs keeps SYNCED_AHEAD ahead, not 16 MiB,
    including one whose lead had already grown: to 4-8 MiB while the first
    commit was written (sync_first), or to 16 MiB. The first refill after
    the sync() shrinks it (the hook reports the lead each refill starts
    with: the first one's may be from before the sync)."""
    wal = _open(tmp_path / "db", FsyncPolicy.OS)
    try:
        _fill(wal, 10_000)  # 1.1 MiB
        if sync_first:
            wal.sync()
        _settled(wal)
        leads = [_engine._test_prefault(wal, False)[1] for _ in range(5)]
        if not sync_first:
            assert leads[-1] == AHEAD
            wal.sync()
            leads = [_engine._test_prefault(wal, False)[1] for _ in range(5)]
        assert max(leads[1:]) == leads[-1] == SYNCED_AHEAD, leads
        assert not wal.small_folios
    finally:
        wal.close()


def test_the_prefault_steps_aside_for_a_due_batch_fsync(tmp_path):
    # The longest window: the thread's own fsync of the last append is a
    # second away. The background thread is stopped first: woken by the
    # append, it saw the fsync made due below and ran it (clearing `dirty`)
    # while the hook's loop ran, which then had nothing to step aside for
    # (it failed about 1 run in 7, and more often on some builds' timing).
    wal = _open(tmp_path / "db", FsyncPolicy.batch(1.0))
    try:
        _fill(wal)
        _settled(wal)
        wal.sync()
        # A sync() of one record: no zeros written ahead (_zero_chunk), the
        # thread prefaults.
        wal.append(Record.put(b"k001999", b"v" * 100))
        wal.sync()
        wal._stop_background()
        wal.append(Record.put(b"k001999", b"v" * 100))
        end, _, populated, pending = _engine._test_prefault(wal, True)
        assert pending  # (the flusher loop fsyncs, then calls it again)
        assert end < populated <= end - end % PAGE + MIB  # one step
        # Once nothing is due, it goes on to the full lead.
        wal.sync()
        end, lead, populated, pending = _engine._test_prefault(wal, False)
        assert not pending and populated >= end + lead - PAGE
        assert [r.key for r, _ in wal.read_from(Position(0, 0))][-2:] == [b"k001999", b"k001999"]
    finally:
        wal.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from norikv import FsyncPolicy, Record, Wal, WalConfig
    wal = Wal.open(WalConfig(dir=sys.argv[1], max_segment_size=256 << 20, fsync_policy=FsyncPolicy.OS))[0]
    value = b"v" * 1000
    for i in range(int(sys.argv[2])):
        wal.append(Record.put(b"k%08d" % i, value))
    wal.close()
    """
)


def test_a_running_writer_costs_the_prefault_a_few_madvise_calls_per_mib(tmp_path):
    """Counted with strace: MADV_POPULATE_WRITE calls while a writer appends
    64 MiB as fast as it can. Steps of 1 MiB and a refill every 2 MiB (once
    the lead is 16 MiB) make at most 2 per MiB, and the first refills while
    the lead grows about 16 more."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install -y strace)")
    out = tmp_path / "trace"
    n = 64 * MIB // 1024
    cmd = [strace, "-f", "-e", "trace=madvise", "-o", str(out)]
    cmd += [sys.executable, "-c", _WRITER, str(tmp_path / "db"), str(n)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "ptrace" in r.stderr:
        pytest.skip(f"strace cannot trace here: {r.stderr[-300:]!r}")
    assert r.returncode == 0, r.stderr[-2000:]
    calls = sum("MADV_POPULATE_WRITE" in line for line in out.read_text().splitlines())
    assert 0 < calls <= 2 * 64 + 16 + 8, calls
