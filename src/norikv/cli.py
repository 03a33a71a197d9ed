"""The ``norikv`` command: inspect, verify and operate a store from the shell.

Every subcommand but ``bench`` takes the store directory (the one holding
``wal/``) as its first argument. See docs/cli.md for the full reference.

* Read-only commands (info, get, scan, dump, verify, export) never modify the
  store and never take its lock: they read the segment files directly, so they
  work while another process has the store open, and a torn tail left by a
  crash is reported, never truncated.
* Writing commands (put, delete, compact, import) open the store like the
  library does, but refuse to let recovery cut anything: a damaged store must
  be fixed explicitly with ``repair``, which keeps a copy of what it cuts.

Exit codes: 0 success; 1 key not found (get, delete) or damage found (verify,
dump); 2 bad usage or input (arguments, hex/base64, --from, import lines);
3 the store cannot be used (missing, locked, corrupt, I/O error).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import errno as _errno
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

from norikv import _engine as _wal
from norikv._version import __version__
from norikv.compression import DEFAULT_MAX_VALUE_SIZE
from norikv.errors import CorruptionError, LockError, NoriError
from norikv.progress import Progress, Spinner
from norikv.progress import format_size as _size
from norikv.wal import RecoveryMode, RecoveryPlan, SegmentPlan, compaction_leftovers, plan_recovery

__all__ = ["main"]

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_DAMAGE = 1
EXIT_USAGE = 2
EXIT_STORE = 3

_CHUNK = 1 << 20
_RETRIES = 5            # lock-free reads restart when a live compaction deletes a segment
_IMPORT_BATCH_KEYS = 1000
_IMPORT_BATCH_BYTES = 4 << 20

_FLAG_TOMBSTONE = _wal.FLAG_TOMBSTONE
_FLAG_TTL = _wal.FLAG_TTL
_COMP_MASK = _wal.COMPRESSION_MASK
_FLAG_VERSION = _wal.FLAG_VERSION
_FLAG_BATCH_CONT = _wal.FLAG_BATCH_CONT
_FLAG_TTL_ABS = _wal.FLAG_TTL_ABS
_FLAG_BATCH_END = _wal.FLAG_BATCH_END


class CliError(Exception):
    """A failure reported as one line on stderr with exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_STORE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ====================================================================== output helpers


def _out(data: bytes | str) -> None:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    sys.stdout.buffer.write(data)


def _note(args: argparse.Namespace, text: str) -> None:
    """An informational line on stdout, suppressed by --quiet."""
    if not getattr(args, "quiet", False):
        _out(text + "\n")


def _text(b: bytes) -> str:
    """Bytes as one line of text: UTF-8 where it decodes; backslash, tab, CR,
    LF, other control characters and undecodable bytes escaped (\\\\, \\t, \\r,
    \\n, \\xNN)."""
    s = b.decode("utf-8", "surrogateescape")
    if s.isprintable() and "\\" not in s:
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    return "".join(out)


def _json_field(obj: dict[str, Any], name: str, b: bytes) -> None:
    """name: text when the bytes are UTF-8, else name_base64: base64."""
    try:
        obj[name] = b.decode("utf-8")
    except UnicodeDecodeError:
        obj[name + "_base64"] = base64.b64encode(b).decode("ascii")


# ====================================================================== arguments


def _decode_arg(text: str, enc: str, what: str) -> bytes:
    """A key/value/bound given on the command line, as bytes."""
    if enc == "hex":
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise CliError(f"invalid hex for {what}: {text!r}", EXIT_USAGE) from None
    if enc == "base64":
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise CliError(f"invalid base64 for {what}: {text!r}", EXIT_USAGE) from None
    return os.fsencode(text)


def _encode_out(b: bytes, enc: str) -> bytes:
    if enc == "hex":
        return b.hex().encode("ascii")
    if enc == "base64":
        return base64.b64encode(b)
    return b


_FROM_RE = re.compile(r"(\d+)(?:\.wal)?:(\d+)")


def _parse_from(text: str) -> tuple[int, int]:
    m = _FROM_RE.fullmatch(text.strip())
    if not m:
        raise CliError(f"bad --from {text!r}: expected SEGMENT:OFFSET, e.g. 3:4096", EXIT_USAGE)
    return int(m.group(1)), int(m.group(2))


# ====================================================================== locating the store


def _locate(path: str, create: bool = False) -> tuple[str, str]:
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


