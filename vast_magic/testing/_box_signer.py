"""The box's ``/route/`` signatures: an RSA key that lives only in a helper process of the official venv.

The official worker checks ``auth_data.signature``: base64 RSA PKCS#1 v1.5
over SHA-256 of ``json.dumps({"url": url}, indent=4, sort_keys=True)``, with
the PEM key it fetched from ``GET {REPORT_ADDR}/pubkey/`` (reference 3.2). The
venv that runs that worker already holds pycryptodome (the worker imports it),
so the box signs there: one long-lived helper generates a fresh 2048-bit key,
prints the public PEM, then answers one signature per URL line. vast_magic
itself gains no crypto dependency, and the private key never leaves that
process. Only the URL is signed, so each worker URL is signed once and cached.
"""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

__all__ = ["HELPER", "SignerError", "Signer"]

HELPER = r'''
import base64, json, sys
from Crypto.Hash import SHA256
from Crypto.PublicKey import RSA
from Crypto.Signature import pkcs1_15

key = RSA.generate(2048)
signer = pkcs1_15.new(key)
print(json.dumps({"pubkey": key.publickey().export_key().decode()}), flush=True)
for line in sys.stdin:
    message = json.dumps({"url": json.loads(line)["url"]}, indent=4, sort_keys=True).encode()
    print(json.dumps({"signature": base64.b64encode(signer.sign(SHA256.new(message))).decode()}), flush=True)
'''


class SignerError(RuntimeError):
    """The signing helper could not start or stopped answering."""


class Signer:
    def __init__(self, python: Path):
        self._process = subprocess.Popen([str(python), "-c", HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._lock = threading.Lock()
        self._signatures: dict[str, str] = {}
        self.pubkey = self._read("pubkey")

    def _read(self, field: str) -> str:
        line = self._process.stdout.readline()
        try:
            return json.loads(line)[field]
        except (ValueError, KeyError, TypeError):
            self.close()
            raise SignerError(f"the box's signing helper failed: {line.strip() or self._process.stderr.read()[-1000:]}")

    def sign(self, url: str) -> str:
        with self._lock:
            if url not in self._signatures:
                self._process.stdin.write(json.dumps({"url": url}) + "\n")
                self._process.stdin.flush()
                self._signatures[url] = self._read("signature")
            return self._signatures[url]

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self) -> None:
        """End the helper: close its input, then kill it by PID if it lingers."""
        if self._process.poll() is None:
            try:
                self._process.stdin.close()
                self._process.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdout, self._process.stderr):
            stream.close()
