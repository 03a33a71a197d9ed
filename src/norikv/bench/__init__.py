"""Comparison runner: one workload, the same keys and values, on norikv and the
stores a user would pick instead.

Run ``python -m norikv.bench`` (or ``norikv bench``); ``--help`` lists the
options. Every (store, value size) pair is measured in a fresh subprocess so
that memory figures do not mix. Peers come from the ``bench`` extra
(``pip install norikv[bench]``); a peer that is not installed is skipped with a
note, never faked.

Durability levels are named the same way for every store:

* ``none``: nothing survives the process (the plain ``dict``).
* ``os``: an acknowledged write is in OS buffers (survives the death of the
  process, not a power loss or kernel crash).
* ``synced``: an acknowledged write is on stable storage (fsync/fdatasync).

Plain operations (put, get, get_missing, delete, reopen, memory, disk) run with
each store at its ``os`` configuration (norikv: at each fsync policy, one row
per policy). The durable operations (batch_sync, put_sync, threads8_sync) run
with each store at its ``synced`` configuration. The configuration used is
printed next to the numbers and stored in the JSON file.

Modules, one job each:

* ``workload``: the operations, the keys and the values;
* ``adapter``: the interface a measured store implements;
* ``stores``: norikv's rows, the dict and the STORES registry;
  ``peers``: the other stores' adapters;
* ``worker``: what runs in the measured subprocess (one function per operation);
  ``measure``: the memory, disk and figure readings it takes;
* ``runner``: one subprocess per (store, value size), collected into the
  results document; ``machine``: the machine and versions recorded with it;
* ``report``: the text table; ``chart``: the PNG chart;
* ``cli``: the options and ``main``.
"""

from norikv.bench.adapter import Adapter, NotAvailable
from norikv.bench.chart import write_chart
from norikv.bench.cli import build_parser, main
from norikv.bench.report import format_table
from norikv.bench.runner import run
from norikv.bench.stores import STORES
from norikv.bench.workload import OPS

__all__ = ["main", "STORES", "OPS", "Adapter", "NotAvailable", "build_parser", "run", "format_table", "write_chart"]
