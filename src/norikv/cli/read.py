"""The read-only commands: info, get, scan, dump, verify, export, backup. They read
the segment files through norikv.inspect, never take the store's lock and
never change a byte (docs/cli.md, "Read-only commands and the lock")."""

from __future__ import annotations

import argparse
import base64
import errno
import itertools
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from norikv.backup import backup_directory
from norikv.cli.args import decode_arg, parse_from
from norikv.cli.output import (
    EXIT_DAMAGE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    encode_value,
    json_field,
    note,
    out,
    text,
)
from norikv.cli.store import locate, read_view
from norikv.inspect import (
    Damage,
    LogRecord,
    compaction_leftovers,
    dead_ratio,
    lock_holders,
    records,
    segment_files,
    segment_name,
)
from norikv.progress import Progress
from norikv.progress import format_size as _size


def info(args: argparse.Namespace) -> int:
    root, waldir, view = read_view(args)
    keys = len(view)
    wal_bytes = view.wal_bytes
    dead = dead_ratio(view.live_bytes, keys, wal_bytes)
    segs = [os.path.basename(p.path) for p in view.segments]
    cut = view.tail_cut
    tail = None if cut is None else dict(
        segment=cut.segment, file=os.path.basename(cut.path), offset=cut.offset, reason=cut.reason, bytes=cut.bytes
    )  # fmt: skip
    holders = lock_holders(waldir)
    leftovers = compaction_leftovers(waldir)
    ttl_keys = len(view.deadlines)
    data: dict[str, Any] = {
        "path": os.path.abspath(root),
        "keys": keys,
        "live_bytes": view.live_bytes,
        "wal_bytes": wal_bytes,
        "wal_file_bytes": view.wal_file_bytes,
        "segments": len(segs),
        "segment_files": segs,
        "dead_ratio": round(dead, 4),
        "ttl_keys": ttl_keys,
        "recovery_records": view.records,
        "recovery_batch_records_dropped": view.plan.batch_records_dropped,
        "recovery_seconds": round(view.seconds, 6),
        "recovery_corruption_detected": tail is not None,
        "tail_damage": tail,
        "locked_by": holders,
        "compaction_leftovers": leftovers,
    }
    if args.json:
        out(json.dumps(data, indent=2) + "\n")
        return EXIT_OK
    seg_range = f" ({segs[0]} .. {segs[-1]})" if len(segs) > 1 else (f" ({segs[0]})" if segs else "")
    if holders is None:
        lock = "unknown on this platform"
    elif holders:
        lock = f"held by pid {', '.join(map(str, holders))} (figures are what is on disk now)"
    else:
        lock = "free"
    if cut is not None:
        rec_state = (
            f"the next open cuts {cut.bytes} bytes at {cut.segment}:{cut.offset} ({cut.reason}); see `norikv verify`"
        )
    else:
        rec_state = "clean"
    dropped = view.plan.batch_records_dropped
    lines = [
        f"store          {data['path']}",
        f"keys           {keys:,}",
        f"live bytes     {view.live_bytes:,} ({_size(view.live_bytes)})",
        f"wal bytes      {wal_bytes:,} ({_size(wal_bytes)}) in {len(segs)} segment(s){seg_range}",
        f"dead ratio     {dead:.2f}",
        f"ttl keys       {ttl_keys:,}",
        f"lock           {lock}",
        f"recovery       {view.records:,} records replayed in {view.seconds:.3f} s; {rec_state}"
        + (f"; {dropped:,} records of broken atomic batches not applied" if dropped else ""),
    ]
    if leftovers:
        lines.append(f"leftovers      {', '.join(leftovers)} (removed by the next open)")
    out("\n".join(lines) + "\n")
    return EXIT_OK


def get(args: argparse.Namespace) -> int:
    key = decode_arg(args.key, args.encoding, "key")
    _, _, view = read_view(args)
    value = view.get(key)
    if value is None:
        raise CliError(f"key not found: {text(key)}", EXIT_NOT_FOUND)
    out(encode_value(value, args.encoding) + (b"" if args.no_newline else b"\n"))
    return EXIT_OK


def scan(args: argparse.Namespace) -> int:
    enc = args.encoding
    lo = decode_arg(args.start, enc, "--start") if args.start is not None else None
    hi = decode_arg(args.end, enc, "--end") if args.end is not None else None
    prefix = decode_arg(args.prefix, enc, "--prefix") if args.prefix is not None else None
    if args.limit is not None and args.limit < 0:
        raise CliError("--limit must be >= 0", EXIT_USAGE)
    _, _, view = read_view(args)
    pairs: Iterator[tuple[bytes, bytes]]
    if prefix is None:
        pairs = view.range(lo, hi, reverse=args.reverse)
    else:
        pairs = (
            (k, v)
            for k, v in view.prefix(prefix, reverse=args.reverse)
            if (lo is None or k >= lo) and (hi is None or k < hi)
        )
    if args.limit is not None:
        pairs = itertools.islice(pairs, args.limit)
    write = sys.stdout.buffer.write
    fmt = args.format
    for k, v in pairs:
        if fmt == "tsv":
            write((text(k) + "\t" + text(v) + "\n").encode("utf-8"))
        elif fmt == "hex":
            write(k.hex().encode() + b"\t" + v.hex().encode() + b"\n")
        else:
            obj: dict[str, Any] = {}
            json_field(obj, "key", k)
            json_field(obj, "value", v)
            write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
    return EXIT_OK


