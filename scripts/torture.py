#!/usr/bin/env python3
"""Crash torture for norikv: SIGKILL a writer at random instants, check what survives.

Each round forks a writer that opens the store (recovering whatever the
previous kill left behind), then runs a random mix of put, delete, atomic
batch, TTL put (long and already-expired deadlines), sync, explicit
compaction, background auto-compaction, large values that force segment
rotation, LZ4 / zstd value compression and growing (not preallocated)
segments in some rounds. Each round's writer keeps its values in memory or
on disk (values="disk", which writes hint files; ``--values``), and each
check opens the copy in either mode at random. Before each operation the writer sends ``S <id> <op>`` over a pipe,
after it returns ``A <id> <extra>``: an operation is *acknowledged* once its
``A`` line was sent (a batch once its ``with`` block exited). The runner
SIGKILLs the writer after a random delay (sometimes during its recovery),
drains the pipe, and checks a copy of the directory in-process:

* the recovered map equals the model of acknowledged operations, or that
  model plus the one operation in flight (never anything else): nothing
  acknowledged is lost, no deleted key comes back, a batch is all or none,
  no value is torn (values are compared byte for byte);
* TTL deadlines survive exactly; keys whose deadline passed are gone;
* open never raises (a SIGKILL must not leave mid-log damage).

The next writer then opens the original, un-repaired directory, so recovery
itself runs on raw crash state and can itself be killed.

With ``--threads N`` the writer runs N threads, each owning the keys equal
to its number modulo N, and each thread's keys are checked against its own
model (plus its own op in flight).

    python scripts/torture.py --kills 500            # full run, all policies
    python scripts/torture.py --kills 45 --json      # quick mode (the tests)
    python scripts/torture.py --kills 150 --threads 4

Exit status 0 when every round checked out; the summary gives the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import sys
import tempfile
import time

from norikv import FsyncPolicy, KvStore
from norikv._engine import now_ms

POLICIES = {
    "always": lambda: FsyncPolicy.ALWAYS,
    "batch": lambda: FsyncPolicy.batch(0.005),
    "os": lambda: FsyncPolicy.OS,
}
NKEYS = 300
SEG = 1 << 20
LONG_TTL = 3600.0
SHORT_TTL = 0.001
# Keys whose deadline is this close to the check are not compared (clock noise).
TTL_SLACK_MS = 200


def key(i: int) -> bytes:
    return b"k%04d" % i


def value(opid: int, idx: int, size: int) -> bytes:
    """The value of operation opid, item idx: deterministic, distinct per op,
    so a torn or misplaced value cannot compare equal."""
    head = b"%d/%d:" % (opid, idx)
    if size <= len(head):
        return head[:size]
    if (opid + idx) % 3 == 0:  # compressible
        return (head * (size // len(head) + 1))[:size]
    return head + random.Random(opid * 64 + idx).randbytes(size - len(head))


def store_options(policy: str, auto_compact: bool, compression: str | None = None) -> dict:
    return dict(
        fsync_policy=POLICIES[policy](),
        max_segment_size=SEG,
        compression=compression,
        auto_compact=auto_compact,
        compact_min_bytes=2 * SEG,
        compact_dead_ratio=0.5,
    )


# ------------------------------------------------------------------ the writer


def _send(fd: int, line: str) -> None:
    data = (line + "\n").encode()
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _random_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.02:
        return rng.randint(100_000, 300_000)  # forces a segment rotation soon
    if r < 0.1:
        return 0
    return rng.randint(1, 4096)


def writer(
    path: str,
    policy: str,
    seed: int,
    opbase: int,
    fd: int,
    auto_compact: bool,
    threads: int = 1,
    values: str = "memory",
) -> None:
    """Runs in the forked child until killed. With several threads, thread t
    owns the keys whose number is t modulo `threads` and numbers its ops from
    opbase + t * THREAD_STRIDE."""
    rng = random.Random(seed)
    compression = rng.choice([None, None, "lz4", "zstd"])
    opts = store_options(policy, auto_compact, compression)
    if rng.random() < 0.3:  # segments grown (and remapped) 1 MiB at a time
        opts["preallocate"] = False
        opts["max_segment_size"] = 4 * SEG
    opts["values"] = values
    store = KvStore.open(path, **opts)
    _send(fd, "R %d" % len(store))
    if threads == 1:
        _writer_loop(store, rng, opbase, fd, 0, 1)
        return
    import threading

    ts = [
        threading.Thread(
            target=_writer_loop,
            daemon=True,
            args=(store, random.Random(seed * 31 + t), opbase + t * THREAD_STRIDE, fd, t, threads),
        )
        for t in range(threads)
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


THREAD_STRIDE = 1_000_000


def _writer_loop(store, rng: random.Random, opid: int, fd: int, me: int, threads: int) -> None:
    def rkey() -> int:
        return rng.randrange(NKEYS // threads) * threads + me

    while True:
        opid += 1
        r = rng.random()
        if r < 0.50:
            op = {"t": "put", "k": rkey(), "n": _random_size(rng)}
        elif r < 0.65:
            op = {"t": "del", "k": rkey()}
        elif r < 0.80:
            items = []
            for _ in range(rng.randint(1, 8)):
                if rng.random() < 0.3:
                    items.append(["d", rkey(), 0])
                else:
                    items.append(["p", rkey(), _random_size(rng)])
            op = {"t": "batch", "ops": items}
        elif r < 0.90:
            op = {
                "t": "ttl",
                "k": rkey(),
                "n": rng.randint(0, 2000),
                "ttl": SHORT_TTL if rng.random() < 0.3 else LONG_TTL,
            }
        elif r < 0.97:
            op = {"t": "sync"}
        else:
            op = {"t": "compact"}
        _send(fd, "S %d %s" % (opid, json.dumps(op, separators=(",", ":"))))
        extra = ""
        t = op["t"]
        if t == "put":
            store.put(key(op["k"]), value(opid, 0, op["n"]))
        elif t == "del":
            store.delete(key(op["k"]))
        elif t == "batch":
            with store.batch() as b:
                for i, (kind, k, n) in enumerate(op["ops"]):
                    if kind == "p":
                        b.put(key(k), value(opid, i, n))
                    else:
                        b.delete(key(k))
        elif t == "ttl":
            store.put(key(op["k"]), value(opid, 0, op["n"]), ttl=op["ttl"])
            d = store._deadline_of(key(op["k"]))
            # None: already expired and purged (e.g. by a background compaction).
            extra = " %d" % (d if d is not None else 0)
        elif t == "sync":
            store.sync()
        elif t == "compact":
            store.compact()
        _send(fd, "A %d%s" % (opid, extra))


# ------------------------------------------------------------------ the model


def apply(model: dict, opid: int, op: dict, deadline: int | None) -> None:
    """model: key -> (value, deadline or None)."""
    t = op["t"]
    if t == "put":
        model[key(op["k"])] = (value(opid, 0, op["n"]), None)
    elif t == "del":
        model.pop(key(op["k"]), None)
    elif t == "batch":
        for i, (kind, k, n) in enumerate(op["ops"]):
            if kind == "p":
                model[key(k)] = (value(opid, i, n), None)
            else:
                model.pop(key(k), None)
    elif t == "ttl":
        model[key(op["k"])] = (value(opid, 0, op["n"]), deadline)


def apply_pending(model: dict, opid: int, op: dict) -> dict | None:
    """Model including the in-flight op. A long TTL put in flight gets the
    deadline -1 ("some deadline": we never heard it); a short one has
    expired by the time of the check."""
    m = dict(model)
    if op["t"] == "ttl" and op["ttl"] == SHORT_TTL:
        m.pop(key(op["k"]), None)  # applied, and expired by now
    elif op["t"] == "ttl":
        m[key(op["k"])] = (value(opid, 0, op["n"]), -1)  # -1: deadline unknown
    else:
        apply(m, opid, op, None)
    return m


def _matches(state: dict, deadlines: dict, model: dict, now: int) -> str | None:
    """None when the recovered (state, deadlines) is what `model` predicts."""
    keys = set(state) | set(model)
    for k in sorted(keys):
        exp = model.get(k)
        got = state.get(k)
        if exp is not None and exp[1] is not None and exp[1] != -1:
            if abs(exp[1] - now) < TTL_SLACK_MS:
                # Expiring right now: gone, or this very value (not another one:
                # that is how an in-flight op shows it was applied).
                if got is not None and got != exp[0]:
                    return f"{k!r}: expiring value replaced by {got[:20]!r}"
                continue
            if exp[1] <= now:
                exp = None  # expired
        if exp is None:
            if got is not None:
                return f"{k!r}: expected absent, found {len(got)} bytes {got[:20]!r}"
            continue
        if got is None:
            return f"{k!r}: expected {len(exp[0])} bytes {exp[0][:20]!r}, absent"
        if got != exp[0]:
            return f"{k!r}: value differs: expected {exp[0][:20]!r}/{len(exp[0])}, got {got[:20]!r}/{len(got)}"
        want_deadline = exp[1]
        if want_deadline == -1:
            if deadlines.get(k) is None:
                return f"{k!r}: TTL lost"
        elif deadlines.get(k) != want_deadline:
            return f"{k!r}: deadline {deadlines.get(k)} != {want_deadline}"
    return None


def check_copy(
    path: str, policy: str, scratch: str, model: dict, pendings: dict, threads: int = 1, values: str = "memory"
) -> tuple[str | None, dict, dict]:
    """Opens a copy of `path` (in `values` mode: "disk" loads the key
    directory from the hint files the writer left), compares it with the
    model: for each writer thread's keys, the acknowledged model or it plus
    that thread's op in flight (`pendings`: thread -> (opid, op)). Returns
    (error or None, observed model, figures)."""
    if os.path.exists(scratch):
        shutil.rmtree(scratch)
    if os.path.exists(path):
        shutil.copytree(path, scratch)
    figures = {}
    try:
        store = KvStore.open(scratch, values=values, **store_options(policy, False))
    except Exception as exc:  # noqa: BLE001 - any failure to open is a finding
        return f"open failed: {exc!r}", model, figures
    try:
        info = store.recovery_info
        figures["corruption_detected"] = info.corruption_detected
        figures["bytes_truncated"] = info.bytes_truncated
        state = dict(store.items())
        deadlines = {k: store._deadline_of(k) for k in state}
    finally:
        store.close()
    now = now_ms()
    errors = []
    applied = False
    new_model: dict = {}
    for t in range(threads):
        own = lambda d, t=t: {k: v for k, v in d.items() if int(k[1:]) % threads == t}  # noqa: E731
        st_t, m_t = own(state), own(model)
        err0 = _matches(st_t, deadlines, m_t, now)
        if err0 is None:
            new_model.update(m_t)
            continue
        p = pendings.get(t)
        if p is None:
            errors.append(f"state differs from the acknowledged model: {err0}")
            new_model.update(m_t)
            continue
        m1 = own(apply_pending(m_t, *p))
        err1 = _matches(st_t, deadlines, m1, now)
        if err1 is not None:
            errors.append(
                f"state matches neither the acknowledged model ({err0}) nor it plus the in-flight op {p[1]} ({err1})"
            )
            new_model.update(m_t)
            continue
        applied = True
        # Adopt what recovery decided, with the deadline actually stored.
        if p[1]["t"] == "ttl":
            k = key(p[1]["k"])
            if k in state:
                m1[k] = (state[k], deadlines[k])
            else:
                m1.pop(k, None)
        new_model.update(m1)
    figures["pending_applied"] = applied
    if errors:
        return "; ".join(errors), model, figures
    return None, new_model, figures


# ------------------------------------------------------------------ the runner


def run_round(
    path: str,
    policy: str,
    rng: random.Random,
    opbase: int,
    auto_compact: bool,
    max_delay: float,
    threads: int = 1,
    values: str = "memory",
) -> dict:
    """One fork / random delay / SIGKILL. Returns the lines the writer sent."""
    rfd, wfd = os.pipe()
    seed = rng.getrandbits(32)
    # Some kills land very early (inside open/recovery), most while writing.
    delay = rng.uniform(0, 0.03) if rng.random() < 0.15 else rng.uniform(0.01, max_delay)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            import faulthandler

            faulthandler.enable(all_threads=True)  # a crash other than our SIGKILL is a finding
            os.close(rfd)
            writer(path, policy, seed, opbase, wfd, auto_compact, threads, values)
        except BaseException as exc:  # noqa: BLE001
            try:
                _send(wfd, "E %r" % (exc,))
            except Exception:
                pass
            code = 3
        os._exit(code)
    os.close(wfd)
    buf = bytearray()
    deadline = time.monotonic() + delay
    killed = False
    while True:
        timeout = deadline - time.monotonic()
        if timeout <= 0 and not killed:
            os.kill(pid, signal.SIGKILL)
            killed = True
        r, _, _ = select.select([rfd], [], [], max(0.0, timeout) if not killed else 5.0)
        if r:
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                break
            buf += chunk
        elif killed:
            break
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    lines = buf.decode().splitlines()
    complete = buf.endswith(b"\n")
    if not complete and lines:
        lines.pop()  # a line cut by the kill
    return {"lines": lines, "status": status, "delay": delay}


def torture(
    base: str,
    kills: int,
    policies: list[str],
    seed: int,
    max_delay: float = 0.25,
    time_budget: float | None = None,
    verbose: bool = False,
    keep_failures: bool = False,
    threads: int = 1,
    values: str = "mixed",
) -> dict:
    rng = random.Random(seed)
    modes = random.Random(seed + 1)  # (apart: a seed's other draws do not depend on `values`)
    os.makedirs(base, exist_ok=True)
    summary = {
        "kills": 0,
        "rounds_failed": 0,
        "acknowledged_ops": 0,
        "lost": 0,
        "kills_before_ready": 0,
        "pending_applied": 0,
        "pending_dropped": 0,
        "torn_tails_repaired": 0,
        "bytes_truncated": 0,
        "errors": [],
        "per_policy": {},
        "seed": seed,
        "threads": threads,
    }
    t0 = time.monotonic()
    per = max(1, kills // len(policies))
    for pi, policy in enumerate(policies):
        n = per if pi < len(policies) - 1 else kills - per * (len(policies) - 1)
        path = os.path.join(base, policy)
        scratch = os.path.join(base, policy + ".check")
        model: dict = {}
        opbase = 0
        done = 0
        for rnd in range(n):
            if time_budget is not None and time.monotonic() - t0 > time_budget:
                break
            auto = rng.random() < 0.5
            written_in = modes.choice(["memory", "disk"]) if values == "mixed" else values
            res = run_round(path, policy, rng, opbase, auto, max_delay, threads, written_in)
            if keep_failures:  # the op history, to explain a failure
                with open(os.path.join(base, policy + ".history"), "a") as h:
                    h.write(f"# round {rnd} auto_compact={auto}\n" + "\n".join(res["lines"]) + "\n")
            opbase += 10_000_000
            summary["kills"] += 1
            done += 1
            pendings: dict = {}  # writer thread -> (opid, op) started, not acknowledged
            ready = False
            for line in res["lines"]:
                tag, _, rest = line.partition(" ")
                if tag == "R":
                    ready = True
                elif tag == "S":
                    sid, _, js = rest.partition(" ")
                    pendings[int(sid) % 10_000_000 // THREAD_STRIDE] = (int(sid), json.loads(js))
                elif tag == "A":
                    parts = rest.split()
                    aid = int(parts[0])
                    pending = pendings.pop(aid % 10_000_000 // THREAD_STRIDE, None)
                    assert pending is not None and pending[0] == aid, (pending, line)
                    deadline = int(parts[1]) if len(parts) > 1 else None
                    apply(model, aid, pending[1], deadline)
                    summary["acknowledged_ops"] += 1
                elif tag == "E":
                    summary["errors"].append(f"{policy} round {rnd}: writer raised {rest}")
            if not ready:
                summary["kills_before_ready"] += 1
            if not (os.WIFSIGNALED(res["status"]) and os.WTERMSIG(res["status"]) == signal.SIGKILL):
                summary["errors"].append(f"{policy} round {rnd}: writer exited with status {res['status']}")
            check_values = modes.choice(["memory", "disk"])
            err, model, fig = check_copy(path, policy, scratch, model, pendings, threads, check_values)
            if fig.get("corruption_detected"):
                summary["torn_tails_repaired"] += 1
            summary["bytes_truncated"] += fig.get("bytes_truncated", 0)
            if pendings and err is None:
                summary["pending_applied" if fig["pending_applied"] else "pending_dropped"] += 1
            if err is not None:
                summary["rounds_failed"] += 1
                summary["lost"] += 1
                summary["errors"].append(
                    f"{policy} round {rnd} (delay {res['delay']:.3f}s, values={written_in!r},"
                    f" checked with values={check_values!r}): {err}"
                )
                if verbose:
                    print(summary["errors"][-1], file=sys.stderr)
                if keep_failures:  # the raw crash state and the repaired copy
                    shutil.copytree(path, os.path.join(base, f"fail-{policy}-{rnd}-raw"))
                    shutil.copytree(scratch, os.path.join(base, f"fail-{policy}-{rnd}-checked"))
                # Continue from what is actually there, so one finding does not cascade.
                with KvStore.open(scratch, **store_options(policy, False)) as s:
                    model = {k: (v, s._deadline_of(k)) for k, v in s.items()}
            if verbose:
                print(
                    f"{policy} round {rnd}: {len(res['lines'])} lines, "
                    f"{len(model)} keys, {'ok' if err is None else 'FAIL'}",
                    file=sys.stderr,
                )
        summary["per_policy"][policy] = done
    summary["seconds"] = round(time.monotonic() - t0, 2)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=500, help="total SIGKILLs, spread over the policies")
    ap.add_argument(
        "--policy", action="append", choices=sorted(POLICIES), help="fsync policy (repeatable; default: all three)"
    )
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--max-delay", type=float, default=0.25, help="longest run before a kill, seconds")
    ap.add_argument("--time-budget", type=float, default=None, help="stop starting rounds after this")
    ap.add_argument("--threads", type=int, default=1, help="writer threads, each with its own keys (default 1)")
    ap.add_argument(
        "--values",
        choices=["memory", "disk", "mixed"],
        default="mixed",
        help="the writers' value storage (default mixed: each round's at random); checks use either",
    )
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument(
        "--keep-failures", action="store_true", help="copy the directory of each failed round (needs --dir)"
    )
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().getrandbits(32)
    policies = args.policy or ["always", "batch", "os"]
    base = args.dir or tempfile.mkdtemp(prefix="norikv-torture-")
    try:
        summary = torture(
            base,
            args.kills,
            policies,
            seed,
            args.max_delay,
            args.time_budget,
            args.verbose,
            args.keep_failures and args.dir is not None,
            args.threads,
            args.values,
        )
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"seed {seed}: {summary['kills']} kills ({summary['per_policy']}), "
            f"{summary['acknowledged_ops']} acknowledged ops, {summary['lost']} rounds with loss, "
            f"{summary['kills_before_ready']} kills during open/recovery, "
            f"{summary['torn_tails_repaired']} torn tails repaired, {summary['seconds']} s"
        )
        for e in summary["errors"]:
            print("  " + e)
    return 0 if not summary["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
