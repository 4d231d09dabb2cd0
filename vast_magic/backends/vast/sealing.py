"""The envelope key of each Vast deployment: ``home/vast/<name>/<tag>.key``, 32 random bytes, 0600.

Created on the first deploy of (name, tag) and kept across redeploys, so the
deployment's ``env`` string (where it reaches the workers, as the secret
``VAST_MAGIC_ENVELOPE_KEY``) does not change and force a hard update each
time. Never in the tarball, ``config.json``, the Manifest, the record or a log;
removed by teardown. The client seals every call with it (runtime/sealed.py).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ...errors import BackendError
from ...runtime import sealed
from .state import record_path

__all__ = ["key_path", "read_key", "ensure_key", "delete_key", "worker_env"]


def key_path(home: str | os.PathLike, name: str, tag: str) -> Path:
    return record_path(home, name, tag).with_suffix(".key")


def read_key(home: str | os.PathLike, name: str, tag: str) -> bytes:
    """The key calls are sealed with; a clear error when this machine never deployed (name, tag)."""
    path = key_path(home, name, tag)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) != 32:
        raise BackendError(f"{name}/{tag} has no envelope key on this machine ({path.name}); run app.ensure_ready() "
                           "to deploy it from here (workers refuse calls that are not signed with their key).")
    return key


def ensure_key(home: str | os.PathLike, name: str, tag: str) -> bytes:
    """The existing key, or a new one written atomically (0600); another process's key wins a race."""
    path = key_path(home, name, tag)
    if path.is_file():
        return read_key(home, name, tag)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        os.write(fd, sealed.new_key())
        os.close(fd)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        Path(tmp).unlink(missing_ok=True)
    return read_key(home, name, tag)


def delete_key(home: str | os.PathLike, name: str, tag: str) -> None:
    key_path(home, name, tag).unlink(missing_ok=True)


def worker_env(key: bytes, max_request_bytes: int) -> tuple[tuple[str, str], ...]:
    """What the workers need to open envelopes, as ``-e`` pairs of the deployment env (hex: safe to render)."""
    return ((sealed.KEY_ENV, key.hex()), (sealed.MAX_BYTES_ENV, str(int(max_request_bytes))))
