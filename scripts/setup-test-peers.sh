#!/usr/bin/env bash
# Installs and builds the independent peers the tests and benchmarks talk to,
# none of them written here:
#   - Debian: socat (pseudo-terminal pairs), mbpoll (command-line Modbus master),
#     libmodbus-dev (its example unit-test-server, built here with fault injection),
#     pkg-config, mosquitto-clients (mosquitto_pub / mosquitto_sub, MQTT interop),
#     openssl (scripts/gateway-cert.sh, run by the certificate tests), xmlsec1
#     (verifies the hub's signed XML certificates, tests/tests/certificates.rs),
#     poppler-utils (pdftotext, pdftoppm, pdfinfo: read and render the hub's PDF
#     reports), zbar-tools (zbarimg: decodes their QR code from the rendered page),
#     qpdf (checks their structure), tests/tests/reports.rs; chromium (the real
#     browser the local web page's tests drive, tests/tests/web_page.rs), prometheus (promtool:
#     lints both daemons' /metrics, checks and unit-tests packaging/prometheus/alerts.yml,
#     tests/tests/promtool.rs), systemd (systemd-analyze verify and security --offline
#     on systemd/*.service, tests/tests/systemd_units.rs); through
#     scripts/setup-packaging.sh: lintian, debootstrap, systemd-container, dpkg-dev,
#     and cargo-deb (crates.io, `cargo install --locked`, ~70 s once, target/peers/cargo)
#     for tests/tests/packaging.rs, whose Debian 12 root scripts/debian-root.sh
#     debootstraps once (~60 s, ~240 MB, target/peers/debian/bookworm; needs root).
#   - PyPI: pymodbus 3.x (its simulator serves register maps over TCP and RTU),
#     pyserial, paho-mqtt (a second MQTT client), schemathesis (checks the hub's REST
#     API against its OpenAPI document), aas-core3.0 (the aas-core-works SDK: checks
#     the hub's Asset Administration Shell export), jwcrypto (verifies the detached JWS
#     over the certificates' JSON), openpyxl (reads back the hub's xlsx exports,
#     tests/tests/exports.rs), playwright (drives Debian's chromium: its own
#     browser downloads are not used), in a venv under target/peers/venv.
#   - npm: oidc-provider (a real OpenID Connect issuer for the hub's single sign-on
#     tests), pinned with tests/peers/oidc/package-lock.json, under target/peers/node/oidc;
#     axe-core (accessibility checks of the agent's web page), pinned with
#     tests/peers/axe/package-lock.json, under target/peers/node/axe.
# Output goes to target/peers/ (override with QI_PEERS_DIR). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
peers=${QI_PEERS_DIR:-$root/target/peers}
say() { printf '\033[1m[peers]\033[0m %s\n' "$*"; }

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo)

missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v mbpoll >/dev/null 2>&1 || missing+=(mbpoll)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -d /usr/share/doc/libmodbus-dev/examples ] || missing+=(libmodbus-dev)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v xmlsec1 >/dev/null 2>&1 || missing+=(xmlsec1)
command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
command -v zbarimg >/dev/null 2>&1 || missing+=(zbar-tools)
command -v qpdf >/dev/null 2>&1 || missing+=(qpdf)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]} from Debian"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

mkdir -p "$peers/bin" "$peers/src"

if [ ! -x "$peers/venv/bin/python" ] || ! "$peers/venv/bin/python" -c 'import pymodbus, serial, paho.mqtt' 2>/dev/null; then
  say "installing pymodbus and paho-mqtt (PyPI) into $peers/venv"
  python3 -m venv "$peers/venv"
  "$peers/venv/bin/pip" install -q 'pymodbus[serial]==3.16.1' 'pyserial==3.5' 'paho-mqtt==2.1.0'
fi
schemathesis_version=4.32.5
if [ "$("$peers/venv/bin/schemathesis" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -n1)" != "$schemathesis_version" ]; then
  say "installing schemathesis $schemathesis_version (PyPI) into $peers/venv"
  "$peers/venv/bin/pip" install -q "schemathesis==$schemathesis_version"
fi
aas_core_version=1.1.4
if [ "$("$peers/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("aas-core3.0"))' 2>/dev/null)" != "$aas_core_version" ]; then
  say "installing aas-core3.0 $aas_core_version (PyPI) into $peers/venv"
  # Through the venv's python, not its pip script: a venv copied from another
  # checkout keeps that checkout's path in its scripts' #! lines.
  "$peers/venv/bin/python" -m pip install -q "aas-core3.0==$aas_core_version"
