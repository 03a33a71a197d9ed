"""Many processes on one store (issue #14's targets), each ratio against a
reference measured in the same run: lmdb with as many processes, one norikv
process, dict.get in the reader's own process.

Every process is a fresh interpreter (subprocess) that prepares its data,
says "ready" on stdout and waits for "go" on stdin: the parent sends "go" to
all of them once all are ready (a barrier), and each reports the monotonic
clock (system-wide on Linux) at its start and end, so a phase's wall time is
last end - first start, without process start-up.

Environment (besides benchlib's):
  NORIKV_BENCH_PROC_N        puts per process of the 4-writer benchmark
                             (default 200,000; the one-process reference does
                             4x that); also the reader's key count
  NORIKV_BENCH_PROC_SYNC_N   puts per process of lmdb opened with its defaults
                             (an fsync per commit; default 500)
  NORIKV_BENCH_PROC_SECONDS  seconds each put + sync() phase runs (default 2)
  NORIKV_BENCH_SLOW_FLUSH_US the flush latency of the put + sync() info row
                             on a slowed device (default 2000; 0: row skipped)
  NORIKV_BENCH_PROC_MEM_N    keys (1 KiB values) of the disk-mode store the
                             memory benchmark opens in 4 processes (default
                             1,000,000: about 1 GiB, written once)
  NORIKV_BENCH_PROC_MEMMODE_N  keys of the values="memory" contrast (default
                             100,000)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

from benchlib import ROUNDS, DurableWritesBeside, lmdb, target
from norikv import Record

PROCS = 4
PROC_N = int(os.environ.get("NORIKV_BENCH_PROC_N", "200000"))
PROC_SYNC_N = int(os.environ.get("NORIKV_BENCH_PROC_SYNC_N", "500"))
SYNC_SECONDS = float(os.environ.get("NORIKV_BENCH_PROC_SECONDS", "2"))
MEM_N = int(os.environ.get("NORIKV_BENCH_PROC_MEM_N", "1000000"))
MEMMODE_N = int(os.environ.get("NORIKV_BENCH_PROC_MEMMODE_N", "100000"))
SLOW_FLUSH_US = int(os.environ.get("NORIKV_BENCH_SLOW_FLUSH_US", "2000"))
FAULT_SHIM = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "faults", "shim", "faultshim.c")

# The worker: argv[1] is a JSON dict of what to do. Keys are random 16-byte
# keys from random.Random(seed) (disjoint across seeds), values 100 B.
_WORKER = textwrap.dedent(
    r"""
    import json, os, random, select, sys, time

    a = json.loads(sys.argv[1])
    kind = a["kind"]
    now = time.monotonic

    def anon():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon"):
                    return int(line.split()[1]) * 1024

    def pairs(seed, n, vsize=100):
        rng = random.Random(seed)
        blob = rng.randbytes(vsize + 4096)
        return [(rng.randbytes(16), blob[i % 4096 : i % 4096 + vsize]) for i in range(n)]

    def say(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def wait_go():
        say({"ready": True})
        assert sys.stdin.readline().strip() == "go"

    def usage():
        # CPU seconds, voluntary (waits: a mutex, an fsync) and involuntary context switches
        import resource
        r = resource.getrusage(resource.RUSAGE_SELF)
        return [r.ru_utime + r.ru_stime, r.ru_nvcsw, r.ru_nivcsw]

    def stop_requested():
        return bool(select.select([sys.stdin], [], [], 0)[0])

    out = {}
    if kind == "norikv_put":
        from norikv import FsyncPolicy, KvStore
        ps = pairs(a["seed"], a["n"])
        policy = {"os": FsyncPolicy.OS}.get(a.get("policy"), FsyncPolicy.batch(0.005))
        s = KvStore.open(a["path"], auto_compact=False, fsync_policy=policy)
        put = s.put
        wait_go()
        u0, t0 = usage(), now()
        for k, v in ps:
            put(k, v)
        t1, u1 = now(), usage()
        s.close()
        out = dict(t0=t0, t1=t1, n=len(ps), usage=[b - a for a, b in zip(u0, u1)])
    elif kind == "lmdb_put":
        import lmdb
        ps = pairs(a["seed"], a["n"])
        env = lmdb.open(a["path"], map_size=a["map_size"], sync=a["sync"], metasync=a["sync"])
        wait_go()
        t0 = now()
        for k, v in ps:
            with env.begin(write=True) as txn:
                txn.put(k, v)
        t1 = now()
        env.close()
        out = dict(t0=t0, t1=t1, n=len(ps))
    elif kind == "fill":
        from norikv import KvStore
        with KvStore.open(a["path"], auto_compact=False, values=a.get("values")) as s:
            for k, v in pairs(a["seed"], a["n"], a.get("vsize", 100)):
                s.put(k, v)
            if a.get("values") == "disk":
                s._write_hints()
    elif kind == "writer":
        # puts at full speed (its own keys, overwritten in a cycle) until told to stop
        from norikv import KvStore
        ps = pairs(a["seed"], a["n"])
        s = KvStore.open(a["path"], auto_compact=False, values=a.get("values"))
        put = s.put
        wait_go()
        for k, v in ps[:1000]:
            put(k, v)
        say({"running": True})
        t0 = now()
        n = 0
        while True:
            for k, v in ps:
                put(k, v)
                n += 1
                if not n & 4095 and stop_requested():
                    break
            else:
                continue
            break
        t1 = now()
        sys.stdin.readline()
        s.close()
        out = dict(t0=t0, t1=t1, n=n)
    elif kind == "reader":
        from norikv import KvStore
        # The reference holds what the fill wrote: equal values, one object each, as the store holds them
        # (one shared value object would stay in cache, which no store's does).
        d = dict(pairs(a["seed"], a["n"]))
        keys = list(d)
        lookups = [bytes(bytearray(k)) for k in keys]  # fresh key objects
        random.Random(9).shuffle(lookups)
        s = KvStore.open(a["path"], auto_compact=False, values=a.get("values"))
        get, dget = s.get, d.get
        passes = a["passes"]

        def loop(get):
            t0 = now()
            for _ in range(passes):
                for k in lookups:
                    get(k)
            return now() - t0

        assert all(get(k) is not None for k in lookups)
        res = {"alone": [], "dict_alone": [], "writing": [], "dict_writing": []}
        for _ in range(a["rounds"]):
            res["dict_alone"].append(loop(dget))
            res["alone"].append(loop(get))
        say({"alone_done": True})
        assert sys.stdin.readline().strip() == "writer_running"
        for _ in range(a["rounds"]):
            res["dict_writing"].append(loop(dget))
            res["writing"].append(loop(get))
        out = dict(res, gets=passes * len(lookups))
        s.close()
    elif kind == "put_sync":
        from norikv import KvStore
        ps = pairs(a["seed"], 1000000 // 16)
        s = KvStore.open(a["path"], auto_compact=False)
        put, sync = s.put, s.sync
        f0 = s.stats()["fsyncs"]
        wait_go()
        u0, t0 = usage(), now()
        end = t0 + a["seconds"]
        n = 0
        for k, v in ps:
            put(k, v)
            sync()
            n += 1
            if now() >= end:
                break
        t1, u1 = now(), usage()
        out = dict(t0=t0, t1=t1, n=n, fsyncs=s.stats()["fsyncs"] - f0, usage=[b - a for a, b in zip(u0, u1)])
        s.close()
    elif kind == "memory":
        from norikv import KvStore
        before = anon()
        s = KvStore.open(a["path"], auto_compact=False, values=a["values"])
        opened = anon()
        wait_go()
        rng = random.Random(a["seed"])
        vsize = a["vsize"]
        rng.randbytes(vsize + 4096)  # the fill's blob
        get = s.get
        missing = 0
        for i in range(a["n"]):
            if get(rng.randbytes(16)) is None:
                missing += 1
        read = anon()
        st = s.stats()
        keydir = st["keydir_bytes"] or 0
        out = dict(before=before, opened=opened, read=read, keydir=keydir, keys=st["keys"], missing=missing)
        s.close()
    else:
        raise ValueError(kind)
    say(out)
    """
)


class Procs:
    """Worker processes started together: each prepares, says ready, waits for go."""

    def __init__(self, specs: list[dict], *, ready: dict | None = None, env: dict | None = None):
        self.ps = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, json.dumps(spec)],
                env=None if env is None else {**os.environ, **env},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for spec in specs
        ]
        for p in self.ps:
            assert self.read(p) == (ready or {"ready": True})

    @staticmethod
    def read(p) -> dict:
        line = p.stdout.readline()
        if not line:
            p.wait()
            raise RuntimeError(f"worker {p.pid} exited with {p.returncode}")
        return json.loads(line)

    @staticmethod
    def send(p, msg: str) -> None:
        p.stdin.write(msg + "\n")
        p.stdin.flush()

    def go(self) -> None:
        for p in self.ps:
            self.send(p, "go")

    def results(self) -> list[dict]:
        out = [self.read(p) for p in self.ps]
        for p in self.ps:
            p.stdin.close()
            assert p.wait() == 0
        return out

    def run(self) -> list[dict]:
        self.go()
        return self.results()


def _run_once(spec: dict) -> dict:
    """Runs one worker to its end (no go barrier needed)."""
    res = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(spec)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def _span(results: list[dict]) -> float:
    """Wall time of a phase: first start to last end."""
    return max(r["t1"] for r in results) - min(r["t0"] for r in results)


def _report(benchmark, name, norikv, reference, ratio, goal, *, op=">=", ref_name=""):
    met = ratio >= goal if op == ">=" else ratio <= goal
    verdict = "met" if met else "MISSED"
    print(f"\n{name}: norikv {norikv} | reference {reference} | ratio {ratio:.3g} {op} {goal}: {verdict}")
    benchmark.extra_info.setdefault("rows", []).append(
        dict(name=name, norikv=norikv, reference=reference, ratio=ratio, goal=goal, op=op, met=met)
    )
    target(name, f"{norikv} vs {reference}", ratio, goal, op=op, reference=ref_name, benchmark=benchmark)


# ---------------------------------------------------------------- 4 writers


@pytest.mark.benchmark(group="processes-put")
def test_put_4_processes_vs_lmdb_and_1_process(benchmark, scratch):
    """Targets: 4 processes putting disjoint keys (default fsync policy)
    >= 2x lmdb with 4 processes doing one put per write transaction, and
    >= 1.5x one norikv process doing all the puts alone.

    The lmdb ratio is against lmdb with sync=False, metasync=False: norikv's
    default policy is a 5 ms batch window, not an fsync per put; lmdb with its
    defaults (an fsync per commit) is measured too, on PROC_SYNC_N puts per
    process, and shown beside it."""
    total = PROCS * PROC_N
    spans: dict[str, list[float]] = {"lmdb_nosync": [], "lmdb_sync": [], "one": []}
    map_size = max(1 << 30, total * 400)

    def lmdb_round(key, n, sync):
        path = scratch.new()
        specs = [
            dict(kind="lmdb_put", path=path, seed=100 + i, n=n, sync=sync, map_size=map_size) for i in range(PROCS)
        ]
        spans[key].append(_span(Procs(specs).run()))

    def setup():
        # one round of each reference in the untimed setup, then the subject's processes
        if lmdb is not None:
            lmdb_round("lmdb_nosync", PROC_N, False)
            lmdb_round("lmdb_sync", PROC_SYNC_N, True)
        ones.append(Procs([dict(kind="norikv_put", path=scratch.new(), seed=1, n=total)]).run())
        spans["one"].append(_span(ones[-1]))
        path = scratch.new()  # one store, all 4 processes
        specs = [dict(kind="norikv_put", path=path, seed=100 + i, n=PROC_N) for i in range(PROCS)]
        return (Procs(specs),), {}

    ones: list[list[dict]] = []
    many: list[list[dict]] = []
    benchmark.pedantic(lambda procs: many.append(procs.run()), setup=setup, rounds=ROUNDS, iterations=1)
    scratch.clean()
    subject = [_span(rs) for rs in many]
    sec, one = min(subject), min(spans["one"])
    rate = total / sec
    benchmark.extra_info.update(
        puts=total, puts_per_second=rate, spans=subject, one_process_spans=spans["one"], lmdb_spans=spans
    )
    # Where the wall time went: CPU seconds of all writers (a writer applies
    # the others' records to its own map too) and their waits.
    cpu, waits, preempted = (sum(r["usage"][i] for r in many[subject.index(sec)]) for i in range(3))
    cpu1 = ones[spans["one"].index(one)][0]["usage"][0]
    print(
        f"\n{PROCS} writers: {sec:.2f} s wall, {cpu:.2f} CPU s in all ({cpu / sec:.2f} cores busy),"
        f" {waits:,} voluntary / {preempted:,} involuntary context switches; 1 process: {one:.2f} s wall,"
        f" {cpu1:.2f} CPU s"
    )
    benchmark.extra_info.update(
        writers_cpu_seconds=cpu, writers_waits=waits, one_process_cpu_seconds=cpu1, writers=many, one_process=ones
    )
    # The one process already keeps more than a core busy (its background
    # thread faults in the log's pages ahead of it: docs/performance.md), so
    # the same work spread over every core can be at most this much faster.
    cores = os.cpu_count() or 1
    target(
        f"{PROCS} processes put vs 1 process: the CPU ceiling on {cores} cores (info)",
        f"1 process: {one:.2f} s wall, {cpu1:.2f} CPU s (its threads)",
        one / (cpu1 / cores),
        1.5,
        reference="one process's wall time / (its CPU seconds / cores)",
        benchmark=benchmark,
    )
    fig = f"{rate / 1e6:.2f} M puts/s ({PROCS} procs)"
    _report(
        benchmark,
        f"{PROCS} processes put vs 1 process",
        fig,
        f"{total / one / 1e6:.2f} M puts/s (1 proc)",
        rate / (total / one),
        1.5,
        ref_name="one norikv process, the same puts",
    )
    if lmdb is None:
        target(f"{PROCS} processes put vs lmdb", "lmdb not installed", None, 2.0)
        return
    lm = total / min(spans["lmdb_nosync"])
    lms = PROCS * PROC_SYNC_N / min(spans["lmdb_sync"])
    benchmark.extra_info.update(lmdb_nosync_puts_per_second=lm, lmdb_default_puts_per_second=lms)
    _report(
        benchmark,
        f"{PROCS} processes put vs lmdb (sync=False)",
        fig,
        f"lmdb {lm / 1e6:.3f} M puts/s",
        rate / lm,
        2.0,
        ref_name="lmdb sync=False metasync=False, 1 put per txn, 4 procs",
    )
    _report(
        benchmark,
        f"{PROCS} processes put vs lmdb (defaults, info)",
        fig,
        f"lmdb {lms / 1e3:.2f} k puts/s",
        rate / lms,
        2.0,
        ref_name="lmdb defaults (fsync per commit), 1 put per txn, 4 procs",
    )


@pytest.mark.benchmark(group="processes-put")
def test_put_4_processes_batch_vs_os(benchmark, scratch, bench_root):
    """Target (issue 15): 4 processes putting disjoint keys into one store
    under the default FsyncPolicy.batch(0.005) >= 0.9x the same under
    FsyncPolicy.OS (a round of OS in the untimed setup before each round).

    Shown beside it (info), the storage's ceiling for that row, as for one
    writer in test_bench_write_path.py: the same OS round while another
    process makes the batch rounds' log bytes a second durable (5 ms
    fdatasyncs, DurableWritesBeside), against the OS rounds alone."""
    total = PROCS * PROC_N
    record = len(Record.put(bytes(16), bytes(100)).encode())
    os_spans: list[float] = []
    beside_spans: list[float] = []
    many: list[list[dict]] = []
    beside = DurableWritesBeside(bench_root)

    def round_specs(policy):
        path = scratch.new()
        return [dict(kind="norikv_put", path=path, seed=100 + i, n=PROC_N, policy=policy) for i in range(PROCS)]

    def setup():
        os_spans.append(_span(Procs(round_specs("os")).run()))
        procs = Procs(round_specs("os"))
        # the bytes a second of the last batch round's log (of this OS round's before the first)
        beside.start(record * total / (_span(many[-1]) if many else os_spans[-1]))
        try:
            beside_spans.append(_span(procs.run()))
        finally:
            beside.stop()
        return (Procs(round_specs("batch")),), {}

    try:
        benchmark.pedantic(lambda procs: many.append(procs.run()), setup=setup, rounds=max(ROUNDS, 3), iterations=1)
    finally:
        beside.stop()
    scratch.clean()
    sec, ref = min(_span(rs) for rs in many), min(os_spans)
    benchmark.extra_info.update(batch_spans=[_span(rs) for rs in many], os_spans=os_spans, beside_spans=beside_spans)
    _report(
        benchmark,
        f"{PROCS} processes put, batch(5 ms) vs OS policy",
        f"{total / sec / 1e6:.2f} M puts/s",
        f"OS {total / ref / 1e6:.2f} M puts/s",
        ref / sec,
        0.9,
        ref_name="the same 4 processes under FsyncPolicy.OS",
    )
    _report(
        benchmark,
        f"{PROCS} processes put under OS beside durable writes of the log's bytes vs alone: the ceiling (info)",
        f"{total / min(beside_spans) / 1e6:.2f} M puts/s",
        f"alone {total / ref / 1e6:.2f} M puts/s",
        ref / min(beside_spans),
        0.9,
        ref_name="the same 4 processes under FsyncPolicy.OS, nothing beside them",
    )


# ---------------------------------------------------------------- reader beside a writer


@pytest.mark.benchmark(group="processes-get")
@pytest.mark.parametrize("values", ["memory", "disk"])
def test_get_while_another_process_writes(benchmark, scratch, values):
    """Target: a reader process's get (fresh key objects, keys that exist)
    while a writer process puts at full speed >= 0.5x dict.get on the same
    keys in the reader's process. Also shown: the reader alone. Both value
    modes (the reader and the writer in the same one): the reader applies
    every record the writer puts (docs/performance.md, catch-up)."""
    path = scratch.new()
    n = PROC_N
    _run_once(dict(kind="fill", path=path, seed=7, n=n, values=values))
    passes = max(1, 1000000 // n)
    rounds = max(ROUNDS, 3)
    out: list[dict] = []

    def run():
        # the reader times its gets alone first, then with the writer running
        spec = dict(kind="reader", path=path, seed=7, n=n, passes=passes, rounds=rounds, values=values)
        reader = Procs([spec], ready={"alone_done": True})
        r = reader.ps[0]
        writer = Procs([dict(kind="writer", path=path, seed=8, n=100000, values=values)])
        w = writer.ps[0]
        writer.go()
        assert Procs.read(w) == {"running": True}
        Procs.send(r, "writer_running")
        res = reader.results()[0]
        Procs.send(w, "stop")
        wres = writer.results()[0]
        out.append(dict(reader=res, writer=wres))

    benchmark.pedantic(run, rounds=1, iterations=1)
    res, wres = out[0]["reader"], out[0]["writer"]
    g = res["gets"]
    writing, dict_w = min(res["writing"]), min(res["dict_writing"])
    alone, dict_a = min(res["alone"]), min(res["dict_alone"])
    wrate = wres["n"] / (wres["t1"] - wres["t0"])
    benchmark.extra_info.update(reader=res, writer_puts_per_second=wrate)
    print(
        f"\nreader alone: {g / alone / 1e6:.2f} M gets/s vs dict.get {g / dict_a / 1e6:.2f} M"
        f" ({dict_a / alone:.3g}x); writer beside the reader: {wrate / 1e6:.2f} M puts/s"
    )
    target(
        f"reader get, no writer, {values} mode (info)",
        f"{g / alone / 1e6:.2f} M gets/s vs dict.get {g / dict_a / 1e6:.2f} M",
        dict_a / alone,
        0.5,
        reference="dict.get, same keys, same process",
        benchmark=benchmark,
    )
    _report(
        benchmark,
        f"reader get while a process writes, {values} mode",
        f"{g / writing / 1e6:.2f} M gets/s (writer {wrate / 1e6:.2f} M puts/s)",
        f"dict.get {g / dict_w / 1e6:.2f} M gets/s",
        dict_w / writing,
        0.5,
        ref_name="dict.get, same keys, same process, same time",
    )


# ---------------------------------------------------------------- put + sync()


@pytest.mark.benchmark(group="processes-sync")
def test_put_sync_4_processes_vs_1(benchmark, scratch):
    """Target: 4 processes each doing put + sync() in a loop >= 3x the
    put + sync()/s of one process doing the same (group commit across
    processes). Each phase runs SYNC_SECONDS. Also shown: fsyncs vs sync()
    calls, summed over the processes."""
    one: list[dict] = []

    def setup():
        one.append(_put_sync_procs(scratch.new(), SYNC_SECONDS, n=1).run()[0])
        return (_put_sync_procs(scratch.new(), SYNC_SECONDS),), {}

    many: list[list[dict]] = []
    benchmark.pedantic(lambda procs: many.append(procs.run()), setup=setup, rounds=ROUNDS, iterations=1)
    scratch.clean()
    best = max(many, key=_sync_rate)
    best_one = max(one, key=lambda r: _sync_rate([r]))
    _slow_flush_row(benchmark, scratch)
    calls, fsyncs = sum(r["n"] for r in best), sum(r["fsyncs"] for r in best)
    benchmark.extra_info.update(
        rates=[_sync_rate(rs) for rs in many],
        one_rates=[_sync_rate([r]) for r in one],
        sync_calls=calls,
        fsyncs=fsyncs,
    )
    print(
        f"\n{PROCS} processes: {calls:,} sync() calls, {fsyncs:,} fsyncs"
        f" ({calls / max(fsyncs, 1):.2f} calls per fsync);"
        f" 1 process: {best_one['n']:,} calls, {best_one['fsyncs']:,} fsyncs"
    )
    _report(
        benchmark,
        f"{PROCS} processes put+sync vs 1",
        f"{_sync_rate(best):,.0f} put+sync/s ({calls:,} syncs, {fsyncs:,} fsyncs)",
        f"{_sync_rate([best_one]):,.0f} put+sync/s (1 proc)",
        _sync_rate(best) / _sync_rate([best_one]),
        3.0,
        ref_name="one process doing put + sync()",
    )


def _put_sync_procs(path, seconds, env=None, n=PROCS):
    """n processes, each in a put + sync() loop on the store at path for `seconds`."""
    specs = [dict(kind="put_sync", path=path, seed=100 + i, seconds=seconds) for i in range(n)]
    return Procs(specs, env=env)


def _sync_rate(rs):
    return sum(r["n"] for r in rs) / _span(rs)


def _slow_flush_row(benchmark, scratch):
    """The same 4 vs 1, one round each, on a device whose flush takes
    SLOW_FLUSH_US (an SSD without power-loss protection, a network disk):
    the fault shim of the test suite (LD_PRELOAD) makes every fdatasync and
    msync sleep that long first. An info row: where a flush costs far more
    than waking a process, how much of the fsync the processes share."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not SLOW_FLUSH_US or cc is None or not os.path.exists(FAULT_SHIM):
        print("\nslow-flush row skipped (NORIKV_BENCH_SLOW_FLUSH_US=0, no C compiler, or no tests/ checkout)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        so = os.path.join(tmp, "faultshim.so")
        subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so, FAULT_SHIM, "-ldl"], check=True)
        env = dict(LD_PRELOAD=so, FAULTSHIM_OPS="fdatasync,msync", FAULTSHIM_ACTION="delay")
        env["FAULTSHIM_DELAY_US"] = str(SLOW_FLUSH_US)
        one = _put_sync_procs(scratch.new(), SYNC_SECONDS / 2, env, n=1).run()
        many = _put_sync_procs(scratch.new(), SYNC_SECONDS / 2, env).run()
        scratch.clean()
    calls, fsyncs = sum(r["n"] for r in many), sum(r["fsyncs"] for r in many)
    target(
        f"{PROCS} processes put+sync vs 1, flush slowed to {SLOW_FLUSH_US} us (info)",
        f"{_sync_rate(many):,.0f} put+sync/s ({calls / max(fsyncs, 1):.2f} calls per fsync)"
        f" vs {_sync_rate(one):,.0f} (1 proc)",
        _sync_rate(many) / _sync_rate(one),
        3.0,
        reference="one process doing put + sync() on the same slowed device",
        benchmark=benchmark,
    )


