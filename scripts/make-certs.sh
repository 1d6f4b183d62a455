#!/usr/bin/env bash
# Makes the certificates of the TLS tests and the demo's --tls in DIR, with openssl: a CA
# (ca.pem), a server certificate for 127.0.0.1, ::1 and localhost (server.pem), client
# certificates whose common names are the users root and app (root.pem, app.pem), and a CA
# that signed none of them (other-ca.pem). Keys beside them as NAME-key.pem. Valid 7 days.
#   scripts/make-certs.sh DIR
set -euo pipefail
dir=${1:?usage: make-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1-key.pem" 2>/dev/null; }
ca() {
  key "$1"
  openssl req -x509 -new -key "$1-key.pem" -out "$1.pem" -days 7 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
# leaf NAME CN [SUBJECT_ALT_NAMES]
leaf() {
  key "$1"
  openssl req -new -key "$1-key.pem" -out "$1.csr" -subj "/CN=$2"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -z "${3:-}" ] || echo "subjectAltName=$3"
  } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out "$1.pem" \
    -days 7 -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca ca "etcdc test CA"
ca other-ca "a CA nobody trusts"
leaf server etcd "IP:127.0.0.1,IP:::1,DNS:localhost"
leaf root root
leaf app app
rm -f ca.srl
