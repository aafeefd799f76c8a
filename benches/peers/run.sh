#!/usr/bin/env bash
# The peer comparison in one go: builds and runs `cargo bench --bench peers`
# (writes the inputs as .npy and times segloss on them), then
# `benches/peers/peers.py` (times the Python peers on the same files, checks
# their outputs against segloss's, prints one table). See README.md here.
#
#   bash benches/peers/run.sh [DIR] [peers.py options: --recipe-all, --quick]
#
# DIR (about 320 MB of inputs, plus segloss.json and peers.json) defaults to
# $SEGLOSS_PEERS_DIR, else $CARGO_TARGET_DIR/peers, else target/peers.
# Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir="${SEGLOSS_PEERS_DIR:-${CARGO_TARGET_DIR:-target}/peers}"
if [[ $# -gt 0 && "$1" != -* ]]; then
    dir="$1"
    shift
fi
# One thread for every library that would start a pool.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

echo "== build (not timed)"
cargo bench --bench peers --no-run

echo "== machine"
grep -m1 'model name' /proc/cpuinfo || true
echo "cores: $(nproc --all)"
rustc -V
python3 -V
echo "load before: $(uptime)"
start=$(date -u +%H:%M:%S)

echo "== segloss"
cargo bench --bench peers -- "$dir"

echo "== peers"
status=0
python3 benches/peers/peers.py "$dir" "$@" || status=$?

echo "== run ${start}–$(date -u +%H:%M:%S) UTC; load after: $(uptime)"
exit "$status"
