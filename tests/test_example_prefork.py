"""examples/prefork_server.py, run for real: a master and 4 forked workers
serving one store over HTTP.

Every request goes on a new connection, so the kernel hands them to
different workers: a GET after a PUT's 204 is (often) served by another
process than the PUT, and must see it. A worker SIGKILLed while a client
keeps writing is replaced and costs no acknowledged write; SIGTERM stops
everything cleanly and the store, reopened here, holds every acknowledged
write. Every wait is bounded: a hang fails the test."""

import http.client
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from norikv import KvStore

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "prefork_server.py"
WORKERS = 4
TIMEOUT = 30  # seconds, for any one wait


class Server:
    """The example as a subprocess (its own session: on failure everything it
    forked is killed), with its stdout lines read by a thread into a queue."""

    def __init__(self, path, stderr):
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), str(path), "--port", "0", "--workers", str(WORKERS)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.line()
        assert first.startswith("listening on 127.0.0.1:"), first
        self.port = int(first.rpartition(":")[2])
        self.workers = {self.expect("started") for _ in range(WORKERS)}

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self):
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"the server printed nothing within {TIMEOUT} s")
        assert line is not None, "the server's stdout closed"
        return line

    def expect(self, event):
        """The pid of the next ``worker <pid> <event>`` line."""
        words = self.line().split()
        assert words[0] == "worker" and words[2] == event, words
        return int(words[1])

    def request(self, method, path, body=None):
        """(status, body) of one request on a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def pid(self):
        status, body = self.request("GET", "/pid")
        assert status == 200
        return int(body)

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(TIMEOUT)


@pytest.fixture
def server(tmp_path):
    with open(tmp_path / "stderr", "w") as err:
        s = Server(tmp_path / "store", err)
        try:
            yield s
        finally:
            s.kill()
    # on failure, pytest shows this with the test's output
    sys.stderr.write((tmp_path / "stderr").read_text())


def test_prefork_workers_share_the_store(server, tmp_path):
    acked = {}  # key -> value (None: deleted) of every write whose 204 came back

    # Read-your-writes across processes: each write then a read on other connections.
    served_by = set()
    for i in range(150):
        key, value = f"k{i % 100}", f"v{i}".encode() * (1 + i % 7)
        assert server.request("PUT", f"/k/{key}", value)[0] == 204
        acked[key] = value
        assert server.request("GET", f"/k/{key}") == (200, value)
        if i % 10 == 9:
            assert server.request("DELETE", f"/k/{key}")[0] == 204
            acked[key] = None
            assert server.request("GET", f"/k/{key}")[0] == 404
        served_by.add(server.pid())
    assert server.request("POST", "/sync")[0] == 204
    assert served_by <= server.workers
    for _ in range(200):  # the kernel chooses the worker: ask until two answered
        if len(served_by) >= 2:
            break
        served_by.add(server.pid())
    assert len(served_by) >= 2, "one worker served every connection"

    # A client writes unique keys while a worker is SIGKILLed: a write in flight
    # at the victim may be lost (no 204), an acknowledged one never.
    stop = threading.Event()
    written = {}
    in_flight = {}  # sent, no 204: the victim may or may not have written it

    def writer():
        n = 0
        while not stop.is_set():
            key, value = f"w{n}", f"value {n}".encode()
            n += 1
            try:
                if server.request("PUT", f"/k/{key}", value)[0] == 204:
                    written[key] = value
                    continue
            except (ConnectionError, http.client.HTTPException):
                pass  # served by the victim as it died: not acknowledged
            in_flight[key] = value

    t = threading.Thread(target=writer)
    t.start()
    try:
        victim = server.pid()
        os.kill(victim, signal.SIGKILL)
        assert server.expect("exited") == victim
        replacement = server.expect("started")
        assert replacement not in server.workers
        server.workers = server.workers - {victim} | {replacement}
        for _ in range(500):  # the replacement serves too (bounded: the kernel chooses)
            if server.pid() == replacement:
                break
        else:
            pytest.fail("the replacement worker never answered")
    finally:
        stop.set()
        t.join(TIMEOUT)
    assert not t.is_alive()
    assert len(written) > 0
    acked.update(written)
    for key, value in acked.items():
        assert server.request("GET", f"/k/{key}") == ((404, b"") if value is None else (200, value))

    # SIGTERM: workers close their stores, then the master; exit code 0.
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(TIMEOUT) == 0
    lines = []
    while (line := server.lines.get(timeout=TIMEOUT)) is not None:
        lines.append(line)
    assert sorted(int(w.split()[1]) for w in lines if w.endswith("exited (0)")) == sorted(server.workers)
    assert lines[-1] == "stopped"

    with KvStore.open(tmp_path / "store") as s:
        stored = {k.decode(): v for k, v in s.items()}
        extra = {k: v for k, v in stored.items() if k not in acked}
        assert extra.items() <= in_flight.items()  # a write the victim did before dying, never acknowledged
        assert {k: v for k, v in stored.items() if k in acked} == {k: v for k, v in acked.items() if v is not None}
