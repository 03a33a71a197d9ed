"""The recipe's example (nori-wal "Building a Key-Value Store"), in Python.

Run: python examples/kv_store.py [path]   (default ./my_kv_store)
"""

import sys

from norikv import FsyncPolicy, KvStore


def main(path: str = "./my_kv_store") -> None:
    # Open store (creates if it doesn't exist); recovery replays the WAL.
    store = KvStore.open(path, fsync_policy=FsyncPolicy.batch(0.005))
    info = store.recovery_info
    print("Recovery complete:")
    print(f"  Valid records: {info.valid_records}")
    print(f"  Segments scanned: {info.segments_scanned}")
    if info.corruption_detected:
        print(f"  WARNING: {info.bytes_truncated} bytes truncated due to corruption")
    print(f"Rebuilt {len(store)} keys from WAL")

    # Write some data
    store.put(b"user:1", b"Alice")
    store.put(b"user:2", b"Bob")
    store.put(b"user:3", b"Charlie")

    # Read data
    value = store.get(b"user:1")
    if value is not None:
        print(f"user:1 = {value.decode()!r}")

    # Delete a key
    store.delete(b"user:2")

    # Sync to ensure durability
    store.sync()

    print(f"Store has {len(store)} keys")

    # Close gracefully
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:2])
