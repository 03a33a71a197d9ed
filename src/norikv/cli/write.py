"""The writing commands: put, delete, compact, import, repair. They take the
store's lock; all but repair open it with a recovery that may cut nothing, so
a damaged store is refused and repaired only on request, by repair, which
keeps a copy of what it cuts (docs/cli.md, "Writing commands", "repair")."""

from __future__ import annotations

import argparse
import base64
import binascii
import fcntl
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any

from norikv import FsyncPolicy, KvStore
from norikv.cli.args import decode_arg
from norikv.cli.output import EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, CliError, note, out, text
from norikv.cli.store import locate, locked_message, open_store
from norikv.errors import CorruptionError, LockError
from norikv.inspect import RecoveryMode, now_ms, plan_recovery, segment_name
from norikv.progress import Progress, Spinner

_CHUNK = 1 << 20
_IMPORT_BATCH_KEYS = 1000
_IMPORT_BATCH_BYTES = 4 << 20


def put(args: argparse.Namespace) -> int:
    key = decode_arg(args.key, args.encoding, "key")
    value = _put_value(args)
    if args.ttl is not None and not args.ttl > 0:
        raise CliError("--ttl must be > 0 seconds", EXIT_USAGE)
    store = open_store(args, create=args.create)
    try:
        store.put(key, value, ttl=args.ttl)
    finally:
        store.close()
    return EXIT_OK


def _put_value(args: argparse.Namespace) -> bytes:
    """VALUE (decoded as --hex/--base64 say), or the raw bytes of stdin (``-``)
    or of --value-file, read up to --max-value-size (exit 2 beyond)."""
    if (args.value is None) == (args.value_file is None):
        raise CliError("give a VALUE (- for stdin) or --value-file FILE, not both and not neither", EXIT_USAGE)
    if args.value_file is None and args.value != "-":
        return decode_arg(args.value, args.encoding, "value")
    limit = args.max_value_size
    if args.value_file is None:
        value = sys.stdin.buffer.read(limit + 1)
        where = "stdin"
    else:
        where = args.value_file
        try:
            with open(args.value_file, "rb") as f:
                value = f.read(limit + 1)
        except OSError as exc:
            raise CliError(f"--value-file {where}: {exc.strerror or exc}", EXIT_USAGE) from None
    if len(value) > limit:
        raise CliError(f"the value from {where} is larger than --max-value-size ({limit} bytes)", EXIT_USAGE)
    return value


def delete(args: argparse.Namespace) -> int:
    key = decode_arg(args.key, args.encoding, "key")
    store = open_store(args)
    try:
        found = store.delete(key)
    finally:
        store.close()
    if not found:
        raise CliError(f"key not found: {text(key)}", EXIT_NOT_FOUND)
    return EXIT_OK


def compact(args: argparse.Namespace) -> int:
    store = open_store(args)
    try:
        with Spinner(args, "compacting"):
            res = store.compact()
        keys = len(store)
    finally:
        store.close()
    if args.json:
        out(json.dumps(dict(res, keys=keys), indent=2) + "\n")
    else:
        note(
            args,
            f"compacted {args.dir}: {keys} keys; WAL {res['bytes_before']:,} -> "
            f"{res['bytes_after']:,} bytes; {res['segments_written']} segment(s) written, "
            f"{res['segments_deleted']} deleted in {res['seconds']:.2f} s",
        )
    return EXIT_OK


def _read_import(args: argparse.Namespace) -> list[tuple[bytes, bytes, int | None]]:
    """Parses and validates the whole input before anything is written."""
    src: Any
    if args.file and args.file != "-":
        try:
            src = open(args.file, "rb")
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror}", EXIT_USAGE) from None
    else:
        src = sys.stdin.buffer
    items = []
    try:
        for lineno, raw in enumerate(src, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise CliError(f"line {lineno}: invalid JSON: {exc}", EXIT_USAGE) from None
            if not isinstance(obj, dict):
                raise CliError(f"line {lineno}: expected a JSON object", EXIT_USAGE)
            kv = []
            for name in ("key", "value"):
                b64 = obj.get(name)
                if not isinstance(b64, str):
                    raise CliError(f"line {lineno}: {name!r} must be a base64 string", EXIT_USAGE)
                try:
                    kv.append(base64.b64decode(b64.encode("ascii"), validate=True))
                except (binascii.Error, UnicodeEncodeError, ValueError):
                    raise CliError(f"line {lineno}: invalid base64 in {name!r}", EXIT_USAGE) from None
            exp = obj.get("expires_at_ms")
            if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int) or exp < 0):
                raise CliError(f"line {lineno}: 'expires_at_ms' must be a non-negative integer", EXIT_USAGE)
            items.append((kv[0], kv[1], exp))
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    return items


