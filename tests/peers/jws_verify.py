"""Verifies a detached JWS (RFC 7515 appendix F) with jwcrypto, a JOSE
implementation nobody on the project wrote: the leaf certificate of the
header's x5c must be issued by the trusted CA, and the signature over the
separately sent payload must verify with its key.

usage: jws_verify.py JWS_FILE PAYLOAD_FILE CA_PEM   (exit 0: valid)
"""
import base64
import json
import sys

from cryptography import x509
from jwcrypto import jwk, jws


def main() -> int:
    token = open(sys.argv[1]).read().strip()
    payload = open(sys.argv[2], "rb").read()
    ca = x509.load_pem_x509_certificate(open(sys.argv[3], "rb").read())
    header_b64 = token.split(".")[0]
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    leaf = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
    try:
        leaf.verify_directly_issued_by(ca)
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        print(f"x5c leaf not issued by the trusted CA: {e!r}")
        return 1
    t = jws.JWS()
    t.deserialize(token)
    try:
        t.verify(jwk.JWK.from_pyca(leaf.public_key()), alg="ES256", detached_payload=payload)
    except Exception as e:  # noqa: BLE001
        print(f"JWS refused: {e!r}")
        return 1
    print("JWS OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
