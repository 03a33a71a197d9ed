"""Build of the norikv C extension (metadata lives in pyproject.toml).

NORIKV_DEBUG=1 builds with Cython line tracing, C assertions, bounds checks
and no optimisation, for coverage and debugging."""

import glob
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("NORIKV_DEBUG", "") not in ("", "0")

macros = []
compile_args = []
directives = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}
if debug:
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]
    directives.update(boundscheck=True, wraparound=True, linetrace=True, cdivision=False)
    compile_args += ["-O0", "-g", "-UNDEBUG"]
elif sys.platform != "win32":
    # -g0: Python's own CFLAGS carry -g, which would triple the wheel's size.
    compile_args += ["-O3", "-g0"]
if sys.platform != "win32":
    # A function a CPython version no longer declares publicly must not build
    # with an assumed int result (_Py_HashBytes on 3.13 lost its high bits).
    compile_args += ["-Werror=implicit-function-declaration"]

# One extension, built from the parts in src/norikv/_engine/ (docs/DESIGN.md):
# __init__.pyx includes each part's .pyx, __init__.pxd each part's .pxd.
ENGINE = "src/norikv/_engine"
ext = Extension(
    "norikv._engine",
    sources=[f"{ENGINE}/__init__.pyx"],
    include_dirs=[f"{ENGINE}/include"],
    define_macros=macros,
    extra_compile_args=compile_args,
    depends=sorted(glob.glob(f"{ENGINE}/*.pyx") + glob.glob(f"{ENGINE}/*.pxd") + glob.glob(f"{ENGINE}/include/*.h")),
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives=directives,
        include_path=["src"],
        force=debug,
    ),
)
