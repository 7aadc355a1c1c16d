#!/usr/bin/env bash
# Installs what building, running and testing the platform needs on Debian 12,
# and nothing else. Safe to run again: it only installs what is missing.
#
#   - Rust: must already be there (https://rustup.rs); this script does not touch it.
#   - PostgreSQL server binaries (Debian's postgresql-15): the demo and the tests
#     start their own throwaway clusters from them; no system cluster is needed,
#     so none is created.
#   - curl: the demo uses it to show readings arriving.
set -euo pipefail

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust first (https://rustup.rs), then run this again." >&2
  exit 1
fi

have_pg() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

missing=()
have_pg || missing+=(postgresql-15)
command -v curl >/dev/null 2>&1 || missing+=(curl)

if [ "${#missing[@]}" -eq 0 ]; then
  say "system packages present (PostgreSQL server binaries, curl)"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "need to install ${missing[*]} but am not root and have no sudo" >&2
  exit 1
fi

say "installing ${missing[*]} from Debian"
# The platform runs its own clusters; don't let the package create and start a
# system-wide one on port 5432.
"${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/50-qi-no-main.conf >/dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
have_pg || { echo "PostgreSQL server binaries still missing after install" >&2; exit 1; }
say "done"
