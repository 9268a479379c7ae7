#!/usr/bin/env bash
# Generate TLS material for the SMTP test server (tests/smtp/server.py).
#
#   tests/smtp/make_cert.sh DIR
#
# writes into DIR:
#   ca.pem    a throwaway test CA (CA:TRUE); the client trusts this one
#   cert.pem  leaf certificate for localhost / 127.0.0.1, signed by the CA
#             (only the leaf, no chain), X.509 v3, CA:FALSE,
#             keyUsage=digitalSignature,keyEncipherment,
#             extendedKeyUsage=serverAuth, SAN DNS:localhost, IP:127.0.0.1
#   key.pem   the leaf's private key (RSA 2048, PKCS#8, unencrypted)
#
# A leaf signed by a separate CA is used because rustls/webpki rejects a
# self-signed end-entity certificate used as its own trust anchor.
# The CA's private key is discarded.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTPUT_DIR" >&2
    exit 2
fi
out=$1

if ! command -v openssl >/dev/null 2>&1; then
    echo "make_cert.sh: error: the 'openssl' command is not installed" \
         "(Debian: apt-get install openssl)" >&2
    exit 1
fi

mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

days=3650

cat >"$work/ca.ext" <<'EOF'
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF

cat >"$work/leaf.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

serial() { echo "0x$(openssl rand -hex 16)"; }

# Test CA
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$work/ca.key" 2>/dev/null
openssl req -new -key "$work/ca.key" -subj "/CN=credit-sentinel test CA" \
    -out "$work/ca.csr"
openssl x509 -req -in "$work/ca.csr" -signkey "$work/ca.key" \
    -days "$days" -set_serial "$(serial)" -sha256 \
    -extfile "$work/ca.ext" -out "$work/ca.pem" 2>/dev/null

# Leaf for localhost / 127.0.0.1
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
    -out "$work/key.pem" 2>/dev/null
openssl req -new -key "$work/key.pem" -subj "/CN=localhost" \
    -out "$work/leaf.csr"
openssl x509 -req -in "$work/leaf.csr" \
    -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -days "$days" -set_serial "$(serial)" -sha256 \
    -extfile "$work/leaf.ext" -out "$work/cert.pem" 2>/dev/null

# Sanity: the leaf must verify against the CA for localhost and 127.0.0.1.
openssl verify -CAfile "$work/ca.pem" -purpose sslserver \
    -verify_hostname localhost "$work/cert.pem" >/dev/null
openssl verify -CAfile "$work/ca.pem" -purpose sslserver \
    -verify_ip 127.0.0.1 "$work/cert.pem" >/dev/null

install -m 0644 "$work/ca.pem" "$out/ca.pem"
install -m 0644 "$work/cert.pem" "$out/cert.pem"
install -m 0600 "$work/key.pem" "$out/key.pem"
echo "make_cert.sh: wrote $out/ca.pem $out/cert.pem $out/key.pem" >&2
