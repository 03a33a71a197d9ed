"""Runs the comparison: one worker subprocess per (store, value size), its
phases shown on the progress line, its result collected into the results
document (the JSON file's content)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from norikv.bench.machine import machine_info, peer_versions
from norikv.bench.stores import STORES
from norikv.bench.workload import KEY_SIZE, OPS, THREADS
from norikv.progress import Progress

LEVELS = {
    "none": "nothing survives the process",
    "os": "an acknowledged write is in OS buffers: survives the process, not a power loss",
    "synced": "an acknowledged write is on stable storage (fsync/fdatasync)",
}


def run_one(spec: dict[str, Any], progress: Progress, phases: int, timeout: float) -> dict[str, Any]:
    """Runs the worker in a fresh interpreter; returns its result or an error."""
    cmd = [sys.executable, "-m", "norikv.bench.worker", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr
    result: dict[str, Any] | None = None
    seen = 0
    label = f"{spec['store']} {spec['value_size']}B"
    stderr_buf: list[str] = []
    reader = threading.Thread(target=lambda: stderr_buf.append(stderr.read()), daemon=True)
    reader.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.daemon = True
    timer.start()
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if "phase" in msg:
            if seen < phases:
                seen += 1
                progress.update(progress.done + 1, force=True, detail=f"{label}: {msg['phase']}")
        elif "result" in msg:
            result = msg["result"]
    rc = proc.wait()
    timed_out = not timer.is_alive() and rc != 0
    timer.cancel()
    reader.join(5)
    progress.update(progress.done + max(phases - seen, 0), force=True, detail=label)
    if result is None or rc != 0:
        err = "".join(stderr_buf).strip().splitlines()
        if timed_out:
            err.append(f"killed after --timeout={timeout:g} s")
        return {
            "status": "error",
            "reason": f"worker exited with {rc}: " + (err[-1] if err else "no output"),
            "stderr_tail": err[-15:],
        }
    result["status"] = "measured"
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measures every (store, value size) of the parsed command line; returns
    the results document."""
    stores = args.stores
    sizes = args.value_size
    ops = args.ops
    out: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m norikv.bench " + " ".join(args.argv),
        "machine": machine_info(),
        "versions": peer_versions(stores),
        "parameters": {
            "n": args.n,
            "key_size": KEY_SIZE,
            "value_sizes": sizes,
            "ops": ops,
            "sync_ops": args.sync_ops,
            "batch_size": args.batch_size,
            "batches": args.batches,
            "seed": args.seed,
            "threads": THREADS,
            "dir": args.dir,
        },
        "levels": dict(LEVELS),
        "operations": {o: OPS[o] for o in ops},
        "results": {},
    }
    phases = len([o for o in ops if o != "put"]) + 2  # put and done are always emitted
    todo = [(s, vs) for vs in sizes for s in stores]
    progress = Progress(args, "bench", len(todo) * phases, unit="steps", elapsed=True)
    for store, vs in todo:
        key = f"{store}/{vs}"
        reason = STORES[store].available()
        if reason is not None:
            out["results"][key] = {"store": store, "value_size": vs, "status": "skipped", "reason": reason}
            progress.update(progress.done + phases, force=True, detail=f"{store} skipped")
            continue
        work = tempfile.mkdtemp(prefix=f"norikv-bench-{store}-", dir=args.dir)
        try:
            spec = {
                "store": store,
                "value_size": vs,
                "n": args.n,
                "ops": ops,
                "sync_ops": args.sync_ops,
                "batch_size": args.batch_size,
                "batches": args.batches,
                "seed": args.seed,
                "dir": work,
            }
            r = run_one(spec, progress, phases, args.timeout)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        r.update({"store": store, "value_size": vs})
        out["results"][key] = r
    progress.close()
    return out