# ---------------------------------------------------------------- memory


@pytest.fixture(scope="module")
def store_1gib(bench_root):
    """MEM_N random 16-byte keys with 1 KiB values in a disk-mode store, written once."""
    path = os.path.join(bench_root, "proc-1gib")
    _run_once(dict(kind="fill", path=path, seed=11, n=MEM_N, vsize=1024, values="disk"))
    return path


@pytest.mark.benchmark(group="processes-memory")
@pytest.mark.parametrize("mode", ["disk", "memory"])
def test_anon_memory_4_processes(benchmark, scratch, store_1gib, mode):
    """Target: each of 4 processes opening the ~1 GiB store (values="disk")
    and reading every key once holds only the key directory in anonymous
    memory: RssAnon growth <= 1.25x stats()["keydir_bytes"]. values="memory"
    (MEMMODE_N keys) is shown for contrast: there each process holds the values."""
    if mode == "disk":
        path, n = store_1gib, MEM_N
    else:
        path, n = scratch.new(), MEMMODE_N
        _run_once(dict(kind="fill", path=path, seed=11, n=n, vsize=1024, values="memory"))
    out: list[list[dict]] = []

    def setup():
        specs = [dict(kind="memory", path=path, seed=11, n=n, vsize=1024, values=mode) for _ in range(PROCS)]
        return (Procs(specs),), {}

    benchmark.pedantic(lambda procs: out.append(procs.run()), setup=setup, rounds=1, iterations=1)
    rs = out[0]
    assert all(r["missing"] == 0 and r["keys"] == n for r in rs), rs
    mib = 1 << 20
    data = n * (16 + 1024)
    for i, r in enumerate(rs):
        opened, read = (r["opened"] - r["before"]) / mib, (r["read"] - r["before"]) / mib
        print(
            f"\n{mode} process {i}: RssAnon before open {r['before'] / mib:.1f} MiB, +{opened:.1f} after open,"
            f" +{read:.1f} after reading all {n:,} keys; keydir_bytes {r['keydir'] / mib:.1f} MiB;"
            f" data {data / mib:.0f} MiB"
        )
    worst = max(r["read"] - r["before"] for r in rs)
    keydir = rs[0]["keydir"]
    benchmark.extra_info.update(processes=rs, data_bytes=data)
    if mode == "disk":
        _report(
            benchmark,
            f"anon memory per process, {PROCS} procs, disk mode",
            f"+{worst / mib:.1f} MiB (worst process, after open + reading all keys)",
            f"keydir {keydir / mib:.1f} MiB, data {data / mib:.0f} MiB",
            worst / keydir,
            1.25,
            op="<=",
            ref_name="stats()['keydir_bytes']",
        )
    else:
        print(f"\nmemory mode (contrast): worst process +{worst / mib:.1f} MiB = {worst / data:.2f}x the data")
        target(
            f"anon memory per process, {PROCS} procs, memory mode (info)",
            f"+{worst / mib:.1f} MiB vs data {data / mib:.0f} MiB",
            worst / data,
            1.0,
            op=">=",
            reference="key + value bytes",
            benchmark=benchmark,
        )
