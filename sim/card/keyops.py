"""The card's RSA private-key operation: PKCS#1 v1.5 (block type 1) over data given as is.

The JPKI sign command receives a DigestInfo (or any short data) and pads it itself, like
OpenSC's "RSA-PKCS" mechanism expects; cryptography's high-level API only signs hashes it
wraps itself, so the padding and the CRT exponentiation are done here.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey


def max_input_len(key: RSAPrivateKey) -> int:
    return key.key_size // 8 - 11


def pkcs1_v15_sign(key: RSAPrivateKey, data: bytes) -> bytes:
    """EMSA-PKCS1-v1_5 block ``00 01 FF.. 00 || data``, then m^d mod n (via CRT)."""
    k = key.key_size // 8
    if len(data) > k - 11:
        raise ValueError(f"{len(data)} bytes do not fit a {key.key_size}-bit PKCS#1 v1.5 block")
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(data)) + b"\x00" + data
    m = int.from_bytes(block, "big")
    priv = key.private_numbers()
    p, q = priv.p, priv.q
    s1 = pow(m % p, priv.dmp1, p)
    s2 = pow(m % q, priv.dmq1, q)
    h = (priv.iqmp * (s1 - s2)) % p
    s = s2 + h * q
    return s.to_bytes(k, "big")