fi

jwcrypto_version=1.6.1
if [ "$("$peers/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("jwcrypto"))' 2>/dev/null)" != "$jwcrypto_version" ]; then
  say "installing jwcrypto $jwcrypto_version (PyPI) into $peers/venv"
  "$peers/venv/bin/python" -m pip install -q "jwcrypto==$jwcrypto_version"
fi

openpyxl_version=3.1.5
if [ "$("$peers/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("openpyxl"))' 2>/dev/null)" != "$openpyxl_version" ]; then
  say "installing openpyxl $openpyxl_version (PyPI) into $peers/venv"
  "$peers/venv/bin/python" -m pip install -q "openpyxl==$openpyxl_version"
fi
# Playwright's Python package only: the tests launch /usr/bin/chromium
# (Debian's), never `playwright install` (it downloads browsers).
playwright_version=1.65.3
if [ "$("$peers/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null)" != "$playwright_version" ]; then
  say "installing playwright $playwright_version (PyPI) into $peers/venv"
  "$peers/venv/bin/python" -m pip install -q "playwright==$playwright_version"
fi

# libmodbus's unit-test-server, unchanged except that the port comes from
# $UT_PORT instead of the hard-coded 1502 (so tests can run side by side).
ex=/usr/share/doc/libmodbus-dev/examples
cflags="-O2 -Wall $(pkg-config --cflags libmodbus)"
libs="$(pkg-config --libs libmodbus)"
if [ ! -x "$peers/bin/unit-test-server" ] || [ "$ex/unit-test-server.c" -nt "$peers/bin/unit-test-server" ]; then
  say "building libmodbus unit-test-server"
  for f in "$ex"/unit-test-server.c "$ex"/unit-test.h; do
    if [ -f "$f" ]; then cp -f "$f" "$peers/src/"; elif [ -f "$f.gz" ]; then gzip -dc "$f.gz" >"$peers/src/$(basename "$f")"; fi
  done
  sed -i 's/modbus_new_tcp("127\.0\.0\.1", 1502)/modbus_new_tcp("127.0.0.1", getenv("UT_PORT") ? atoi(getenv("UT_PORT")) : 1502)/' \
    "$peers/src/unit-test-server.c"
  grep -q 'getenv("UT_PORT")' "$peers/src/unit-test-server.c" || { echo "could not patch unit-test-server.c" >&2; exit 1; }
  gcc $cflags -include stdlib.h -I"$peers/src" -o "$peers/bin/unit-test-server" "$peers/src/unit-test-server.c" $libs
fi
if [ ! -x "$peers/bin/modbus_loop" ] || [ bench/modbus_loop.c -nt "$peers/bin/modbus_loop" ]; then
  say "building bench/modbus_loop.c (libmodbus reference loop)"
  gcc $cflags -pthread -o "$peers/bin/modbus_loop" bench/modbus_loop.c $libs
fi
# oidc-provider: installed exactly as locked (npm ci) into its own folder; the
# lock file is copied along so a changed lock reinstalls.
oidc_src=tests/peers/oidc
oidc_dst=$peers/node/oidc
if ! cmp -s "$oidc_src/package-lock.json" "$oidc_dst/package-lock.json" \
  || [ ! -f "$oidc_dst/node_modules/oidc-provider/package.json" ]; then
  say "installing oidc-provider (npm) into $oidc_dst"
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  [ "$node_major" -ge 20 ] || { echo "oidc-provider needs Node.js >= 20 (have $(node --version 2>/dev/null || echo none))" >&2; exit 1; }
  rm -rf "$oidc_dst"
  mkdir -p "$oidc_dst"
  cp "$oidc_src/package.json" "$oidc_src/package-lock.json" "$oidc_dst/"
  (cd "$oidc_dst" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
# axe-core: the same way, from its own lock file.
axe_src=tests/peers/axe
axe_dst=$peers/node/axe
if ! cmp -s "$axe_src/package-lock.json" "$axe_dst/package-lock.json" \
  || [ ! -f "$axe_dst/node_modules/axe-core/axe.min.js" ]; then
  say "installing axe-core (npm) into $axe_dst"
  rm -rf "$axe_dst"
  mkdir -p "$axe_dst"
  cp "$axe_src/package.json" "$axe_src/package-lock.json" "$axe_dst/"
  (cd "$axe_dst" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
scripts/setup-packaging.sh
if [ "$(id -u)" -eq 0 ]; then scripts/debian-root.sh >/dev/null; fi
say "peers ready in $peers"
