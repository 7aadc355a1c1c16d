#!/usr/bin/env bash
# MQTT benchmark (BENCHMARKS.md): the agent's durable QoS 1 rate vs Debian's mosquitto
# (publish -> subscriber) in the same run, latency at 10k msg/s, agent RSS.
#   scripts/bench-mqtt.sh [MESSAGES] [PUBLISHERS]     (default 1,000,000 and 8)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
if ! [ -x /usr/sbin/mosquitto ]; then
  SUDO=(); [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mosquitto
fi
cargo build --release --locked -p edge-agent -p cloud-hub --bins
cargo build --release --locked -p e2e-tests --bin mqtt_bench
exec target/release/mqtt_bench "${1:-1000000}" "${2:-8}"