def _lock_holders(waldir: str) -> list[int] | None:
    """Pids holding the store's lock, read from /proc/locks (Linux) without
    touching the lock; None when that cannot be known on this platform."""
    try:
        st = os.stat(os.path.join(waldir, "LOCK"))
    except OSError:
        return []
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in text.splitlines():
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        if parts[5] == want:
            try:
                pids.append(int(parts[4]))
            except ValueError:
                pass
    return pids


def _locked_message(root: str, waldir: str) -> str:
    pids = _lock_holders(waldir)
    who = f" (pid {', '.join(map(str, pids))})" if pids else ""
    return (f"{root}: the store is locked by another process{who}; read-only commands "
            f"(info, get, scan, dump, verify, export) work meanwhile")


def _corrupt_message(root: str, exc: CorruptionError) -> str:
    return (f"{root}: corrupt store: {exc}; nothing was changed. See `norikv verify {root}`; "
            f"`norikv repair {root} --mode ...` recovers (keeping a copy of what it cuts)")


def _open_store(args: argparse.Namespace, create: bool = False):  # -> KvStore
    """Opens the store for writing with ABSOLUTE_CONSISTENCY recovery, which
    cuts nothing: a damaged store, including one whose log ends in an atomic
    batch left unterminated by a crash, is refused and needs `norikv repair`
    (which keeps a copy of what it cuts)."""
    from norikv import FsyncPolicy, KvStore

    root, _ = _locate(args.dir, create)
    try:
        return KvStore.open(root, recovery_mode=RecoveryMode.ABSOLUTE_CONSISTENCY,
                            fsync_policy=FsyncPolicy.OS, auto_compact=False,
                            max_value_size=args.max_value_size)
    except LockError:
        raise CliError(_locked_message(root, os.path.join(root, "wal"))) from None
    except CorruptionError as exc:
        raise CliError(_corrupt_message(root, exc)) from None


# ====================================================================== lock-free read-only view


