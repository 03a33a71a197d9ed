"""Measures the key directory of values="disk" (include/keydir.h): bytes per
key for N random 16-byte keys (nbytes()/count and the process's RSS delta),
and ns per lookup of a fresh bytes object (its hash not cached yet: the hash,
the probe, the key compare), against a dict of the same keys, both driven by
the same C loop (a module built here with Cython from keydir.h).

    python scripts/keydir_measure.py [--keys 2000000] [--loads 4/5,3/4,7/8]

Not a test: figures for docs/performance.md and issue 13."""

from __future__ import annotations

import argparse
import gc
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join(HERE, "..", "src", "norikv", "_engine", "include")

BENCH_PYX = textwrap.dedent(
    """
    # cython: language_level=3, boundscheck=False, wraparound=False
    from libc.stdint cimport uint8_t, uint64_t
    from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
    from cpython.object cimport PyObject_Hash, PyObject

    cdef extern from "keydir.h" nogil:
        ctypedef struct nk_keydir:
            uint64_t cap
            uint64_t count
        void nk_kd_init(nk_keydir *kd, uint64_t floor_bytes)
        void nk_kd_free(nk_keydir *kd)
        int nk_kd_find(const nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h,
                       uint64_t *loc, uint64_t *vsize)
        int nk_kd_put(nk_keydir *kd, const uint8_t *key, size_t klen, uint64_t h, uint64_t loc,
                      uint64_t vsize, uint64_t *old_loc, uint64_t *old_vsize)
        size_t nk_kd_nbytes(const nk_keydir *kd)

    cdef extern from "Python.h":
        PyObject *PyDict_GetItem(object d, object k)

    cdef class KD:
        cdef nk_keydir kd
        def __cinit__(self):
            nk_kd_init(&self.kd, 65536)
        def __dealloc__(self):
            nk_kd_free(&self.kd)
        def fill(self, list keys):
            cdef uint64_t a, b, i = 0
            for k in keys:
                if nk_kd_put(&self.kd, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                             <uint64_t>PyObject_Hash(k), i, 1024, &a, &b) < 0:
                    raise MemoryError
                i += 1
        def find_all(self, list keys):
            cdef uint64_t a, b, n = 0
            for k in keys:
                n += nk_kd_find(&self.kd, <const uint8_t *>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k),
                                <uint64_t>PyObject_Hash(k), &a, &b)
            return n
        def nbytes(self):
            return nk_kd_nbytes(&self.kd)
        def slots(self):
            return self.kd.cap

    def dict_find_all(dict d, list keys):
        cdef uint64_t n = 0
        for k in keys:
            n += PyDict_GetItem(d, k) != NULL
        return n
    """
)


def build(tmp: str, num: int, den: int) -> str:
    name = f"kdbench_{num}_{den}"
    with open(os.path.join(tmp, name + ".pyx"), "w") as f:
        f.write(BENCH_PYX)
    setup = textwrap.dedent(
        f"""
        from setuptools import Extension, setup
        from Cython.Build import cythonize
        ext = Extension({name!r}, [{name + ".pyx"!r}], include_dirs=[{INCLUDE!r}],
                        define_macros=[("NK_KD_LOAD_NUM", "{num}"), ("NK_KD_LOAD_DEN", "{den}")],
                        extra_compile_args=["-O3", "-g0"])
        setup(ext_modules=cythonize([ext], quiet=True))
        """
    )
    with open(os.path.join(tmp, "setup.py"), "w") as f:
        f.write(setup)
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp, check=True, capture_output=True
    )
    return name


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fresh(keys: list[bytes]) -> list[bytes]:
    return [bytes(bytearray(k)) for k in keys]  # new objects: no cached hash


def best(fn, keys, reps):
    times = []
    for _ in range(reps):
        probe = fresh(keys)
        t = time.perf_counter_ns()
        found = fn(probe)
        times.append(time.perf_counter_ns() - t)
        assert found == len(keys)
        del probe
    return min(times) / len(keys)


def measure(n: int, reps: int, what: str, tmp: str) -> None:
    """One configuration in this process, so that its RSS delta is its own."""
    rnd = random.Random(13)
    keys = [rnd.randbytes(16) for _ in range(n)]
    order = keys[:]
    rnd.shuffle(order)
    sys.path.insert(0, tmp)
    num, den = map(int, what.split("/")) if what != "dict" else (4, 5)
    mod = __import__(build(tmp, num, den))
    if what == "dict":
        gc.collect()
        base = rss()
        own = fresh(keys)  # the map's own key objects, counted as a dict's are
        t = time.perf_counter_ns()
        d = dict(zip(own, range(1 << 20, (1 << 20) + n)))  # bytes -> int
        del own
        put_ns = (time.perf_counter_ns() - t) / n
        delta = rss() - base
        find_ns = best(lambda p: mod.dict_find_all(d, p), order, reps)
        print(f"dict bytes->int: RSS delta {delta / n:.1f} B/key, put {put_ns:.1f} ns, find {find_ns:.1f} ns")
        return
    gc.collect()
    base = rss()
    t = time.perf_counter_ns()
    kd = mod.KD()
    kd.fill(keys)
    put_ns = (time.perf_counter_ns() - t) / n
    delta = rss() - base
    find_ns = best(kd.find_all, order, reps)
    print(
        f"keydir load<={num}/{den}: nbytes {kd.nbytes() / n:.1f} B/key, RSS delta {delta / n:.1f} B/key, "
        f"load {n / kd.slots():.2f}, put {put_ns:.1f} ns, find {find_ns:.1f} ns"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=2_000_000)
    ap.add_argument("--loads", default="4/5,3/4,7/8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        measure(args.keys, args.reps, args.one, args.tmp)
        return
    tmp = tempfile.mkdtemp(prefix="kdbench-")
    for what in ["dict", *args.loads.split(","), "dict"]:
        cmd = [sys.executable, __file__, "--keys", str(args.keys), "--reps", str(args.reps), "--one", what]
        subprocess.run([*cmd, "--tmp", tmp], check=True)


if __name__ == "__main__":
    main()
