#!/usr/bin/env bash
# The peer comparison in one go: builds and runs `cargo bench --bench peers`
# (writes the inputs as .npy and times segloss on them), then
# `benches/peers/peers.py` (times the Python peers on the same files, checks
# their outputs against segloss's, prints one table). See README.md here.
#
#   bash benches/peers/run.sh [DIR] [--rounds N] [peers.py options: --recipe-all, --quick]
#
# DIR (about 320 MB of inputs, plus segloss.json and peers.json) defaults to
# $SEGLOSS_PEERS_DIR, else $CARGO_TARGET_DIR/peers, else target/peers.
# With --rounds N (N > 1), segloss and the peers run N times in turn, each
# round's JSON files are kept in DIR/round-K, and `rounds.py` prints each
# ratio per round with the median of the rounds (a load that comes and goes
# then falls on both sides). Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir="${SEGLOSS_PEERS_DIR:-${CARGO_TARGET_DIR:-target}/peers}"
if [[ $# -gt 0 && "$1" != -* ]]; then
    dir="$1"
    shift
fi
rounds=1
options=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds)
            rounds="${2:?--rounds needs a number}"
            shift 2
            ;;
        *)
            options+=("$1")
            shift
            ;;
    esac
done
if ! [[ "$rounds" =~ ^[1-9][0-9]*$ ]]; then
    echo "run.sh: --rounds takes a positive whole number, not '$rounds'" >&2
    exit 2
fi
# One thread for every library that would start a pool.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1

echo "== build (not timed)"
cargo bench --bench peers --no-run
# The build's output on disk before any timing: the kernel's writeback of
# it (and of the inputs, which the bench syncs) would share the cores.
sync

echo "== machine"
grep -m1 'model name' /proc/cpuinfo || true
echo "cores: $(nproc --all)"
rustc -V
python3 -V
echo "load before: $(uptime)"
start=$(date -u +%H:%M:%S)

status=0
for round in $(seq "$rounds"); do
    [[ "$rounds" -gt 1 ]] && echo "== round $round of $rounds"
    echo "== segloss"
    cargo bench --bench peers -- "$dir"

    echo "== peers"
    python3 benches/peers/peers.py "$dir" "${options[@]}" || status=$?
    if [[ "$rounds" -gt 1 ]]; then
        mkdir -p "$dir/round-$round"
        cp "$dir/segloss.json" "$dir/peers.json" "$dir/round-$round/"
    fi
done
if [[ "$rounds" -gt 1 ]]; then
    echo "== rounds"
    python3 benches/peers/rounds.py $(seq -f "$dir/round-%g" "$rounds")
fi

echo "== run ${start}–$(date -u +%H:%M:%S) UTC; load after: $(uptime)"
exit "$status"
