"""The code that runs inside the measured subprocess: one store at one value
size, every requested operation in a fresh interpreter so that memory figures
do not mix.

Run by runner.py as ``python -m norikv.bench.worker SPEC`` (SPEC: the JSON
object runner.run builds). It writes JSON lines on stdout: ``{"phase": op}``
as each operation starts, ``{"phase": "done"}``, then ``{"result": {...}}``.

Plain operations run on one store at its "os" configuration, in this order:
put (which loads the N keys), get, get_missing, reopen, the disk reading,
delete. The durable operations then run on a fresh store at its "synced"
configuration.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from norikv.bench.adapter import Adapter, NotAvailable
from norikv.bench.measure import disk_usage, figure, growth, not_applicable, proc_status, trim
from norikv.bench.stores import STORES
from norikv.bench.workload import CHUNK, DURABLE_OPS, THREADS, Values, make_keys


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Job:
    """The spec of one worker, its workload and its results."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.cls: type[Adapter] = STORES[spec["store"]]
        self.n: int = spec["n"]
        self.value_size: int = spec["value_size"]
        self.ops: list[str] = spec["ops"]
        self.sync_ops: int = spec["sync_ops"]
        self.batch_size: int = spec["batch_size"]
        self.batches: int = spec["batches"]
        self.seed: int = spec["seed"]
        self.root: str = spec["dir"]
        self.path = os.path.join(self.root, "main")
        self.res: dict[str, Any] = {"ops": {}, "config": {}}
        self.figs: dict[str, Any] = self.res["ops"]
        self.keys: list[bytes] = []
        self.order: list[int] = []  # the keys' indexes in the random order of get and delete
        self.base: dict[str, int] = {}  # memory before the store is opened
        self.store: Adapter = Adapter()

    @property
    def persistent(self) -> bool:
        return self.cls.os_level != "none"

    def timed_writes(self) -> int:
        """Plain writes timed: all N, or --sync-ops when each one is fsynced."""
        return self.n if not self.cls.per_op_synced else min(self.n, self.sync_ops)

    def open(self) -> None:
        self.store.open(self.path, "os", self.n, self.value_size)


# ---------------------------------------------------------------- plain operations


def load(job: Job) -> None:
    """put: loads the N keys, timed chunk by chunk (when each put is fsynced,
    only the first --sync-ops; the rest is loaded untimed in batches)."""
    values = Values(job.seed, job.value_size)
    n = job.n
    timed = job.timed_writes()
    t_total = 0.0
    loaded = 0
    while loaded < n:
        m = min(CHUNK, n - loaded)
        if loaded < timed:
            m = min(m, timed - loaded)
        items = list(zip(job.keys[loaded : loaded + m], values.take(m)))
        if loaded < timed:
            t0 = time.perf_counter()
            job.store.put_many(items)
            t_total += time.perf_counter() - t0
        else:
            for i in range(0, m, 1000):
                job.store.durable_batch(items[i : i + 1000])
        loaded += m
        del items
    if "put" in job.ops:
        note = None
        if timed != n:
            note = f"bounded to --sync-ops={timed} (each put is fsynced); the rest loaded untimed in batches"
        job.figs["put"] = figure(timed, t_total, **({"note": note} if note else {}))


def memory_after_load(job: Job) -> None:
    trim()
    st = proc_status()
    job.res["memory_rss_anon_after_load"] = st.get("RssAnon")
    growth(job.res, "memory_store_anon", job.base, st, "RssAnon")
    growth(job.res, "memory_store_rss", job.base, st, "VmRSS")


def measure_get(job: Job) -> None:
    n = job.n
    found = 0
    t_total = 0.0
    for i in range(0, n, CHUNK):
        chunk = [job.keys[j] for j in job.order[i : i + CHUNK]]
        t0 = time.perf_counter()
        found += job.store.get_many(chunk)
        t_total += time.perf_counter() - t0
    if found != n:
        raise AssertionError(f"{job.cls.name}: {n - found} of {n} keys written were not found")
    job.figs["get"] = figure(n, t_total)


def measure_get_missing(job: Job) -> None:
    n = job.n
    missing = make_keys(job.seed, n, 2)
    t0 = time.perf_counter()
    found = 0
    for i in range(0, n, CHUNK):
        found += job.store.get_many(missing[i : i + CHUNK])
    dt = time.perf_counter() - t0
    if found:
        raise AssertionError(f"{job.cls.name}: {found} absent keys were found")
    job.figs["get_missing"] = figure(n, dt)


def measure_reopen(job: Job) -> None:
    if not job.persistent:
        job.figs["reopen"] = not_applicable("not persistent")
        return
    job.store.close()
    trim()
    t0 = time.perf_counter()
    job.open()
    v = job.store.get(job.keys[job.order[0]])
    dt = time.perf_counter() - t0
    if v is None:
        raise AssertionError(f"{job.cls.name}: a key is missing after reopen")
    job.figs["reopen"] = figure(1, dt, keys=job.n)
    trim()
    st = proc_status()
    job.res["memory_rss_anon_after_reopen"] = st.get("RssAnon")
    growth(job.res, "memory_store_anon_after_reopen", job.base, st, "RssAnon")


