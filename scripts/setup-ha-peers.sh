#!/usr/bin/env bash
# Installs what the database failover run (scripts/ha-failover.sh) needs, none of it
# written here:
#   - Debian: etcd-server (etcd 3.4, the distributed configuration store Patroni keeps its
#     leader lock in), haproxy (routes the hub to whichever node Patroni's REST API calls
#     the primary), postgresql-15 (the nodes; scripts/setup.sh installs it too).
#   - PyPI: Patroni 4.1.5 with its etcd3 module and psycopg 3, in its own venv
#     (target/peers/ha-venv): Patroni pins urllib3/PyYAML/etc., kept apart from the test
#     peers' venv.
# etcd 3.4 serves the v3 API only unless started with --enable-v2: Patroni's `etcd3`
# module talks v3 (through etcd's gRPC gateway, JSON over HTTP), so no v2 flag is needed.
# Output goes to target/peers/ (override with QI_PEERS_DIR). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
peers=${QI_PEERS_DIR:-$root/target/peers}
say() { printf '\033[1m[ha-peers]\033[0m %s\n' "$*"; }

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
# Debian's python3, not one first on PATH: Patroni runs as `postgres`, and an
# interpreter under root's home (pyenv) is closed to that user.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -m venv --help >/dev/null 2>&1 || missing+=(python3 python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} from Debian"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  # policy-rc.d-less containers: the packages' services are not started here
  # (no systemd as PID 1); the failover run starts its own etcd and HAProxy.
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

patroni_version=4.1.5
venv=$peers/ha-venv
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("patroni"))' 2>/dev/null)" != "$patroni_version" ] \
  || ! "$venv/bin/python" -c 'import psycopg, etcd' 2>/dev/null \
  || [ "$(readlink -f "$venv/bin/python")" != "$(readlink -f /usr/bin/python3)" ]; then
  say "installing patroni $patroni_version (PyPI, etcd3 + psycopg 3) into $venv"
  mkdir -p "$peers"
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q "patroni[etcd3,psycopg3]==$patroni_version"
fi
# Patroni runs as `postgres` (PostgreSQL refuses root): it must be able to
# reach the venv.
if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1; then
  su postgres -s /bin/sh -c "'$venv/bin/patroni' --version" >/dev/null \
    || { echo "the postgres user cannot run $venv/bin/patroni (a directory on the way closed to it?)" >&2; exit 1; }
fi
say "etcd $(etcd --version 2>/dev/null | head -n1 | awk '{print $3}'), $(haproxy -v | head -n1 | awk '{print $1, $3}'), $("$venv/bin/patroni" --version)"
