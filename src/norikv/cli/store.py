"""Finding the store a command names, opening it for the writing commands,
and reading it without the lock for the read-only ones (norikv.inspect)."""

from __future__ import annotations

import argparse
import os

from norikv import FsyncPolicy, KvStore
from norikv.cli.output import CliError
from norikv.errors import CorruptionError, LockError
from norikv.inspect import StoreView, lock_holders, read_store
from norikv.progress import Progress
from norikv.wal import RecoveryMode


def locate(path: str, create: bool = False) -> tuple[str, str]:
    """(store dir, wal dir); CliError when the store is missing (unless create)."""
    wal = os.path.join(path, "wal")
    if not os.path.exists(path):
        if create:
            return path, wal
        raise CliError(f"{path}: no such directory")
    if not os.path.isdir(path):
        raise CliError(f"{path}: not a directory")
    if not os.path.isdir(wal):
        if create:
            return path, wal
        raise CliError(f"{path}: not a norikv store (no wal/ directory in it)")
    if not os.access(wal, os.R_OK | os.X_OK):
        raise CliError(f"{wal}: permission denied")
    return path, wal


def locked_message(root: str, waldir: str, pid: int | None = None) -> str:
    """``pid``: what the LockError says (the pid the holder wrote into LOCK),
    used where /proc/locks cannot tell (macOS)."""
    pids = lock_holders(waldir) or ([pid] if pid is not None else [])
    who = f" (pid {', '.join(map(str, pids))})" if pids else ""
    return (
        f"{root}: the store is locked by another process{who}; read-only commands "
        f"(info, get, scan, dump, verify, export) work meanwhile"
    )


def corrupt_message(root: str, exc: CorruptionError) -> str:
    return (
        f"{root}: corrupt store: {exc}; nothing was changed. See `norikv verify {root}`; "
        f"`norikv repair {root} --mode ...` recovers (keeping a copy of what it cuts)"
    )


def open_store(args: argparse.Namespace, create: bool = False) -> KvStore:
    """Opens the store for writing with ABSOLUTE_CONSISTENCY recovery, which
    cuts nothing: a damaged store, including one whose log ends in an atomic
    batch left unterminated by a crash, is refused and needs `norikv repair`
    (which keeps a copy of what it cuts)."""
    root, _ = locate(args.dir, create)
    try:
        return KvStore.open(
            root,
            recovery_mode=RecoveryMode.ABSOLUTE_CONSISTENCY,
            fsync_policy=FsyncPolicy.OS,
            auto_compact=False,
            max_value_size=args.max_value_size,
        )
    except LockError as exc:
        raise CliError(locked_message(root, os.path.join(root, "wal"), exc.pid)) from None
    except CorruptionError as exc:
        raise CliError(corrupt_message(root, exc)) from None


class ReadProgress:
    """The progress line of a lock-free read (norikv.inspect's ``progress``
    callback): bytes of segments scanned out of all of them."""

    def __init__(self, args: argparse.Namespace, label: str) -> None:
        self.line = Progress(args, label, 0)

    def __call__(self, done: int, total: int) -> None:
        if not done:  # a read (re)starting: nothing drawn until a segment is scanned
            self.line.total, self.line.done = total, 0
        else:
            self.line.update(done)

    def close(self) -> None:
        self.line.close()


def read_view(args: argparse.Namespace) -> tuple[str, str, StoreView]:
    """(store dir, wal dir, what the default open would rebuild), read
    without the lock (norikv.inspect.read_store)."""
    root, waldir = locate(args.dir)
    progress = ReadProgress(args, "reading")
    try:
        view = read_store(waldir, max_value_size=args.max_value_size, progress=progress)
    except CorruptionError as exc:
        raise CliError(corrupt_message(root, exc)) from None
    finally:
        progress.close()
    return root, waldir, view