def measure_disk(job: Job) -> None:
    """Disk bytes with N keys (after a close, so that every store has flushed)."""
    job.store.close()
    job.res["disk_bytes"] = disk_usage(job.path)
    job.open()


def measure_delete(job: Job) -> None:
    timed = job.timed_writes()
    t_total = 0.0
    for i in range(0, timed, CHUNK):
        chunk = [job.keys[j] for j in job.order[i : min(i + CHUNK, timed)]]
        t0 = time.perf_counter()
        job.store.delete_many(chunk)
        t_total += time.perf_counter() - t0
    if job.store.get(job.keys[job.order[0]]) is not None:
        raise AssertionError(f"{job.cls.name}: a deleted key is still there")
    note = None if timed == job.n else f"bounded to --sync-ops={timed} (each delete is fsynced)"
    job.figs["delete"] = figure(timed, t_total, **({"note": note} if note else {}))


# ---------------------------------------------------------------- durable operations


def measure_batch_sync(job: Job, store: Adapter, values: Values) -> dict[str, Any]:
    size, batches = job.batch_size, job.batches
    bkeys = make_keys(job.seed, size * batches, 3)
    t_total = 0.0
    for b in range(batches):
        items = list(zip(bkeys[b * size : (b + 1) * size], values.take(size)))
        t0 = time.perf_counter()
        store.durable_batch(items)
        t_total += time.perf_counter() - t0
    return figure(
        size * batches,
        t_total,
        batches=batches,
        batch_size=size,
        commits_per_s=batches / t_total if t_total else None,
    )


def measure_put_sync(job: Job, store: Adapter, values: Values) -> dict[str, Any]:
    items = list(zip(make_keys(job.seed, job.sync_ops, 4), values.take(job.sync_ops)))
    put = store.put_synced
    t0 = time.perf_counter()
    for k, v in items:
        put(k, v)
    return figure(job.sync_ops, time.perf_counter() - t0)


def measure_threads8_sync(job: Job, store: Adapter, values: Values) -> dict[str, Any]:
    return threaded_puts(store, make_keys(job.seed, job.sync_ops, 5), values.take(job.sync_ops), THREADS)


def threaded_puts(store: Adapter, keys: list[bytes], values: list[bytes], nthreads: int) -> dict[str, Any]:
    """nthreads threads, each doing its share of put_synced; timed from a
    common start to the last one's end."""
    per = len(keys) // nthreads
    barrier = threading.Barrier(nthreads + 1)
    errors: list[BaseException] = []

    def run(t: int) -> None:
        put = store.put_synced
        mine = list(zip(keys[t * per : (t + 1) * per], values[t * per : (t + 1) * per]))
        barrier.wait()
        try:
            for k, v in mine:
                put(k, v)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(nthreads)]
    for th in threads:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    dt = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return figure(per * nthreads, dt, threads=nthreads)


DURABLE: dict[str, Callable[[Job, Adapter, Values], dict[str, Any]]] = {
    "batch_sync": measure_batch_sync,
    "put_sync": measure_put_sync,
    "threads8_sync": measure_threads8_sync,
}


def run_durable(job: Job, durable: list[str]) -> None:
    """The durable operations, on a fresh store at the "synced" configuration."""
    store = job.cls()
    try:
        store.open(
            os.path.join(job.root, "synced"),
            "synced",
            max(job.sync_ops, job.batch_size * job.batches),
            job.value_size,
        )
    except NotAvailable as e:
        for o in durable:
            job.figs[o] = not_applicable(str(e))
        return
    job.res["config"]["durable_ops"] = store.config("synced")
    values = Values(job.seed + 1, job.value_size)
    for op in durable:
        emit({"phase": op})
        job.figs[op] = DURABLE[op](job, store, values)
    store.close()


# ---------------------------------------------------------------- one run


def step(job: Job, op: str, measure: Callable[[Job], None]) -> None:
    if op in job.ops:
        emit({"phase": op})
        measure(job)


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs every requested operation on one store at one value size."""
    job = Job(spec)
    res = job.res
    job.keys = make_keys(job.seed, job.n, 1)
    job.order = list(range(job.n))
    random.Random(job.seed).shuffle(job.order)
    trim()
    job.base = proc_status()
    res["memory_baseline_rss_anon"] = job.base.get("RssAnon")
    res["memory_baseline_rss"] = job.base.get("VmRSS")

    job.store = job.cls()
    job.open()
    res["config"]["plain_ops"] = job.store.config("os")
    res["level"] = job.cls.os_level
    emit({"phase": "put"})  # always: the load is every other operation's setup
    load(job)
    memory_after_load(job)
    step(job, "get", measure_get)
    step(job, "get_missing", measure_get_missing)
    step(job, "reopen", measure_reopen)
    if job.persistent:
        measure_disk(job)
    step(job, "delete", measure_delete)
    job.store.close()
    job.keys, job.order = [], []
    trim()

    durable = [o for o in DURABLE_OPS if o in job.ops]
    if durable:
        run_durable(job, durable)
    emit({"phase": "done"})
    res["peak_rss"] = proc_status().get("VmHWM")
    return res


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m norikv.bench.worker SPEC_JSON (started by norikv.bench)\n")
        return 2
    emit({"result": run_worker(json.loads(args[0]))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
