"""A gunicorn-style pre-fork HTTP key-value server: N worker processes, one store.

Run:  python examples/prefork_server.py PATH [--port 8000] [--workers 4]

    curl -X PUT --data-binary hello localhost:8000/k/greeting   # 204 once stored
    curl localhost:8000/k/greeting                               # 200 hello (or 404)
    curl -X DELETE localhost:8000/k/greeting                     # 204 (or 404)
    curl localhost:8000/pid                                      # which worker answered
    curl -X POST localhost:8000/sync                             # store.sync(): fsync now

With --port 0 the first line on stdout names the port the kernel chose
(``listening on 127.0.0.1:<port>``). SIGTERM or SIGINT (Ctrl-C) stops the
workers, each closing its store, then the master; a worker that dies is
replaced. Standard library only, besides norikv.

What a worker sees: every process writes into the store's one log, and a write
acknowledged by one worker (the 204 of a PUT) is seen by every GET that starts
after it, whichever worker serves that GET (read-your-writes across
processes). A write survives its worker's death (even SIGKILL) from the moment
``put`` returned; it survives a machine crash once synced (the default fsync
policy syncs within 5 ms; POST /sync forces it).
"""

import argparse
import http.server
import os
import select
import signal
import socket
import sys
import time
import traceback
import urllib.parse

from norikv import KvStore

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
BOOT_ERROR = 3  # a worker that cannot open the store exits with this (gunicorn's WORKER_BOOT_ERROR)


class Handler(http.server.BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0), served from the worker's own store."""

    store: KvStore  # set on the class in each worker
    timeout = 10  # seconds: a stalled client cannot hold a worker forever

    def do_GET(self):
        if self.path == "/pid":
            return self.reply(200, str(os.getpid()).encode())
        value = self.store.get(self.key())
        self.reply(404) if value is None else self.reply(200, value)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.store.put(self.key(), body)
        self.reply(204)  # only now is the write acknowledged

    def do_DELETE(self):
        self.reply(204 if self.store.delete(self.key()) else 404)

    def do_POST(self):
        if self.path != "/sync":
            return self.reply(404)
        self.store.sync()
        self.reply(204)

    def key(self):
        if not self.path.startswith("/k/") or len(self.path) == 3:
            raise LookupError
        return urllib.parse.unquote_to_bytes(self.path[3:])

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except LookupError:  # not a /k/<key> path
            self.reply(404)
        except (ValueError, TypeError) as e:  # a key or value the store refuses
            self.reply(400, str(e).encode())

    def log_message(self, format, *args):
        pass  # quiet; a real server would log


def wakeup_pipe(signals, handler):
    """Routes ``signals`` to ``handler`` and makes each wake a select() on the
    returned fd: the classic self-pipe, as in gunicorn's arbiter."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    for sig in signals:
        signal.signal(sig, handler)
    return r


def worker(path, listener, inherited):
    """Runs in a forked child until SIGTERM; returns the exit code."""
    # The master's handle came with the fork but belongs to the master: in this
    # child it only serves stale reads and refuses writes. Closing it releases
    # the child's copy only (no wait, no file touched); then open our own, which
    # joins the master's open store without recovering it again.
    inherited.close()
    try:
        store = KvStore.open(path)
    except Exception as e:
        print(f"worker {os.getpid()}: cannot open the store: {e!r}", file=sys.stderr, flush=True)
        return BOOT_ERROR

    stopping = []
    wake = wakeup_pipe(STOP_SIGNALS, lambda sig, frame: stopping.append(sig))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by the master around fork
    Handler.store = store
    server = http.server.HTTPServer(listener.getsockname(), Handler, bind_and_activate=False)
    server.socket = listener
    while not stopping:
        ready = select.select([listener, wake], [], [])[0]
        if wake in ready:
            os.read(wake, 512)  # a signal: the loop condition decides
        if listener not in ready:
            continue
        try:
            conn, addr = listener.accept()
        except BlockingIOError:
            continue  # another worker took this connection
        try:
            server.finish_request(conn, addr)
        except Exception:
            server.handle_error(conn, addr)  # prints the traceback; the worker goes on
        finally:
            server.shutdown_request(conn)
    # A request in progress has finished: stop only between requests.
    store.close()
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args(argv)

    # Open in the master first, as pre-fork servers do: the first opener checks
    # and recovers the log once (workers then join an open store instead of
    # racing to recover it) and warms the page cache the workers share.
    store = KvStore.open(args.path)
    print(f"master {os.getpid()}: {len(store)} keys in {args.path}", file=sys.stderr, flush=True)

    listener = socket.create_server(("127.0.0.1", args.port), backlog=128)
    listener.setblocking(False)  # workers race for each connection; the losers must not block in accept()
    print("listening on 127.0.0.1:%d" % listener.getsockname()[1], flush=True)

    stopping = []

    def on_signal(sig, frame):
        if sig in STOP_SIGNALS:
            stopping.append(sig)  # SIGCHLD only wakes the loop below

    wake = wakeup_pipe((*STOP_SIGNALS, signal.SIGCHLD), on_signal)
    workers = set()

    def spawn():
        # Stop signals stay pending across fork() until the child has its own
        # handlers: otherwise a SIGTERM right after the fork would be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker: it must never return into the master's code
            try:
                os.close(wake)
                os._exit(worker(args.path, listener, store))
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        workers.add(pid)
        print(f"worker {pid} started", flush=True)

    def reap():
        """Collects the workers that exited; returns their exit codes (-N: killed by signal N)."""
        codes = []
        while workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                break
            workers.discard(pid)
            codes.append(os.waitstatus_to_exitcode(status))
            print(f"worker {pid} exited ({codes[-1]})", flush=True)
        return codes

    for _ in range(args.workers):
        spawn()
    code = 0
    while not stopping:
        select.select([wake], [], [])
        os.read(wake, 512)
        for exit_code in reap():
            if exit_code == BOOT_ERROR:
                stopping.append("boot error")  # respawning would fail again: give up
                code = 1
            elif not stopping:
                spawn()  # like gunicorn: keep N workers

    # Graceful stop: each worker finishes its request and closes its store;
    # one that has not exited within 10 s is killed (its acknowledged writes
    # are safe: they were in the log before their 204 went out).
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while workers and time.monotonic() < deadline:
        if select.select([wake], [], [], max(deadline - time.monotonic(), 0))[0]:
            os.read(wake, 512)  # a SIGCHLD
        reap()
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    store.close()
    print("stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
