#!/usr/bin/env bash
# A minimal Debian 12 (bookworm) root with systemd, for the package install
# test (tests/tests/packaging.rs boots a copy of it with systemd-nspawn).
# debootstrap runs once (~60 s, ~240 MB, from deb.debian.org or $QI_DEBIAN_MIRROR);
# later calls print the cached root's path at once. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${QI_PEERS_DIR:-$(pwd)/target/peers}
dest=$peers/debian/bookworm
mirror=${QI_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bump to rebuild the cached root when the package list changes.
stamp="v1 minbase systemd systemd-sysv dbus adduser"
if [ "$(cat "$dest/.qi-root" 2>/dev/null)" != "$stamp" ]; then
  command -v debootstrap >/dev/null 2>&1 || scripts/setup-packaging.sh >&2
  rm -rf "$dest" "$dest.tmp"
  mkdir -p "$(dirname "$dest")"
  printf '\033[1m[debian-root]\033[0m debootstrap bookworm into %s\n' "$dest" >&2
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,adduser \
    bookworm "$dest.tmp" "$mirror" >&2
  # No getty on a console nobody reads; the container boots to multi-user.
  rm -f "$dest.tmp/etc/systemd/system/getty.target.wants/"*
  echo "$stamp" >"$dest.tmp/.qi-root"
  mv "$dest.tmp" "$dest"
fi
echo "$dest"
