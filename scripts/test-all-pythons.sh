#!/usr/bin/env bash
# test-all-pythons.sh: the test suite on every supported CPython pyenv has.
#
# For each interpreter (default: every ~/.pyenv/versions/3.N.x with N >= 10;
# or the versions given as arguments, e.g. `3.12 3.13.0`): build a wheel from
# a copy of the checkout (build isolation), install it into a fresh virtual
# environment with the test extra and mypy, and run the whole test suite
# against the installed wheel from a copy of the tree without src/. The
# interpreters run one after the other (the machine is shared). Prints a
# summary table; exits non-zero if any interpreter failed.
#
# Usage: scripts/test-all-pythons.sh [--keep] [VERSION...] [-- PYTEST_ARGS...]
# Environment: PYENV_ROOT (default ~/.pyenv), NORIKV_ALL_PY_DIR (work dir),
#   NORIKV_TEST_TIMEOUT (seconds per interpreter's test run; default 1800).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
KEEP=0
WANT=()
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    -*) echo "usage: $0 [--keep] [VERSION...] [-- PYTEST_ARGS...]" >&2; exit 2 ;;
    *) WANT+=("$1"); shift ;;
  esac
done

# Interpreters: CPython 3.10 and later (pyenv names them 3.N.M).
PYS=()
for d in "$PYENV_ROOT"/versions/*/; do
  v=$(basename "$d")
  [[ $v =~ ^3\.([0-9]+)\.[0-9]+$ ]] || continue
  [ "${BASH_REMATCH[1]}" -ge 10 ] || continue
  if [ ${#WANT[@]} -gt 0 ]; then
    ok=0
    for w in "${WANT[@]}"; do [[ $v == "$w" || $v == "$w".* ]] && ok=1; done
    [ $ok -eq 1 ] || continue
  fi
  [ -x "$d/bin/python3" ] && PYS+=("$v")
done
[ ${#PYS[@]} -gt 0 ] || { echo "no matching CPython >= 3.10 under $PYENV_ROOT/versions" >&2; exit 2; }
PYS=($(printf '%s\n' "${PYS[@]}" | sort -V))

WORK=${NORIKV_ALL_PY_DIR:-$(mktemp -d -t norikv-all-pythons.XXXXXX)}
mkdir -p "$WORK"
echo "interpreters: ${PYS[*]}"
echo "work directory: $WORK"

# One copy of the tree, without build products, shared by every interpreter.
SRC="$WORK/checkout"
rm -rf "$SRC"; mkdir -p "$SRC"
tar -C "$ROOT" -c \
    --exclude=./.git --exclude='./.venv*' --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude='*.so' --exclude=./src/norikv/_engine/__init__.c \
    --exclude='__pycache__' --exclude=.pytest_cache --exclude=.mypy_cache \
    --exclude=.hypothesis --exclude=.benchmarks . | tar -x -C "$SRC"
# Where the tests run: the same tree with src/ removed, so only the installed
# wheel can be imported.
RUN="$WORK/run"
rm -rf "$RUN"; cp -a "$SRC" "$RUN"; rm -rf "$RUN/src"

declare -A RESULT SECONDS_TAKEN SUMMARY
FAILED=0
for v in "${PYS[@]}"; do
  py="$PYENV_ROOT/versions/$v/bin/python3"
  log="$WORK/$v.log"
  t0=$(date +%s)
  echo "=== $v: build, install, test (log: $log)"
  (
    set -euo pipefail
    rm -rf "$WORK/venv-$v" "$WORK/wheels-$v"
    "$py" -m venv "$WORK/venv-$v"
    vpy="$WORK/venv-$v/bin/python"
    "$vpy" -m pip install -q --upgrade pip
    # Build the wheel from a scratch copy (setuptools writes build/ next to it).
    rm -rf "$WORK/build-$v"; cp -a "$SRC" "$WORK/build-$v"
    "$vpy" -m pip wheel -q --no-deps -w "$WORK/wheels-$v" "$WORK/build-$v"
    whl=$(ls "$WORK/wheels-$v"/norikv-*.whl)
    "$vpy" -m pip install -q "$whl[test]" mypy
    cd "$RUN"
    "$vpy" -I -c "import norikv, sys; print(sys.version.split()[0], norikv.__version__, norikv.__file__)"
    # A hung test fails the interpreter instead of hanging the script.
    timeout --kill-after=30 "${NORIKV_TEST_TIMEOUT:-1800}" \
      "$vpy" -I -m pytest -q -p no:cacheprovider "${PYTEST_ARGS[@]}"
  ) > "$log" 2>&1
  rc=$?
  SECONDS_TAKEN[$v]=$(( $(date +%s) - t0 ))
  SUMMARY[$v]=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$log" | tail -1 | tr -d '=' | sed 's/^ *//;s/ *$//')
  if [ $rc -eq 0 ]; then RESULT[$v]=ok; else RESULT[$v]=FAILED; FAILED=1; tail -30 "$log"; fi
  echo "=== $v: ${RESULT[$v]} in ${SECONDS_TAKEN[$v]}s: ${SUMMARY[$v]}"
done

echo
echo "| CPython | result | seconds | pytest |"
echo "|---|---|---|---|"
for v in "${PYS[@]}"; do
  echo "| $v | ${RESULT[$v]} | ${SECONDS_TAKEN[$v]} | ${SUMMARY[$v]:-} |"
done
echo "(CPython 3.14 is supported but tested only where pyenv has it; cibuildwheel tests it in CI.)"
if [ $FAILED -eq 0 ] && [ $KEEP -eq 0 ]; then rm -rf "$WORK"; else echo "logs kept in $WORK"; fi
exit $FAILED
