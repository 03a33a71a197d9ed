#!/usr/bin/env bash
# Rebuilds the extension for the editable checkout without disturbing processes
# that have the old .so mapped: build elsewhere, then rename into place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" setup.py -q build_ext -b "$tmp" -t "$tmp/obj" >/dev/null
so=$(cd "$tmp/norikv" && ls _engine*.so)
cp "$tmp/norikv/$so" "src/norikv/.$so.new"
mv -f "src/norikv/.$so.new" "src/norikv/$so"
echo "built src/norikv/$so"
