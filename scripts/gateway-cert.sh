#!/usr/bin/env bash
# Certificates for mTLS between gateways and the hub, with openssl (1.1.1 or 3.x).
#
#   scripts/gateway-cert.sh ca      CA_DIR                       # once per CA
#   scripts/gateway-cert.sh gateway CA_DIR GATEWAY_ID OUT_DIR    # per gateway
#   scripts/gateway-cert.sh hub     CA_DIR HOST_OR_IP OUT_DIR    # the hub's server certificate
#
# `ca` writes CA_DIR/ca.crt and CA_DIR/ca.key (P-256, 10 years): a v3 CA
# certificate (basicConstraints CA:TRUE, keyUsage keyCertSign, cRLSign).
# `gateway` writes OUT_DIR/GATEWAY_ID.crt and .key: subject CN = GATEWAY_ID
# (the hub takes the gateway id from it), X.509 v3 with basicConstraints
# CA:FALSE, keyUsage digitalSignature, extendedKeyUsage clientAuth, 825 days
# (override with DAYS=...). `hub` does the same for a server: SAN = the host
# name or IP the gateways dial, extendedKeyUsage serverAuth.
#
# Why the explicit extensions: `openssl x509 -req` on OpenSSL 3.0 (Debian 12)
# issues an X.509 v1 certificate unless given extensions, and the hub's TLS
# stack (rustls/webpki) accepts only v3.
# Keys are written with mode 0600. Nothing is overwritten.
set -euo pipefail
umask 077

die() { echo "gateway-cert.sh: $*" >&2; exit 2; }
usage() { sed -n '2,8p' "$0" >&2; exit 2; }
command -v openssl >/dev/null 2>&1 || die "openssl not found (Debian: apt-get install openssl)"

days=${DAYS:-825}
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
fresh() { for f in "$@"; do [ ! -e "$f" ] || die "$f exists; not overwriting it"; done; }

# Signs a CSR made for KEY with CA_DIR's CA, adding the extensions in $4.
sign() {
  local ca_dir=$1 key=$2 subject=$3 ext=$4 out=$5
  [ -f "$ca_dir/ca.crt" ] && [ -f "$ca_dir/ca.key" ] || die "no CA in $ca_dir (run: $0 ca $ca_dir)"
  openssl req -new -key "$key" -subj "$subject" -out "$out.csr"
  printf '%s\n' "$ext" >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$ca_dir/ca.crt" -CAkey "$ca_dir/ca.key" \
    -CAcreateserial -CAserial "$ca_dir/ca.srl" -days "$days" -sha256 \
    -extfile "$out.ext" -out "$out.crt"
  rm -f "$out.csr" "$out.ext"
  chmod 0644 "$out.crt"
}

case "${1:-}" in
  ca)
    [ $# -eq 2 ] || usage
    dir=$2
    mkdir -p "$dir"
    fresh "$dir/ca.key" "$dir/ca.crt"
    newkey "$dir/ca.key"
    cat >"$dir/ca.ext" <<'EOF'
[req]
distinguished_name = dn
[dn]
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    # A name of its own: TLS finds a certificate's issuer by name, and two CAs
    # called the same would make a stranger's certificate look like a forgery.
    name="QI CA $(basename "$(cd "$dir" && pwd)") $(openssl rand -hex 4)"
    openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=$name" -days 3650 -sha256 \
      -config "$dir/ca.ext" -extensions v3_ca -out "$dir/ca.crt"
    rm -f "$dir/ca.ext"
    chmod 0644 "$dir/ca.crt"
    echo "CA \"$name\": $dir/ca.crt, key $dir/ca.key (keep it offline)"
    ;;
  gateway)
    [ $# -eq 4 ] || usage
    ca_dir=$2 id=$3 out=$4
    [[ "$id" =~ ^[A-Za-z0-9._-]{1,128}$ ]] || die "gateway id must be 1-128 of A-Z a-z 0-9 . _ -; got '$id'"
    mkdir -p "$out"
    fresh "$out/$id.key" "$out/$id.crt"
    newkey "$out/$id.key"
    sign "$ca_dir" "$out/$id.key" "/CN=$id" "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid" "$out/$id"
    echo "gateway $id: $out/$id.crt and $out/$id.key (uplink.client_cert / uplink.client_key)"
    ;;
  hub)
    [ $# -eq 4 ] || usage
    ca_dir=$2 host=$3 out=$4
    if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then san="IP:$host"; else san="DNS:$host"; fi
    mkdir -p "$out"
    fresh "$out/hub.key" "$out/hub.crt"
    newkey "$out/hub.key"
    sign "$ca_dir" "$out/hub.key" "/CN=$host" "basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid" "$out/hub"
    echo "hub $host: $out/hub.crt and $out/hub.key (grpc.tls_cert / grpc.tls_key)"
    ;;
  *) usage ;;
esac
