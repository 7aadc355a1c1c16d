#!/usr/bin/env bash
# Builds the `citus` storage tier for tests and benchmarks: Citus 13.2.2
# (distributed PostgreSQL, AGPL-3.0, a separate database server: nothing of it
# is linked into the project's binaries) against Debian's PostgreSQL 15.
#
# The source is the vendored release tarball (Citus is in no registry these
# machines reach): $QI_CITUS_TARBALL, default ../shared/vendor/citus-13.2.2.tar.gz
# next to this checkout; its sha256 is checked.
#
# Nothing is installed into the system's PostgreSQL: the result is a relocated
# copy of Debian's PostgreSQL 15 with citus.so added, under
#   $QI_CITUS_DIR (default target/citus)/pg/lib/postgresql/15/bin
# (PostgreSQL finds share/ and lib/ relative to its binaries). Tests use it when
# QI_TEST_TIER=citus (see tests/src/pg.rs), from the directory this script
# writes to $QI_CITUS_DIR/bindir. Run as root with a checkout the `postgres`
# user cannot enter, the build is copied to $QI_CITUS_SHARED_DIR (default
# /var/lib/qi-test) and that copy is recorded instead (as setup-timescaledb.sh).
#
# Build dependencies from Debian (installed when missing): postgresql-server-dev-15,
# liblz4-dev, libzstd-dev, libkrb5-dev (PostgreSQL's server headers include
# gssapi), libssl-dev, libselinux1-dev, libpam0g-dev, libxslt1-dev,
# libreadline-dev, make, gcc. Idempotent: a finished build is reused (a stamp
# file), so a rerun takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=${QI_CITUS_DIR:-$root/target/citus}
say() { printf '\033[1m[citus]\033[0m %s\n' "$*"; }

version=13.2.2
sha256=c8fc76dc8294636a52b1a0dd75a20d8b4a36937df6443e30ca84d8d0464a6bb9
tarball=${QI_CITUS_TARBALL:-$root/../shared/vendor/citus-$version.tar.gz}
pgver=15
pg=$out/pg
stamp=$out/.built-$version-pg$pgver

# Records where the tests find the binaries (see the top of this file).
. "$root/scripts/lib/relocated-pg.sh"
place() {
  place_relocated "$pg" "$pgver" "$out" "$stamp" \
    "${QI_CITUS_SHARED_DIR:-/var/lib/qi-test}/citus-$version-pg$pgver" QI_CITUS_SHARED_DIR citus
}

if [ -f "$stamp" ] && [ -x "$pg/lib/postgresql/$pgver/bin/postgres" ]; then
  place
  exit 0
fi

if [ ! -f "$tarball" ]; then
  echo "Citus source not found at $tarball: set QI_CITUS_TARBALL to citus-$version.tar.gz (sha256 $sha256; a git archive of citusdata/citus tag v$version)" >&2
  exit 1
fi
echo "$sha256  $tarball" | sha256sum -c --quiet - \
  || { echo "checksum mismatch for $tarball (expected sha256 $sha256)" >&2; exit 1; }

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)
missing=()
for p in postgresql-server-dev-$pgver liblz4-dev libzstd-dev libkrb5-dev libssl-dev \
  libselinux1-dev libpam0g-dev libxslt1-dev libreadline-dev make gcc; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} from Debian"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi

src=$out/src
rm -rf "$src" "$out/stage" "$pg"
mkdir -p "$src"
tar -xzf "$tarball" -C "$src" --strip-components=1

# PostgreSQL 15.20 exports have_createdb_privilege(), which Citus 13.2.2 also
# defines as a static inline for PostgreSQL < 16 ("static declaration follows
# non-static declaration"). Citus' copy is renamed; its callers follow the macro.
compat=$src/src/include/pg_version_compat.h
sed -i 's/^have_createdb_privilege(void)$/#define have_createdb_privilege citus_have_createdb_privilege\n&/' "$compat"
grep -q '^#define have_createdb_privilege citus_have_createdb_privilege' "$compat" \
  || { echo "could not apply the have_createdb_privilege fix to $compat (source changed?)" >&2; exit 1; }

say "building Citus $version (configure, make -j$(nproc))"
(cd "$src" && PG_CONFIG=/usr/lib/postgresql/$pgver/bin/pg_config ./configure --without-libcurl) \
  >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log" >&2; exit 1; }
make -C "$src" -j"$(nproc)" >"$out/make.log" 2>&1 || { tail -30 "$out/make.log" >&2; exit 1; }
make -C "$src" install DESTDIR="$out/stage" >>"$out/make.log" 2>&1 || { tail -30 "$out/make.log" >&2; exit 1; }

say "assembling a relocated PostgreSQL $pgver with Citus in $pg"
mkdir -p "$pg/lib/postgresql" "$pg/share/postgresql"
cp -a /usr/lib/postgresql/$pgver "$pg/lib/postgresql/"
cp -a /usr/share/postgresql/$pgver "$pg/share/postgresql/"
cp -a "$out/stage/usr/lib/postgresql/$pgver/lib/." "$pg/lib/postgresql/$pgver/lib/"
cp -a "$out/stage/usr/share/postgresql/$pgver/extension/." "$pg/share/postgresql/$pgver/extension/"
# The cluster runs as the `postgres` user when the tests run as root.
chmod -R a+rX "$out"
[ -f "$pg/share/postgresql/$pgver/extension/citus.control" ] && [ -f "$pg/lib/postgresql/$pgver/lib/citus.so" ] \
  || { echo "citus.control or citus.so missing after install" >&2; exit 1; }
rm -rf "$out/stage" "$src"
touch "$stamp"
place
