"""The workload: the operations measured, the keys and the values."""

from __future__ import annotations

import random

KEY_SIZE = 16
CHUNK = 10_000  # values are generated per chunk, outside the timed loop

# Operation name -> human description (the order is the table's column order).
OPS: dict[str, str] = {
    "put": "individual puts of new keys (N)",
    "get": "random gets of present keys (N)",
    "get_missing": "gets of absent keys (N)",
    "delete": "deletes of present keys, random order (N)",
    "batch_sync": "durable batches: --batch-size puts, then one durable commit",
    "put_sync": "put + fsync per operation (--sync-ops)",
    "threads8_sync": "8 threads doing put + fsync per operation (--sync-ops in total)",
    "reopen": "close, then open with N keys and read one",
}
THROUGHPUT_OPS = ["put", "get", "get_missing", "delete", "batch_sync", "put_sync", "threads8_sync"]
# The operations run with each store at its "synced" configuration.
DURABLE_OPS = ["batch_sync", "put_sync", "threads8_sync"]
THREADS = 8  # threads of threads8_sync


def make_keys(seed: int, n: int, tag: int) -> list[bytes]:
    """n distinct 16-byte keys; `tag` keeps the present and absent sets apart."""
    rng = random.Random(seed * 1000 + tag)
    blob = rng.randbytes(n * (KEY_SIZE - 1))
    t = bytes([tag])
    return [t + blob[i : i + KEY_SIZE - 1] for i in range(0, n * (KEY_SIZE - 1), KEY_SIZE - 1)]


class Values:
    """Deterministic, incompressible values generated chunk by chunk (so the
    harness does not hold N values and generation is never timed)."""

    def __init__(self, seed: int, size: int) -> None:
        self.rng = random.Random(seed * 1000 + 7)
        self.size = size

    def take(self, n: int) -> list[bytes]:
        s = self.size
        blob = self.rng.randbytes(n * s)
        return [blob[i : i + s] for i in range(0, n * s, s)]
