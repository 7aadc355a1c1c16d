#!/usr/bin/env bash
# The tools that build and check the Debian packages (scripts/package.sh,
# scripts/test-packages.sh): cargo-deb (crates.io, `cargo install --locked`,
# ~70 s once, kept in target/peers/cargo), and from Debian lintian, debootstrap
# and systemd-container (systemd-nspawn). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${QI_PEERS_DIR:-$(pwd)/target/peers}
cargo_deb_version=3.8.0
say() { printf '\033[1m[packaging]\033[0m %s\n' "$*"; }
SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
missing=()
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} from Debian"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "$("$peers/cargo/bin/cargo-deb" --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  say "installing cargo-deb $cargo_deb_version (crates.io) into $peers/cargo"
  CARGO_INCREMENTAL=0 cargo install --locked --quiet "cargo-deb@$cargo_deb_version" --root "$peers/cargo"
fi
