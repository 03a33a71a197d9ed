#!/usr/bin/env bash
# commit.sh "message" path... : commits exactly these paths (several people work
# in this tree at once), retrying while another commit holds the index lock.
set -uo pipefail
cd "$(dirname "$0")/.."
msg=$1; shift
for i in $(seq 1 30); do
  git add -- "$@" 2>/dev/null && git commit -q -m "$msg" -- "$@" && exit 0
  sleep 1
done
echo "commit failed" >&2; exit 1