def _flag_names(rec: LogRecord) -> str:
    names = [f"0x{rec.flags:02x}"]
    if rec.compression:
        names.append(rec.compression.name.lower())
    if rec.ttl_ms is not None:
        names.append(f"ttl_ms={rec.ttl_ms}" + ("(abs)" if rec.ttl_abs else ""))
    if rec.version is not None:
        names.append(f"version={rec.version[0]}/{rec.version[1]}")
    if rec.batch_cont:
        names.append("batch")
    if rec.batch_end:
        names.append("batch-end")
    return " ".join(names)


def dump(args: argparse.Namespace) -> int:
    _, waldir = locate(args.dir)
    start = None
    if args.start is not None:
        start = parse_from(args.start)
        seg, off = start
        files = dict(segment_files(waldir))
        if seg not in files:
            raise CliError(f"bad --from {args.start}: there is no segment {segment_name(seg)}", EXIT_USAGE)
        size = os.path.getsize(files[seg])
        if off > size:
            raise CliError(
                f"bad --from {args.start}: offset past the end of {segment_name(seg)} ({size} bytes)", EXIT_USAGE
            )
    damaged: list[Damage] = []
    write = sys.stdout.buffer.write
    first = True
    items = records(waldir, start)
    try:
        for rec in items:
            if isinstance(rec, Damage):
                if first and start is not None and rec.segment == start[0]:
                    raise CliError(
                        f"bad --from {args.start}: no record starts at {rec.segment}:{rec.offset} ({rec.reason})",
                        EXIT_USAGE,
                    )
                damaged.append(rec)
                continue
            first = False
            kind = "delete" if rec.tombstone else "put"
            if args.format == "json":
                obj: dict[str, Any] = {"segment": rec.segment, "offset": rec.offset, "kind": kind}
                json_field(obj, "key", rec.key)
                obj.update(value_size=rec.value_size, record_size=rec.size, flags=rec.flags)
                if rec.ttl_ms is not None:
                    obj["ttl_ms"] = rec.ttl_ms
                if rec.version is not None:
                    obj["term"], obj["index"] = rec.version
                write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
            else:
                key = rec.key.hex() if args.format == "hex" else text(rec.key)
                write(f"{rec.segment}:{rec.offset}\t{kind}\t{key}\t{rec.value_size}\t{_flag_names(rec)}\n".encode())
    except OSError as exc:
        if exc.errno != errno.ENOENT or not exc.filename:
            raise
        raise CliError(
            f"{exc.filename} disappeared while being read (compacted by the process holding the store?); run dump again"
        ) from None
    for d in damaged:
        sys.stderr.write(f"norikv dump: damage in {d.path} at offset {d.offset}: {d.reason}\n")
    return EXIT_DAMAGE if damaged else EXIT_OK


def export(args: argparse.Namespace) -> int:
    _, _, view = read_view(args)
    pairs = view.range()
    prog = Progress(args, "exporting", len(view), unit="keys")
    dump_file = None
    n = 0
    try:
        if args.file and args.file != "-":
            dump_file = open(args.file + ".tmp", "wb")
            write = dump_file.write
        else:
            write = sys.stdout.buffer.write
        b64 = base64.b64encode
        deadlines = view.deadlines
        for n, (k, v) in enumerate(pairs, 1):
            line = '{"key": "' + b64(k).decode("ascii") + '", "value": "' + b64(v).decode("ascii") + '"'
            d = deadlines.get(k)
            if d is not None:
                line += f', "expires_at_ms": {d}'
            write(line.encode("ascii") + b"}\n")
            if not n & 1023:
                prog.update(n)
        prog.update(n, force=True)
        if dump_file is not None:
            dump_file.flush()
            os.fsync(dump_file.fileno())
            dump_file.close()
            dump_file = None
            os.replace(args.file + ".tmp", args.file)
            note(args, f"exported {n} keys to {args.file}")
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise CliError(f"{exc.filename or args.file}: {exc.strerror}") from None
    finally:
        prog.close()
        if dump_file is not None:
            dump_file.close()
            try:
                os.unlink(args.file + ".tmp")
            except OSError:
                pass
    return EXIT_OK


def backup(args: argparse.Namespace) -> int:
    """norikv.backup.backup_directory: lock-free, so it works on a store a
    service has open; DEST ``-`` is a tar stream on stdout."""
    root, _ = locate(args.dir)
    to_stdout = args.dest == "-"
    dest = sys.stdout.buffer if to_stdout else args.dest
    try:
        res = backup_directory(root, dest, incremental=not args.full)
    except (FileExistsError, ValueError) as exc:
        raise CliError(f"{args.dest}: {exc.strerror if isinstance(exc, OSError) else exc}", EXIT_USAGE) from None
    if to_stdout:
        sys.stdout.buffer.flush()
    elif args.json:
        out(json.dumps(res, indent=2) + "\n")
    else:
        note(
            args,
            f"backed up {root} to {args.dest}: {res['segments']} segment(s), {res['bytes']:,} bytes "
            f"({res['copied_bytes']:,} copied, {res['reused_segments']} segment(s) reused) "
            f"in {res['seconds']:.2f} s",
        )
    return EXIT_OK
