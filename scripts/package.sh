#!/usr/bin/env bash
# Builds the Debian packages qi-edge-agent and qi-cloud-hub with cargo-deb from
# this checkout's own build (packaging/README.md):
#   scripts/package.sh                 # debug build (what CI and the install test use)
#   scripts/package.sh --release       # optimised build: the packages to ship
#   scripts/package.sh --deb-version 0.1.0-2 --out DIR
# The version defaults to the workspace's (Cargo.toml) with Debian revision 1.
# Writes target/debian/qi-edge-agent_<version>_<arch>.deb and qi-cloud-hub_...;
# prints their paths. cargo-deb comes from scripts/setup-packaging.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
profile=dev
version=
out=$root/target/debian
build=1
while [ $# -gt 0 ]; do
  case $1 in
    --release) profile=release ;;
    --deb-version) version=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--release] [--deb-version V] [--out DIR] [--no-build]" >&2; exit 2 ;;
  esac
  shift
done
export CARGO_INCREMENTAL=0
"$root/scripts/setup-packaging.sh" >&2
cargo_deb=${QI_PEERS_DIR:-$root/target/peers}/cargo/bin/cargo-deb
if [ "$build" = 1 ]; then
  cargo build --profile "$profile" -p edge-agent -p cloud-hub --bins >&2
fi
mkdir -p "$out"
for crate in edge-agent cloud-hub; do
  # --no-build: the binaries above; cargo-deb strips them (a debug build's line
  # tables would make the package ~10x larger for nothing on a gateway).
  "$cargo_deb" -p "$crate" --no-build --profile "$profile" --strip --fast \
    ${version:+--deb-version "$version"} -o "$out" -q
done
ls -1 "$out"/qi-edge-agent_"${version:-*}"_*.deb "$out"/qi-cloud-hub_"${version:-*}"_*.deb 2>/dev/null | sort -V | tail -n 2
