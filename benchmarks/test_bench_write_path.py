"""The write path under the default policy (issue 15): KvStore.put under
FsyncPolicy.batch(0.005), the default, against the same loop under
FsyncPolicy.OS, each round of one right before a round of the other.
Random 16-byte keys, 100 B and 1 KiB values, both value modes, one thread.

Target: batch >= 0.9x OS. The batch policy's background thread fdatasyncs
every 5 ms while the loop runs; what that costs the writer is the subject
(docs/performance.md, "The write path under the batch policy")."""

from __future__ import annotations

import random

import pytest

from benchlib import ROUNDS, N, Scratch, interleaved, open_store, remember, target
from norikv import FsyncPolicy

_SIZES = {100: N, 1024: max(1, N // 4)}  # about 130 MB and 260 MB of log per round


def _loop(put, pairs):
    for k, v in pairs:
        put(k, v)


@pytest.fixture(scope="module")
def random_pairs_by_size(keys):
    out = {}
    for size, n in _SIZES.items():
        blob = random.Random(size).randbytes(size + 4096)
        out[size] = [(k, blob[i % 4096 : i % 4096 + size]) for i, k in enumerate(keys[:n])]
    return out


@pytest.mark.benchmark(group="write-path-batch-vs-os")
@pytest.mark.parametrize("values", ["memory", "disk"])
@pytest.mark.parametrize("size", sorted(_SIZES))
def test_put_batch_policy_vs_os(benchmark, bench_root, closer, random_pairs_by_size, size, values):
    pairs = random_pairs_by_size[size]
    batch_dirs = Scratch(bench_root, f"batch-{size}-{values}")
    os_dirs = Scratch(bench_root, f"os-{size}-{values}")

    def subject_setup():
        closer.replace()
        store = closer.replace(open_store(batch_dirs.new(), FsyncPolicy.batch(0.005), values=values))
        return (store.put, pairs)

    def ref_setup():
        closer.replace()
        os_dirs.clean()
        store = closer.replace(open_store(os_dirs.new(), FsyncPolicy.OS, values=values))
        return (store.put, pairs)

    try:
        ref = interleaved(benchmark, _loop, subject_setup, _loop, ref_setup, rounds=max(ROUNDS, 5))
    finally:
        closer.replace()
        batch_dirs.clean()
        os_dirs.clean()
    sec = remember(f"norikv_put_batch_{size}_{values}", benchmark, len(pairs), "puts")
    target(
        f"put, batch(5 ms) vs OS policy, {size} B values, {values} mode",
        f"{len(pairs) / sec / 1e6:.2f} M puts/s vs OS {len(pairs) / ref / 1e6:.2f} M",
        ref / sec,
        0.9,
        reference="KvStore.put under FsyncPolicy.OS, same keys",
        benchmark=benchmark,
    )
