#!/usr/bin/env bash
# Starts an agent polling 1,000 Modbus TCP devices again and again and checks
# that every start gets its first measured row: the soak test for the sled
# deadlock that froze the agent 1 start in 28 (vendor/sled-0.34.7/PATCHED.md).
# Too long for CI (about 20 s a start); figures go to BENCHMARKS.md.
#
#   cargo build --release -p edge-agent -p simulator -p e2e-tests
#   scripts/soak-agent-starts.sh [STARTS (default 60)] [BIN_DIR (default target/release)]
#
# A start that prints no row within 45 s is a hang: the agent's thread stacks
# go to target/soak/hang-N.txt (gdb, when installed) and the script exits 1,
# leaving the hung agent running for a closer look.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
starts=${1:-60}
bin=$(cd "${2:-$root/target/release}" && pwd)
out=$root/target/soak
mkdir -p "$out"
# Each start's files (the agent's config and buffer) live in a directory of
# its own, removed after the start: a stopped bench leaves its temp dir behind.
work=$out/work
cleanup() {
    pkill -f "edge-agent --config $work" 2>/dev/null || true
    pkill -f "fleet-sim modbus" 2>/dev/null || true
    rm -rf "$work"
}
trap 'trap - EXIT; [ "${hung:-}" ] || cleanup' EXIT
ok=0
for i in $(seq 1 "$starts"); do
    log=$out/start-$i.log
    # The bench goes on to other layouts after its first row: stop it there.
    mkdir -p "$work"
    TMPDIR=$work QI_BIN_DIR=$bin "$bin/poll_fleet_bench" 3 1000 >"$log" 2>&1 &
    bench=$!
    for _ in $(seq 1 90); do
        grep -q "1000 ports x 1 unit ids" "$log" && break
        kill -0 "$bench" 2>/dev/null || break
        sleep 0.5
    done
    if grep -q "1000 ports x 1 unit ids" "$log"; then
        kill "$bench" 2>/dev/null || true
        wait "$bench" 2>/dev/null || true
        ok=$((ok + 1))
        echo "start $i ok: $(grep '1000 ports' "$log" | cut -d'|' -f5-8)"
        rm -f "$log"
    else
        echo "start $i: NO ROW within 45 s ($ok of $((i - 1)) before it were fine)"
        for pid in $(pgrep -f "edge-agent --config $work" || true); do
            if command -v gdb >/dev/null; then
                gdb -p "$pid" -batch -ex "thread apply all bt" >"$out/hang-$i.txt" 2>&1 || true
                echo "  stacks of agent $pid: $out/hang-$i.txt"
            fi
        done
        tail -5 "$log"
        hung=1
        exit 1
    fi
    cleanup
    sleep 1
done
echo "all $ok starts measured"
