"""Cipher vectors made by vantage6's own RSACryptor (vantage6-common, from PyPI), for algonet's
implementation to be checked against, both ways.

usage:
  cipher_vectors.py make DIR     a new key in DIR/key.pem (as vantage6 makes them) and messages
                                 sealed for it; prints {"public_key", "messages": [{plain, sealed}]}
  cipher_vectors.py open KEY     reads JSON [{sealed}] on stdin, decrypts each with the private
                                 key in file KEY; prints [plain] (the bytes as text)
"""

import base64
import json
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import padding
from vantage6.common.encryption import RSACryptor

PLAINS = [
    b'{"method": "partial_average", "kwargs": {"column_name": "age"}}',
    b"{}",
    json.dumps({"text": "\u00e9\u00e8 \u2713", "n": list(range(200))}).encode(),
    # Longer than a few AES blocks, not a multiple of 16.
    json.dumps({"blob": "x" * 10007}).encode(),
]


def as_the_ui_seals(cryptor, plain):
    """vantage6's UI (JavaScript) wraps base64 of the shared key and encrypts base64 of the
    message: what RSACryptor's decryption allows for."""
    shared, iv = os.urandom(32), os.urandom(16)
    enc = cryptor._create_aes_cipher(shared, iv).encryptor()
    body = enc.update(base64.b64encode(plain)) + enc.finalize()
    wrapped = cryptor.private_key.public_key().encrypt(base64.b64encode(shared), padding.PKCS1v15())
    return "$".join(base64.b64encode(p).decode() for p in (wrapped, iv, body))


def main():
    mode, where = sys.argv[1], Path(sys.argv[2])
    if mode == "make":
        key = where / "key.pem"
        RSACryptor.create_new_rsa_key(key)
        cryptor = RSACryptor(key)
        messages = [
            {"plain": p.decode(), "sealed": cryptor.encrypt_bytes_to_str(p, cryptor.public_key_str)}
            for p in PLAINS
        ]
        messages.append({"plain": PLAINS[0].decode(), "sealed": as_the_ui_seals(cryptor, PLAINS[0])})
        print(json.dumps({"public_key": cryptor.public_key_str, "messages": messages}))
    elif mode == "open":
        cryptor = RSACryptor(where)
        print(json.dumps([cryptor.decrypt_str_to_bytes(m["sealed"]).decode()
                          for m in json.load(sys.stdin)]))


main()
