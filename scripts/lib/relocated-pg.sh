# Sourced by setup-timescaledb.sh and setup-citus.sh, which each build an
# extension into a relocated copy of PostgreSQL under the checkout. The
# tests start that copy's server as the `postgres` user, which cannot always
# enter the checkout (a private home directory): then the copy goes where it
# can, and `$out/bindir` records where the tests find the binaries.

as_postgres() {
  if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c '"$0" "$@"' -- "$@"; fi
}

# place_relocated PG PGVER OUT STAMP SHARED_DIR SHARED_VAR TIER
#   PG: the relocated copy; OUT/bindir gets the binaries' directory;
#   SHARED_DIR: where to copy it when `postgres` cannot enter PG (named by
#   the SHARED_VAR override in the message); STAMP: newer than the copy
#   means copy again; TIER: named in the last line.
place_relocated() {
  local pg=$1 pgver=$2 out=$3 stamp=$4 shared=$5 shared_var=$6 tier=$7
  local bindir=$pg/lib/postgresql/$pgver/bin
  if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1 && ! as_postgres test -x "$bindir/postgres"; then
    if [ ! -f "$shared/.complete" ] || [ "$stamp" -nt "$shared/.complete" ]; then
      say "the postgres user cannot enter $out; copying the build to $shared"
      mkdir -p "$(dirname "$shared")"
      chmod a+rx "$(dirname "$shared")"
      rm -rf "$shared.tmp"
      cp -a "$pg" "$shared.tmp"
      chmod -R a+rX "$shared.tmp"
      rm -rf "$shared"
      mv "$shared.tmp" "$shared"
      touch "$shared/.complete"
    fi
    bindir=$shared/lib/postgresql/$pgver/bin
    as_postgres test -x "$bindir/postgres" \
      || { echo "the postgres user cannot run $bindir/postgres either; set $shared_var to a directory it can enter" >&2; exit 1; }
  fi
  echo "$bindir" >"$out/bindir"
  chmod a+r "$out/bindir"
  say "$tier tier ready: $bindir"
}
