#!/usr/bin/env bash
# Installs the `timescale` storage tier's test server: PGlite (PostgreSQL 17.5
# in WebAssembly) with TimescaleDB 2.23 including the TSL features
# (compression, continuous aggregates, policies), served on a TCP port by
# tests/peers/pglite/server.mjs. It is an unofficial build and takes one
# connection at a time: good enough to prove the tier's SQL, not a database
# to run in production. Tests use it when QI_TEST_TIER=timescale.
#
# Needs Node.js and npm (Debian's nodejs + npm if missing). Output in
# $QI_PGLITE_DIR (default target/pglite). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${QI_PGLITE_DIR:-$root/target/pglite}
src=$root/tests/peers/pglite
say() { printf '\033[1m[pglite]\033[0m %s\n' "$*"; }

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  SUDO=()
  [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
  say "installing nodejs and npm from Debian"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi

mkdir -p "$out"
cp -f "$src/package.json" "$src/package-lock.json" "$src/server.mjs" "$out/"
if [ ! -f "$out/node_modules/.qi-lock" ] || ! cmp -s "$out/package-lock.json" "$out/node_modules/.qi-lock"; then
  say "installing PGlite + TimescaleDB (npm, pinned by package-lock.json)"
  (cd "$out" && npm ci --legacy-peer-deps --no-audit --no-fund --loglevel=error)
  cp -f "$out/package-lock.json" "$out/node_modules/.qi-lock"
fi
say "timescale tier server ready: node $out/server.mjs PORT"
