#!/usr/bin/env bash
# Builds the `apache` storage tier for tests and benchmarks: TimescaleDB's
# Apache-2 build, from Debian trixie's source package (2.19.3+dfsg, which
# supports PostgreSQL 15), against bookworm's PostgreSQL 15.
#
# Nothing is installed into the system's PostgreSQL: the result is a relocated
# copy of Debian's PostgreSQL 15 with the extension added, under
#   $QI_TSDB_DIR (default target/timescaledb)/pg/lib/postgresql/15/bin
# PostgreSQL finds its share/ and lib/ directories relative to its binaries, so
# the copy loads `timescaledb` while the system's binaries stay as they were.
# Tests use it when QI_TEST_TIER=apache (see tests/src/pg.rs), from the
# directory this script writes to $QI_TSDB_DIR/bindir.
#
# Run as root, the tests start PostgreSQL as the `postgres` user, which must be
# able to enter every directory on the way to the binaries. A checkout in a
# private directory (mode 700: root's home, a `mktemp -d` folder) is not; then
# the build is copied to $QI_TSDB_SHARED_DIR (default /var/lib/qi-test) and
# that copy is the one recorded in bindir.
#
# Needs from Debian: cmake, postgresql-server-dev-15 (this upgrades the PG 15
# minor release to bookworm-security's, as any security update would), xz-utils.
# Idempotent: a finished build is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${QI_TSDB_DIR:-$root/target/timescaledb}
say() { printf '\033[1m[timescaledb]\033[0m %s\n' "$*"; }

version=2.19.3+dfsg
tarball=timescaledb_${version}.orig.tar.xz
sha256=09fd11191768c220b071f61a108df9bd1df5522fbe4e7c2229f30f69b195454a
url=http://deb.debian.org/debian/pool/main/t/timescaledb/$tarball
pgver=15
pg=$out/pg
stamp=$out/.built-$version-pg$pgver

# Records where the tests find the binaries (see the top of this file).
. "$root/scripts/lib/relocated-pg.sh"
place() {
  place_relocated "$pg" "$pgver" "$out" "$stamp" \
    "${QI_TSDB_SHARED_DIR:-/var/lib/qi-test}/timescaledb-$version-pg$pgver" QI_TSDB_SHARED_DIR apache
}
if [ -f "$stamp" ] && [ -x "$pg/lib/postgresql/$pgver/bin/postgres" ]; then
  place
  exit 0
fi

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
[ -x /usr/lib/postgresql/$pgver/bin/pg_config ] && [ -d /usr/include/postgresql/$pgver/server ] \
  || missing+=(postgresql-server-dev-$pgver)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} from Debian"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$out"
if [ ! -f "$out/$tarball" ] || ! echo "$sha256  $out/$tarball" | sha256sum -c --quiet - 2>/dev/null; then
  say "downloading $tarball from Debian"
  curl -fsSL -o "$out/$tarball.part" "$url"
  echo "$sha256  $out/$tarball.part" | sha256sum -c --quiet - \
    || { echo "checksum mismatch for $tarball" >&2; exit 1; }
  mv "$out/$tarball.part" "$out/$tarball"
fi

src=$out/src
rm -rf "$src" "$out/build" "$out/stage" "$pg"
mkdir -p "$src"
tar -xJf "$out/$tarball" -C "$src" --strip-components=1

say "building (cmake, APACHE_ONLY)"
cmake -S "$src" -B "$out/build" \
  -DCMAKE_BUILD_TYPE=Release \
  -DPG_CONFIG=/usr/lib/postgresql/$pgver/bin/pg_config \
  -DAPACHE_ONLY=1 -DUSE_TELEMETRY=OFF -DSEND_TELEMETRY_DEFAULT=OFF \
  -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF >"$out/cmake.log" 2>&1 \
  || { tail -30 "$out/cmake.log" >&2; exit 1; }
make -C "$out/build" -j"$(nproc)" >"$out/make.log" 2>&1 || { tail -30 "$out/make.log" >&2; exit 1; }
make -C "$out/build" install DESTDIR="$out/stage" >>"$out/make.log" 2>&1 || { tail -30 "$out/make.log" >&2; exit 1; }

say "assembling a relocated PostgreSQL $pgver with the extension in $pg"
mkdir -p "$pg/lib/postgresql" "$pg/share/postgresql"
cp -a /usr/lib/postgresql/$pgver "$pg/lib/postgresql/"
cp -a /usr/share/postgresql/$pgver "$pg/share/postgresql/"
cp -a "$out/stage/usr/lib/postgresql/$pgver/lib/." "$pg/lib/postgresql/$pgver/lib/"
cp -a "$out/stage/usr/share/postgresql/$pgver/extension/." "$pg/share/postgresql/$pgver/extension/"
# The cluster runs as the `postgres` user when the tests run as root.
chmod -R a+rX "$out"
[ -f "$pg/share/postgresql/$pgver/extension/timescaledb.control" ] \
  || { echo "timescaledb.control missing after install" >&2; exit 1; }
rm -rf "$out/build" "$out/stage" "$src"
touch "$stamp"
place
