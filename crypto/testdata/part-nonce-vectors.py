"""Computes crypto/testdata/part-nonce-vectors.txt from the text of FORMAT.md section 13 alone
(a second implementation of the multipart part's synthetic nonces and chunk sealing).

    python3 crypto/testdata/part-nonce-vectors.py > crypto/testdata/part-nonce-vectors.txt

Needs the `cryptography` package (AES-GCM); everything else is the standard library.
"""
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CHUNK = 65536


def hkdf_expand(prk, info, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def seal_part(data_key, salt, part, plain):
    prk = hmac.new(salt, data_key, hashlib.sha256).digest()
    chunk_be = struct.pack(">I", CHUNK)
    ck = hkdf_expand(prk, b"chmura/v1 content key" + chunk_be, 32)
    nk = hkdf_expand(prk, b"chmura/v1 part nonce key" + chunk_be, 64)
    gmac_key, mac_key = nk[:32], nk[32:]
    chunks = [plain[o:o + CHUNK] for o in range(0, len(plain), CHUNK)] or [b""]
    count = 0 if part == 1 else len(chunks)
    nonces, sealed = [], b""
    for i, p in enumerate(chunks):
        final = i == len(chunks) - 1
        ident = struct.pack(">I", part << 18 | i << 1 | int(final))
        tag = AESGCM(gmac_key).encrypt(b"\0" * 12, b"", p)
        r = hmac.new(mac_key, ident + tag, hashlib.sha256).digest()[:8]
        nonce = ident + r
        aad = b"chmura/v1" + struct.pack(">IQBQ", part, i, int(final), count)
        sealed += nonce + AESGCM(ck).encrypt(nonce, p, aad)
        nonces.append(nonce.hex())
    return nonces, sealed


CASES = [
    ("one-short-chunk", bytes([7] * 32), bytes([9] * 32), 1, 100),
    ("three-chunks-and-a-tail", bytes([7] * 32), bytes([9] * 32), 1, 3 * CHUNK + 1000),
    ("part-2-whole-chunks", bytes(range(32)), bytes(range(32, 64)), 2, 2 * CHUNK),
    ("last-part-number", bytes([0xFF] * 32), bytes(32), 10000, CHUNK + 1),
    ("empty-last-part", bytes([1] * 32), bytes([2] * 32), 3, 0),
]

print("# Synthetic nonces of multipart parts (FORMAT.md section 13), computed by")
print("# part-nonce-vectors.py from the text of section 13 (Python hmac, hashlib, cryptography).")
print("# plaintext byte i = i mod 251; sealed_sha256 is the SHA-256 of the whole sealed part.")
for name, dk, salt, part, n in CASES:
    plain = bytes(i % 251 for i in range(n))
    nonces, sealed = seal_part(dk, salt, part, plain)
    print()
    print(f"name: {name}")
    print(f"data_key: {dk.hex()}")
    print(f"salt: {salt.hex()}")
    print(f"part: {part}")
    print(f"plaintext_len: {n}")
    print(f"nonces: {' '.join(nonces)}")
    print(f"sealed_len: {len(sealed)}")
    print(f"sealed_sha256: {hashlib.sha256(sealed).hexdigest()}")