class View:
    """What an open would rebuild, read straight from the segment files
    without the lock and without changing anything."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.expiry: dict[bytes, int] = {}
        self.segments: list[dict[str, Any]] = []
        self.records = 0
        self.live_bytes = 0
        self.seconds = 0.0
        self.tail: dict[str, Any] | None = None   # what the next open would cut
        self.relative_ttls = 0
        self.batch_dropped = 0                     # records of broken batches, not applied

    @property
    def wal_bytes(self) -> int:
        return sum(s["size"] for s in self.segments)

    def live(self, key: bytes) -> bytes | None:
        v = self.data.get(key)
        if v is None:
            return None
        d = self.expiry.get(key)
        if d is not None and d <= _wal.now_ms():
            return None
        return v

    def sorted_keys(self) -> list[bytes]:
        now = _wal.now_ms()
        exp = self.expiry
        return sorted(k for k in self.data if exp.get(k, now + 1) > now)


def _segment_files(waldir: str) -> list[tuple[int, str]]:
    return [(seg, os.path.join(waldir, _wal.segment_name(seg))) for seg in _wal.list_segments(waldir)]


def _is_enoent(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == _errno.ENOENT


def _plan(args: argparse.Namespace, waldir: str, mode: RecoveryMode, make_sink: Callable[[], Any],
          label: str) -> tuple[RecoveryPlan, Any]:
    """plan_recovery (what an open in ``mode`` would do, the library's code)
    with a fresh sink, lock-free: started again when a compaction by the
    process holding the store deletes a segment meanwhile, or when that
    process may have been copying a record into its active segment as it
    was read (a transient torn tail). Returns (plan, sink)."""
    for attempt in range(_RETRIES):
        files = _segment_files(waldir)
        total = 0
        for _, path in files:
            try:
                total += os.path.getsize(path)
            except OSError:
                pass
        prog = Progress(args, label, total)
        sink = make_sink()
        try:
            plan = plan_recovery(waldir, mode, sink, progress=lambda p: prog.advance(p.file_size))
        except OSError as exc:
            if _is_enoent(exc) and attempt + 1 < _RETRIES and os.path.isdir(waldir):
                continue
            raise
        finally:
            prog.close()
        if plan.changed and attempt + 1 < _RETRIES and _lock_holders(waldir):
            time.sleep(0.02)
            continue
        return plan, sink
    raise AssertionError("unreachable")  # pragma: no cover


def _cut_reason(p: SegmentPlan) -> str:
    """Why recovery cuts segment p (its damage and/or an unterminated batch)."""
    if p.unterminated_batch is not None:
        return "atomic batch never terminated" + (f", then {p.damage[1]}" if p.damage else "")
    return p.damage[1] if p.damage else "damaged"


def _load_view(args: argparse.Namespace, waldir: str) -> View:
    """What the default open rebuilds: the same plan and the same replay
    (norikv.wal.plan_recovery with KvStore's loader). CorruptionError when
    that open would refuse the store."""
    view = View()
    t0 = time.perf_counter()

    def loader() -> Any:
        view.data, view.expiry = {}, {}
        return _wal._StoreLoader(view.data, view.expiry, _wal.now_ms(), args.max_value_size)

    plan, sink = _plan(args, waldir, RecoveryMode.TOLERATE_CORRUPTED_TAIL, loader, "reading")
    for p in plan.kept:
        view.segments.append(dict(id=p.id, file=os.path.basename(p.path), size=p.size,
                                  file_size=p.file_size, records=p.records))
        if p.changed:
            view.tail = dict(segment=p.id, file=os.path.basename(p.path), offset=p.size,
                             reason=_cut_reason(p), bytes=p.bytes_cut)
    view.records = plan.valid_records
    view.batch_dropped = plan.batch_records_dropped
    view.live_bytes = sink.live_bytes
    view.relative_ttls = sink.relative_ttls
    view.seconds = time.perf_counter() - t0
    return view


def _read_view(args: argparse.Namespace) -> tuple[str, str, View]:
    root, waldir = _locate(args.dir)
    try:
        view = _load_view(args, waldir)
    except CorruptionError as exc:
        raise CliError(_corrupt_message(root, exc)) from None
    return root, waldir, view


# ====================================================================== dump


def _flag_names(rec: dict[str, Any]) -> str:
    flags = rec["flags"]
    names = [f"0x{flags:02x}"]
    comp = (flags & _COMP_MASK) >> 2
    if comp == 1:
        names.append("lz4")
    elif comp == 2:
        names.append("zstd")
    if flags & _FLAG_TTL:
        names.append(f"ttl_ms={rec['ttl_ms']}" + ("(abs)" if flags & _FLAG_TTL_ABS else ""))
    if flags & _FLAG_VERSION:
        names.append(f"version={rec['term']}/{rec['index']}")
    if flags & _FLAG_BATCH_CONT:
        names.append("batch")
    if flags & _FLAG_BATCH_END:
        names.append("batch-end")
    return " ".join(names)


# ====================================================================== commands: read-only


def cmd_info(args: argparse.Namespace) -> int:
    root, waldir, view = _read_view(args)
    keys = len(view.sorted_keys()) if view.expiry else len(view.data)
    wal_bytes = view.wal_bytes
    live = view.live_bytes + 8 * keys
    dead = max(0.0, 1.0 - live / wal_bytes) if wal_bytes else 0.0
    holders = _lock_holders(waldir)
    leftovers = compaction_leftovers(waldir)
    info: dict[str, Any] = {
        "path": os.path.abspath(root),
        "keys": keys,
        "live_bytes": view.live_bytes,
        "wal_bytes": wal_bytes,
        "wal_file_bytes": sum(s["file_size"] for s in view.segments),
        "segments": len(view.segments),
        "segment_files": [s["file"] for s in view.segments],
        "dead_ratio": round(dead, 4),
        "ttl_keys": len(view.expiry),
        "recovery_records": view.records,
        "recovery_batch_records_dropped": view.batch_dropped,
        "recovery_seconds": round(view.seconds, 6),
        "recovery_corruption_detected": view.tail is not None,
        "tail_damage": view.tail,
        "locked_by": holders,
        "compaction_leftovers": leftovers,
    }
    if args.json:
        _out(json.dumps(info, indent=2) + "\n")
        return EXIT_OK
    segs = view.segments
    seg_range = f" ({segs[0]['file']} .. {segs[-1]['file']})" if len(segs) > 1 else (
        f" ({segs[0]['file']})" if segs else "")
    if holders is None:
        lock = "unknown on this platform"
    elif holders:
        lock = f"held by pid {', '.join(map(str, holders))} (figures are what is on disk now)"
    else:
        lock = "free"
    if view.tail:
        t = view.tail
        rec_state = (f"the next open cuts {t['bytes']} bytes at {t['segment']}:{t['offset']} "
                     f"({t['reason']}); see `norikv verify`")
    else:
        rec_state = "clean"
    lines = [
        f"store          {info['path']}",
        f"keys           {keys:,}",
        f"live bytes     {view.live_bytes:,} ({_size(view.live_bytes)})",
        f"wal bytes      {wal_bytes:,} ({_size(wal_bytes)}) in {len(segs)} segment(s){seg_range}",
        f"dead ratio     {dead:.2f}",
        f"ttl keys       {len(view.expiry):,}",
        f"lock           {lock}",
        f"recovery       {view.records:,} records replayed in {view.seconds:.3f} s; {rec_state}"
        + (f"; {view.batch_dropped:,} records of broken atomic batches not applied"
           if view.batch_dropped else ""),
    ]
    if leftovers:
        lines.append(f"leftovers      {', '.join(leftovers)} (removed by the next open)")
    _out("\n".join(lines) + "\n")
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    key = _decode_arg(args.key, args.encoding, "key")
    root, _, view = _read_view(args)
    value = view.live(key)
    if value is None:
        raise CliError(f"key not found: {_text(key)}", EXIT_NOT_FOUND)
    _out(_encode_out(value, args.encoding) + (b"" if args.no_newline else b"\n"))
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    enc = args.encoding
    lo = _decode_arg(args.start, enc, "--start") if args.start is not None else None
    hi = _decode_arg(args.end, enc, "--end") if args.end is not None else None
    if args.prefix is not None:
        p = _decode_arg(args.prefix, enc, "--prefix")
        from norikv._engine import _prefix_end

        pe = _prefix_end(p)
        lo = p if lo is None or p > lo else lo
        if pe is not None:
            hi = pe if hi is None or pe < hi else hi
    if args.limit is not None and args.limit < 0:
        raise CliError("--limit must be >= 0", EXIT_USAGE)
    _, _, view = _read_view(args)
    keys = view.sorted_keys()
    a = 0 if lo is None else bisect.bisect_left(keys, lo)
    b = len(keys) if hi is None else bisect.bisect_left(keys, hi)
    sel = keys[a:b] if a < b else []
    if args.reverse:
        sel.reverse()
    if args.limit is not None:
        sel = sel[: args.limit]
    data = view.data
    write = sys.stdout.buffer.write
    fmt = args.format
    for k in sel:
        v = data[k]
        if fmt == "tsv":
            write((_text(k) + "\t" + _text(v) + "\n").encode("utf-8"))
        elif fmt == "hex":
            write(k.hex().encode() + b"\t" + v.hex().encode() + b"\n")
        else:
            obj: dict[str, Any] = {}
            _json_field(obj, "key", k)
            _json_field(obj, "value", v)
            write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
    return EXIT_OK


def cmd_dump(args: argparse.Namespace) -> int:
    root, waldir = _locate(args.dir)
    files = _segment_files(waldir)
    start_seg, start_off = (0, 0)
    if args.start is not None:
        start_seg, start_off = _parse_from(args.start)
        ids = [s for s, _ in files]
        if start_seg not in ids:
            raise CliError(f"bad --from {args.start}: there is no segment {_wal.segment_name(start_seg)}",
                           EXIT_USAGE)
        size = os.path.getsize(os.path.join(waldir, _wal.segment_name(start_seg)))
        if start_off > size:
            raise CliError(f"bad --from {args.start}: offset past the end of "
                           f"{_wal.segment_name(start_seg)} ({size} bytes)", EXIT_USAGE)
        files = [(s, p) for s, p in files if s >= start_seg]
    damaged = []
    write = sys.stdout.buffer.write
    first = True
    for seg, path in files:
        off = start_off if seg == start_seg else 0
        try:
            for pos, rec in _wal.segment_records(path, off):
                if isinstance(rec, str):
                    if first and args.start is not None:
                        raise CliError(f"bad --from {args.start}: no record starts at "
                                       f"{seg}:{pos} ({rec})", EXIT_USAGE)
                    damaged.append((path, pos, rec))
                    break
                first = False
                kind = "delete" if rec["flags"] & _FLAG_TOMBSTONE else "put"
                if args.format == "json":
                    obj: dict[str, Any] = {"segment": seg, "offset": pos, "kind": kind}
                    _json_field(obj, "key", rec["key"])
                    obj.update(value_size=rec["vlen"], record_size=rec["size"], flags=rec["flags"])
                    for name in ("ttl_ms", "term", "index"):
                        if rec[name] is not None:
                            obj[name] = rec[name]
                    write(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")
                else:
                    key = rec["key"].hex() if args.format == "hex" else _text(rec["key"])
                    write(f"{seg}:{pos}\t{kind}\t{key}\t{rec['vlen']}\t{_flag_names(rec)}\n".encode("utf-8"))
        except FileNotFoundError:
            raise CliError(f"{path} disappeared while being read (compacted by the process "
                           f"holding the store?); run dump again") from None
        first = False
    for path, pos, reason in damaged:
        sys.stderr.write(f"norikv dump: damage in {path} at offset {pos}: {reason}\n")
    return EXIT_DAMAGE if damaged else EXIT_OK


# ---------------------------------------------------------------------- verify


def _verify_once(args: argparse.Namespace, waldir: str) -> dict[str, Any]:
    """The default open's plan (plan_recovery in tolerate_corrupted_tail,
    judging values as the open does) gives the verdict: damage is what that
    open would refuse or cut. When there is some, a skip_any_corrupted_records
    plan (which reads on past every damage) gives the details."""
    holders = _lock_holders(waldir)
    mode = RecoveryMode.TOLERATE_CORRUPTED_TAIL
    refusal: CorruptionError | None = None
    verdict: RecoveryPlan | None = None
    try:
        verdict, _ = _plan(args, waldir, mode, lambda: _wal._Sink(args.max_value_size), "verifying")
    except CorruptionError as exc:
        refusal = exc
    detail = verdict
    if verdict is None or verdict.changed:
        detail, _ = _plan(args, waldir, RecoveryMode.SKIP_ANY_CORRUPTED_RECORDS,
                          lambda: _wal._Sink(args.max_value_size), "verifying")
    assert detail is not None
    segs: list[dict[str, Any]] = []
    for p in detail.segments:
        records = p.records
        damage: list[dict[str, Any]] = []
        if p.skipped:
            start, _, reason, before = p.skipped[0]
            damage.append(dict(offset=start, reason=reason,
                               bad_spans=[[a, b] for a, b, _, _ in p.skipped],
                               records_after=p.records - before))
            records = before
        if p.unterminated_batch is not None:
            damage.append(dict(offset=p.unterminated_batch, reason="atomic batch never terminated",
                               bad_spans=[[p.unterminated_batch, p.data_end]], records_after=0))
        segs.append(dict(segment=p.id, file=os.path.basename(p.path), path=p.path,
                         file_size=p.file_size, records=records, data_end=p.data_end,
                         zero_tail=p.file_size - p.data_end if not damage else 0,
                         damage=damage, last=p is detail.segments[-1],
                         batch_records_dropped=p.batch_dropped))
    first: dict[str, Any] | None
    if refusal is not None:
        where = (refusal.path, refusal.offset)
        reason = next((d["reason"] for s in segs for d in s["damage"]
                       if (s["path"], d["offset"]) == where), str(refusal))
        first = dict(path=refusal.path, offset=refusal.offset, reason=reason,
                     verdict=f"the default open ({mode.value}) refuses this store")
    elif verdict is not None and verdict.changed:
        p = verdict.changed[0]
        first = dict(path=p.path, offset=p.size, reason=_cut_reason(p),
                     verdict=f"the default open ({mode.value}) would cut the damaged tail")
    else:
        first = None
    return dict(segments=segs, locked_by=holders, first_damage=first, leftovers=detail.leftovers)


def cmd_verify(args: argparse.Namespace) -> int:
    root, waldir = _locate(args.dir)
    report = _verify_once(args, waldir)
    segs = report["segments"]
    first = report.pop("first_damage")
    leftovers = report.pop("leftovers")
    damaged = [s for s in segs if s["damage"]]
    records = sum(s["records"] for s in segs)
    data_bytes = sum(s["data_end"] for s in segs)
    verdict = first["verdict"] if first else "clean"
    report.update(clean=first is None, records=records, data_bytes=data_bytes,
                  compaction_leftovers=leftovers, verdict=verdict)
    if args.json:
        _out(json.dumps(report, indent=2) + "\n")
    elif not args.quiet:
        lines = []
        for s in segs:
            if s["damage"]:
                for d in s["damage"]:
                    spans = ", ".join(f"{a}-{b}" for a, b in d["bad_spans"][:5])
                    more = f" (+{len(d['bad_spans']) - 5} more)" if len(d["bad_spans"]) > 5 else ""
                    lines.append(f"{s['file']}: DAMAGED at offset {d['offset']}: {d['reason']}; "
                                 f"{s['records']} valid records before it, {d['records_after']} after; "
                                 f"bad bytes {spans}{more}")
            else:
                tail = f" + {s['zero_tail']} zero bytes of preallocation" if s["zero_tail"] else ""
                broken = (f" ({s['batch_records_dropped']} of them in broken atomic batches, "
                          f"never applied)" if s["batch_records_dropped"] else "")
                lines.append(f"{s['file']}: ok, {s['records']} records{broken}, {s['data_end']} bytes{tail}")
        for name in leftovers:
            lines.append(f"{name}: leftover of an interrupted compaction (removed by the next open)")
        if report["locked_by"]:
            lines.append(f"(the store is open in pid {', '.join(map(str, report['locked_by']))}; "
                         f"verified what is on disk now)")
        state = "CORRUPT" if first else "clean"
        lines.append(f"{state}: {len(segs)} segment(s), {records} records, {data_bytes} bytes")
        _out("\n".join(lines) + "\n")
    if first:
        sys.stderr.write(f"norikv verify: corruption in {first['path']} at offset {first['offset']}: "
                         f"{first['reason']} ({max(1, len(damaged))} damaged segment(s); {verdict})\n")
        return EXIT_DAMAGE
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    root, _, view = _read_view(args)
    keys = view.sorted_keys()
    prog = Progress(args, "exporting", len(keys), unit="keys")
    out = None
    try:
        if args.file and args.file != "-":
            tmp = args.file + ".tmp"
            out = open(tmp, "wb")
            write = out.write
        else:
            write = sys.stdout.buffer.write
        b64 = base64.b64encode
        data = view.data
        expiry = view.expiry
        for n, k in enumerate(keys, 1):
            line = '{"key": "' + b64(k).decode("ascii") + '", "value": "' + b64(data[k]).decode("ascii") + '"'
            d = expiry.get(k)
            if d is not None:
                line += f', "expires_at_ms": {d}'
            write(line.encode("ascii") + b"}\n")
            if not n & 1023:
                prog.update(n)
        prog.update(len(keys), force=True)
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
            out.close()
            out = None
            os.replace(args.file + ".tmp", args.file)
            _note(args, f"exported {len(keys)} keys to {args.file}")
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise CliError(f"{exc.filename or args.file}: {exc.strerror}") from None
    finally:
        prog.close()
        if out is not None:
            out.close()
            try:
                os.unlink(args.file + ".tmp")
            except OSError:
                pass
    return EXIT_OK


# ====================================================================== commands: writing


def cmd_put(args: argparse.Namespace) -> int:
    key = _decode_arg(args.key, args.encoding, "key")
    value = _decode_arg(args.value, args.encoding, "value")
    if args.ttl is not None and not args.ttl > 0:
        raise CliError("--ttl must be > 0 seconds", EXIT_USAGE)
    store = _open_store(args, create=args.create)
    try:
        store.put(key, value, ttl=args.ttl)
    finally:
        store.close()
    return EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    key = _decode_arg(args.key, args.encoding, "key")
    store = _open_store(args)
    try:
        found = store.delete(key)
    finally:
        store.close()
    if not found:
        raise CliError(f"key not found: {_text(key)}", EXIT_NOT_FOUND)
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    store = _open_store(args)
    try:
        with Spinner(args, "compacting"):
            res = store.compact()
        keys = len(store)
    finally:
        store.close()
    if args.json:
        _out(json.dumps(dict(res, keys=keys), indent=2) + "\n")
    else:
        _note(args, f"compacted {args.dir}: {keys} keys; WAL {res['bytes_before']:,} -> "
                    f"{res['bytes_after']:,} bytes; {res['segments_written']} segment(s) written, "
                    f"{res['segments_deleted']} deleted in {res['seconds']:.2f} s")
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
                text = obj.get(name)
                if not isinstance(text, str):
                    raise CliError(f"line {lineno}: {name!r} must be a base64 string", EXIT_USAGE)
                try:
                    kv.append(base64.b64decode(text.encode("ascii"), validate=True))
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


def cmd_import(args: argparse.Namespace) -> int:
    items = _read_import(args)
    store = _open_store(args, create=args.create)
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
                    elif exp <= _wal.now_ms():
                        expired += 1
                        continue
                    else:
                        b._put_deadline(k, v, exp)
                    nbytes += len(k) + len(v)
                    imported += 1
            prog.update(i)
        keys = len(store)
    finally:
        prog.close()
        store.close()
    _note(args, f"imported {imported} keys into {args.dir}"
                + (f" ({expired} already expired, skipped)" if expired else "") + f"; the store holds {keys} keys")
    return EXIT_OK


# ---------------------------------------------------------------------- repair


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


def cmd_repair(args: argparse.Namespace) -> int:
    import fcntl

    from norikv import FsyncPolicy, KvStore

    mode = RecoveryMode(args.mode)
    root, waldir = _locate(args.dir)
    lock_path = os.path.join(waldir, "LOCK")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    backup = None
    saved: list[dict[str, Any]] = []
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CliError(_locked_message(root, waldir)) from None
        try:
            # What the open below will change (the same plan, made under the lock).
            touched = [p.id for p in plan_recovery(waldir, mode, _wal._Sink(args.max_value_size)).changed]
        except CorruptionError as exc:
            raise CliError(f"{root}: --mode {mode.value} refuses to change this store: {exc}; "
                           f"nothing was changed (point_in_time or skip_any_corrupted_records "
                           f"can recover it)") from None
        if not touched:
            _note(args, f"{root}: no damage found; nothing to repair, nothing was changed")
            return EXIT_OK
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        backup = os.path.join(waldir, f"repair-backup-{stamp}")
        n = 0
        while os.path.exists(backup):
            n += 1
            backup = os.path.join(waldir, f"repair-backup-{stamp}-{n}")
        os.mkdir(backup)
        for seg in touched:
            name = _wal.segment_name(seg)
            kept, size = _copy_trimmed(os.path.join(waldir, name), os.path.join(backup, name))
            saved.append(dict(file=name, original_size=size, bytes_copied=kept))
        with open(os.path.join(backup, "MANIFEST.json"), "w") as m:
            json.dump(dict(store=os.path.abspath(root), mode=mode.value, created=stamp, files=saved,
                           note="copies of the segment files as they were before repair; trailing "
                                "zero bytes (preallocation) were not copied"), m, indent=2)
            m.write("\n")
            m.flush()
            os.fsync(m.fileno())
        dfd = os.open(backup, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        dfd = os.open(waldir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(fd)   # releases the flock; the open below takes the store's own lock
    copied = sum(s["bytes_copied"] for s in saved)
    _note(args, f"backed up {len(saved)} segment file(s) ({copied:,} bytes) to {backup}{os.sep}")
    try:
        store = KvStore.open(root, recovery_mode=mode, fsync_policy=FsyncPolicy.OS, auto_compact=False,
                             max_value_size=args.max_value_size)
    except LockError:
        raise CliError(_locked_message(root, waldir) + f"; the backup in {backup} is kept") from None
    except CorruptionError as exc:
        raise CliError(f"{root}: recovery in mode {mode.value} failed: {exc}; nothing was changed") from None
    try:
        info = store.recovery_info
        keys = len(store)
    finally:
        store.close()
    _note(args, f"repaired {root} with {mode.value}: {info.valid_records} records kept, "
                f"{info.bytes_truncated} bytes cut, {info.segments_removed} segment(s) removed, "
                f"{info.spans_skipped} damaged span(s) skipped; the store holds {keys} keys")
    return EXIT_OK


# ---------------------------------------------------------------------- bench


def _run_bench(argv: list[str]) -> int:
    try:
        from norikv import bench  # type: ignore[attr-defined]
    except ImportError as exc:
        if exc.name == "norikv.bench":
            sys.stderr.write("norikv bench: the benchmark runner (norikv.bench) is not available "
                             "in this installation\n")
        else:
            sys.stderr.write(f"norikv bench: cannot load the benchmark runner: {exc} "
                             f"(install the extras: pip install 'norikv[bench]')\n")
        return EXIT_USAGE
    rc = bench.main(argv)
    return rc if isinstance(rc, int) else EXIT_OK


# ====================================================================== parser and main


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 < n < 1 << 63:
        raise argparse.ArgumentTypeError(f"must be a positive number of bytes: {text!r}")
    return n


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar and no informational output")
    store_arg = argparse.ArgumentParser(add_help=False, parents=[common])
    store_arg.add_argument("dir", metavar="DIR", help="the store directory (the one holding wal/)")
    store_arg.add_argument("--max-value-size", type=_positive_int, default=DEFAULT_MAX_VALUE_SIZE,
                           metavar="BYTES",
                           help="the store's max_value_size: the most a compressed value may "
                                "decompress to (a larger one is a damaged record); default "
                                f"{DEFAULT_MAX_VALUE_SIZE} (256 MiB), as KvStore.open")
    enc = argparse.ArgumentParser(add_help=False)
    g = enc.add_mutually_exclusive_group()
    g.add_argument("--hex", dest="encoding", action="store_const", const="hex",
                   help="keys and values (arguments and output) are hex")
    g.add_argument("--base64", dest="encoding", action="store_const", const="base64",
                   help="keys and values (arguments and output) are base64")
    enc.set_defaults(encoding="text")

    parser = argparse.ArgumentParser(
        prog="norikv", description="Inspect, verify and operate a norikv store.",
        epilog="Exit codes: 0 ok; 1 key not found or damage found; 2 bad usage or input; "
               "3 store missing, locked, corrupt or I/O error. See docs/cli.md.")
    parser.add_argument("--version", action="version", version=f"norikv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", parents=[store_arg], help="figures about a store (read-only)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("get", parents=[store_arg, enc], help="print the value of a key (read-only)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("-n", "--no-newline", action="store_true", help="no newline after the value")
    p.set_defaults(func=cmd_get)

    p = sub.add_parser("put", parents=[store_arg, enc], help="set a key")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="VALUE")
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="expire the key after SECONDS")
    p.add_argument("--create", action="store_true", help="create the store if it does not exist")
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("delete", parents=[store_arg, enc], help="delete a key")
    p.add_argument("key", metavar="KEY")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("scan", parents=[store_arg, enc],
                       help="list keys and values in key order (read-only)")
    p.add_argument("--prefix", metavar="P", help="only keys starting with P")
    p.add_argument("--start", metavar="A", help="only keys >= A")
    p.add_argument("--end", metavar="B", help="only keys < B")
    p.add_argument("--reverse", action="store_true", help="descending key order")
    p.add_argument("--limit", type=int, metavar="N", help="at most N keys")
    p.add_argument("--format", choices=("tsv", "json", "hex"), default="tsv",
                   help="tsv: escaped text key<TAB>value (default); json: one object per line; "
                        "hex: hex key<TAB>hex value")
    p.set_defaults(func=cmd_scan)

    p = sub.add_parser("dump", parents=[store_arg], help="list every WAL record (read-only)")
    p.add_argument("--from", dest="start", metavar="SEGMENT:OFFSET",
                   help="start at this position (a record boundary), e.g. 3:4096")
    p.add_argument("--format", choices=("tsv", "json", "hex"), default="tsv",
                   help="tsv (default), json lines, or tsv with hex keys")
    p.set_defaults(func=cmd_dump)

    p = sub.add_parser("verify", parents=[store_arg],
                       help="check every record (CRC, compressed values) as an open would, without "
                            "changing anything or taking the lock")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("compact", parents=[store_arg], help="rewrite the WAL with one record per live key")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser("repair", parents=[store_arg],
                       help="explicit recovery; keeps a copy of the segment files it changes")
    p.add_argument("--mode", required=True, choices=[m.value for m in RecoveryMode],
                   help="the recovery mode (see RecoveryMode)")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("export", parents=[store_arg],
                       help='write every live key as JSON lines {"key": b64, "value": b64} (read-only)')
    p.add_argument("--file", metavar="PATH", help="write to PATH (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", parents=[store_arg], help="put the keys of an export (JSON lines)")
    p.add_argument("--file", metavar="PATH", help="read PATH (default: stdin)")
    p.add_argument("--create", action="store_true", help="create the store if it does not exist")
    p.set_defaults(func=cmd_import)

    sub.add_parser("bench", help="the benchmark runner (arguments are passed to norikv.bench)",
                   add_help=False)
    return parser


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``norikv`` console script and ``python -m norikv``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "bench" if argv[:1] == ["bench"] else None
    try:
        if command == "bench":
            return _run_bench(argv[1:])
        parser = _build_parser()
        args = parser.parse_args(argv)
        command = args.command
        if command is None:
            parser.print_usage(sys.stderr)
            sys.stderr.write("norikv: error: a command is required (see norikv --help)\n")
            return EXIT_USAGE
        func: Callable[[argparse.Namespace], int] = args.func
        rc = func(args)
        sys.stdout.flush()
        return rc
    except CliError as exc:
        _flush_quietly()
        sys.stderr.write(f"norikv {command}: {exc.message}\n")
        return exc.code
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except KeyboardInterrupt:
        _flush_quietly()
        sys.stderr.write(f"norikv {command}: interrupted\n")
        return 130
    except LockError as exc:
        sys.stderr.write(f"norikv {command}: locked by another process: {exc.filename or ''}\n")
        return EXIT_STORE
    except CorruptionError as exc:
        sys.stderr.write(f"norikv {command}: corrupt store: {exc}\n")
        return EXIT_STORE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"norikv {command}: {where}{exc.strerror or exc}\n")
        return EXIT_STORE
    except (NoriError, ValueError, MemoryError) as exc:
        sys.stderr.write(f"norikv {command}: {type(exc).__name__}: {exc}\n")
        return EXIT_STORE
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("NORIKV_DEBUG"):
            raise
        sys.stderr.write(f"norikv {command}: internal error: {type(exc).__name__}: {exc} "
                         f"(set NORIKV_DEBUG=1 for a traceback)\n")
        return 70


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
