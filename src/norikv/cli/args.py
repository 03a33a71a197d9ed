"""The command line: the parser of every subcommand and the readers of the
arguments that need more than argparse (keys in hex or base64, --from)."""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re

from norikv import __version__
from norikv.cli.output import EXIT_USAGE, CliError
from norikv.compression import DEFAULT_MAX_VALUE_SIZE
from norikv.wal import RecoveryMode

_FROM_RE = re.compile(r"(\d+)(?:\.wal)?:(\d+)")


def decode_arg(text: str, enc: str, what: str) -> bytes:
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


def parse_from(text: str) -> tuple[int, int]:
    """dump --from SEGMENT:OFFSET (the segment also as its file name)."""
    m = _FROM_RE.fullmatch(text.strip())
    if not m:
        raise CliError(f"bad --from {text!r}: expected SEGMENT:OFFSET, e.g. 3:4096", EXIT_USAGE)
    return int(m.group(1)), int(m.group(2))


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 < n < 1 << 63:
        raise argparse.ArgumentTypeError(f"must be a positive number of bytes: {text!r}")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The parser; ``args.command`` names the subcommand to run."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no informational output")
    store_arg = argparse.ArgumentParser(add_help=False, parents=[common])
    store_arg.add_argument("dir", metavar="DIR", help="the store directory (the one holding wal/)")
    store_arg.add_argument(
        "--max-value-size",
        type=_positive_int,
        default=DEFAULT_MAX_VALUE_SIZE,
        metavar="BYTES",
        help="the store's max_value_size: the most a compressed value may "
        "decompress to (a larger one is a damaged record); default "
        f"{DEFAULT_MAX_VALUE_SIZE} (256 MiB), as KvStore.open",
    )
    enc = argparse.ArgumentParser(add_help=False)
    g = enc.add_mutually_exclusive_group()
    g.add_argument(
        "--hex",
        dest="encoding",
        action="store_const",
        const="hex",
        help="keys and values (arguments and output) are hex",
    )
    g.add_argument(
        "--base64",
        dest="encoding",
        action="store_const",
        const="base64",
        help="keys and values (arguments and output) are base64",
    )
    enc.set_defaults(encoding="text")

    parser = argparse.ArgumentParser(
        prog="norikv",
        description="Inspect, verify and operate a norikv store.",
        epilog="Exit codes: 0 ok; 1 key not found or damage found; 2 bad usage or input; "
        "3 store missing, locked, corrupt or I/O error; 70 internal error (a bug); "
        "130 interrupted; 141 stdout closed early. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"norikv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", parents=[store_arg], help="figures about a store (read-only)")
    p.add_argument("--json", action="store_true", help="print a JSON object")

    p = sub.add_parser("get", parents=[store_arg, enc], help="print the value of a key (read-only)")
    p.add_argument("key", metavar="KEY")
    p.add_argument("-n", "--no-newline", action="store_true", help="no newline after the value")

    p = sub.add_parser("put", parents=[store_arg, enc], help="set a key")
    p.add_argument("key", metavar="KEY")
    p.add_argument(
        "value",
        metavar="VALUE",
        nargs="?",
        help="the value; - reads it from stdin (raw bytes, never hex/base64-decoded)",
    )
    p.add_argument(
        "--value-file", metavar="FILE", help="read the value from FILE (raw bytes) instead of a VALUE argument"
    )
    p.add_argument("--ttl", type=float, metavar="SECONDS", help="expire the key after SECONDS")
    p.add_argument("--create", action="store_true", help="create the store if it does not exist")

    p = sub.add_parser("delete", parents=[store_arg, enc], help="delete a key")
    p.add_argument("key", metavar="KEY")

    p = sub.add_parser("scan", parents=[store_arg, enc], help="list keys and values in key order (read-only)")
    p.add_argument("--prefix", metavar="P", help="only keys starting with P")
    p.add_argument("--start", metavar="A", help="only keys >= A")
    p.add_argument("--end", metavar="B", help="only keys < B")
    p.add_argument("--reverse", action="store_true", help="descending key order")
    p.add_argument("--limit", type=int, metavar="N", help="at most N keys")
    p.add_argument(
        "--format",
        choices=("tsv", "json", "hex"),
        default="tsv",
        help="tsv: escaped text key<TAB>value (default); json: one object per line; hex: hex key<TAB>hex value",
    )

    p = sub.add_parser("dump", parents=[store_arg], help="list every WAL record (read-only)")
    p.add_argument(
        "--from", dest="start", metavar="SEGMENT:OFFSET", help="start at this position (a record boundary), e.g. 3:4096"
    )
    p.add_argument(
        "--format",
        choices=("tsv", "json", "hex"),
        default="tsv",
        help="tsv (default), json lines, or tsv with hex keys",
    )

    p = sub.add_parser(
        "verify",
        parents=[store_arg],
        help="check every record (CRC, compressed values) as an open would, without "
        "changing anything or taking the lock",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("compact", parents=[store_arg], help="rewrite the WAL with one record per live key")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    p = sub.add_parser(
        "repair", parents=[store_arg], help="explicit recovery; keeps a copy of the segment files it changes"
    )
    p.add_argument(
        "--mode", required=True, choices=[m.value for m in RecoveryMode], help="the recovery mode (see RecoveryMode)"
    )

    p = sub.add_parser(
        "export",
        parents=[store_arg],
        help='write every live key as JSON lines {"key": b64, "value": b64} (read-only)',
    )
    p.add_argument("--file", metavar="PATH", help="write to PATH (default: stdout)")

    p = sub.add_parser("import", parents=[store_arg], help="put the keys of an export (JSON lines)")
    p.add_argument("--file", metavar="PATH", help="read PATH (default: stdin)")
    p.add_argument("--create", action="store_true", help="create the store if it does not exist")

    p = sub.add_parser(
        "backup",
        parents=[store_arg],
        help="a consistent copy of the store, also while another process writes it (no lock taken)",
    )
    p.add_argument("dest", metavar="DEST", help="the backup directory, or - for a tar stream on stdout")
    p.add_argument("--full", action="store_true", help="copy every segment (default: reuse unchanged ones in DEST)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")

    sub.add_parser("bench", help="the benchmark runner (arguments are passed to norikv.bench)", add_help=False)
    return parser