def import_(args: argparse.Namespace) -> int:
    items = _read_import(args)
    store = open_store(args, create=args.create)
    imported = expired = 0
    prog = Progress(args, "importing", len(items), unit="keys")
    try:
        i = 0
        while i < len(items):
            nbytes = 0
            with store.batch() as b:
                while i < len(items) and len(b) < _IMPORT_BATCH_KEYS and nbytes < _IMPORT_BATCH_BYTES:
                    k, v, exp = items[i]
                    i += 1
                    if exp is None:
                        b.put(k, v)
                    elif exp <= now_ms():
                        expired += 1
                        continue
                    else:
                        b.put(k, v, expires_at_ms=exp)
                    nbytes += len(k) + len(v)
                    imported += 1
            prog.update(i)
        keys = len(store)
    finally:
        prog.close()
        store.close()
    skipped = f" ({expired} already expired, skipped)" if expired else ""
    note(args, f"imported {imported} keys into {args.dir}{skipped}; the store holds {keys} keys")
    return EXIT_OK


def _copy_trimmed(src: str, dst: str) -> tuple[int, int]:
    """Copies src to dst leaving out the trailing zero bytes (preallocation);
    all-zero chunks are skipped as holes. Returns (bytes kept, original size)."""
    end = 0
    size = 0
    with open(src, "rb") as f, open(dst, "wb") as g:
        off = 0
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            stripped = len(chunk.rstrip(b"\0"))
            if stripped:
                g.seek(off)
                g.write(chunk[:stripped])
                end = off + stripped
            off += len(chunk)
        size = off
        g.truncate(end)
        g.flush()
        os.fsync(g.fileno())
    return end, size


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _back_up(args: argparse.Namespace, root: str, waldir: str, mode: RecoveryMode) -> tuple[str, list[dict[str, Any]]]:
    """Under the store's lock: copies the segments the open in ``mode`` will
    change (the same plan, made now) to a new backup directory with a
    MANIFEST.json, all fsynced. Returns (backup dir, files) or ("", []) when
    that open changes nothing."""
    try:
        touched = [p.id for p in plan_recovery(waldir, mode, max_value_size=args.max_value_size).changed]
    except CorruptionError as exc:
        raise CliError(
            f"{root}: --mode {mode.value} refuses to change this store: {exc}; "
            f"nothing was changed (point_in_time or skip_any_corrupted_records "
            f"can recover it)"
        ) from None
    if not touched:
        return "", []
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    backup = os.path.join(waldir, f"repair-backup-{stamp}")
    n = 0
    while os.path.exists(backup):
        n += 1
        backup = os.path.join(waldir, f"repair-backup-{stamp}-{n}")
    os.mkdir(backup)
    saved: list[dict[str, Any]] = []
    for seg in touched:
        name = segment_name(seg)
        kept, size = _copy_trimmed(os.path.join(waldir, name), os.path.join(backup, name))
        saved.append(dict(file=name, original_size=size, bytes_copied=kept))
    manifest = dict(
        store=os.path.abspath(root),
        mode=mode.value,
        created=stamp,
        files=saved,
        note="copies of the segment files as they were before repair; trailing "
        "zero bytes (preallocation) were not copied",
    )
    with open(os.path.join(backup, "MANIFEST.json"), "w") as m:
        json.dump(manifest, m, indent=2)
        m.write("\n")
        m.flush()
        os.fsync(m.fileno())
    _fsync_dir(backup)
    _fsync_dir(waldir)
    return backup, saved


def repair(args: argparse.Namespace) -> int:
    mode = RecoveryMode(args.mode)
    root, waldir = locate(args.dir)
    fd = os.open(os.path.join(waldir, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CliError(locked_message(root, waldir)) from None
        backup, saved = _back_up(args, root, waldir, mode)
    finally:
        os.close(fd)  # releases the flock; the open below takes the store's own lock
    if not saved:
        note(args, f"{root}: no damage found; nothing to repair, nothing was changed")
        return EXIT_OK
    copied = sum(s["bytes_copied"] for s in saved)
    note(args, f"backed up {len(saved)} segment file(s) ({copied:,} bytes) to {backup}{os.sep}")
    try:
        store = KvStore.open(
            root,
            recovery_mode=mode,
            fsync_policy=FsyncPolicy.OS,
            auto_compact=False,
            max_value_size=args.max_value_size,
        )
    except LockError as exc:
        raise CliError(locked_message(root, waldir, exc.pid) + f"; the backup in {backup} is kept") from None
    except CorruptionError as exc:
        raise CliError(f"{root}: recovery in mode {mode.value} failed: {exc}; nothing was changed") from None
    try:
        info = store.recovery_info
        keys = len(store)
    finally:
        store.close()
    note(
        args,
        f"repaired {root} with {mode.value}: {info.valid_records} records kept, "
        f"{info.bytes_truncated} bytes cut, {info.segments_removed} segment(s) removed, "
        f"{info.spans_skipped} damaged span(s) skipped; the store holds {keys} keys",
    )
    return EXIT_OK
