"""The ``norikv`` command: inspect, verify and operate a store from the shell.

Every subcommand but ``bench`` takes the store directory (the one holding
``wal/``) as its first argument. See docs/cli.md for the full reference.

* Read-only commands (info, get, scan, dump, verify, export) never modify the
  store and never take its lock: they read the segment files directly through
  :mod:`norikv.inspect`, so they work while another process has the store
  open, and a torn tail left by a crash is reported, never truncated.
* Writing commands (put, delete, compact, import) open the store like the
  library does, but refuse to let recovery cut anything: a damaged store must
  be fixed explicitly with ``repair``, which keeps a copy of what it cuts.

Exit codes: 0 success; 1 key not found (get, delete) or damage found (verify,
dump); 2 bad usage or input (arguments, hex/base64, --from, import lines);
3 the store cannot be used (missing, locked, corrupt, I/O error); 70 an
internal error (a bug: report it); 130 interrupted; 141 stdout closed early
(docs/cli.md has the table).

The modules: ``args`` (the parser), ``output`` (stdout, one-line errors, exit
codes), ``store`` (finding, opening and reading the store), ``read`` and
``verify`` (the read-only commands), ``write`` (the writing ones), ``bench``
(the hand-off to norikv.bench).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from norikv.cli import read, verify, write
from norikv.cli.args import build_parser
from norikv.cli.bench import run_bench
from norikv.cli.output import EXIT_STORE, EXIT_USAGE, CliError
from norikv.errors import CorruptionError, LockError, NoriError
from norikv.progress import Progress, Spinner  # noqa: F401 - the one progress line every command draws

__all__ = ["main"]

_EXIT_INTERRUPTED = 130
_EXIT_BROKEN_PIPE = 141
_EXIT_INTERNAL = 70

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "info": read.info,
    "get": read.get,
    "scan": read.scan,
    "dump": read.dump,
    "verify": verify.verify,
    "export": read.export,
    "backup": read.backup,
    "put": write.put,
    "delete": write.delete,
    "compact": write.compact,
    "import": write.import_,
    "repair": write.repair,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``norikv`` console script and ``python -m norikv``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "bench" if argv[:1] == ["bench"] else None
    try:
        if command == "bench":
            return run_bench(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        command = args.command
        if command is None:
            parser.print_usage(sys.stderr)
            sys.stderr.write("norikv: error: a command is required (see norikv --help)\n")
            return EXIT_USAGE
        rc = COMMANDS[command](args)
        sys.stdout.flush()
        return rc
    except CliError as exc:
        _flush_quietly()
        sys.stderr.write(f"norikv {command}: {exc.message}\n")
        return exc.code
    except BrokenPipeError:
        _silence_stdout()
        return _EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        _flush_quietly()
        sys.stderr.write(f"norikv {command}: interrupted\n")
        return _EXIT_INTERRUPTED
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
        sys.stderr.write(
            f"norikv {command}: internal error: {type(exc).__name__}: {exc} (set NORIKV_DEBUG=1 for a traceback)\n"
        )
        return _EXIT_INTERNAL


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    except (OSError, ValueError):
        pass
