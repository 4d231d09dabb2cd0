"""``Secret``: a value that must reach workers and nothing else.

A secret is never rendered: every repr and str is masked, it is not pickled,
and fingerprints see only an HMAC of it keyed by a per-home random key, so a
changed secret is detected without the digest revealing the value.
"""
from __future__ import annotations

import hashlib
import hmac
import os

from .errors import ConfigError

__all__ = ["Secret"]


class Secret:
    """A secret value for ``Image.env``: ``Secret("v")`` or ``Secret.from_env("NAME")``.

    Where it travels: locally, to the engine's state database (0600) and the workers' environment. On Vast,
    which has no secret store for deployments, as ``-e NAME=value`` in the deployment's ``env`` string (the
    ``PUT /api/v0/deployments/`` body): part of the deployment record, readable by anyone with your API key,
    and visible to the worker's host. Where it never goes: the tarball (``config.json``, ``manifest.json``),
    the fingerprint (only an HMAC of it), this machine's records, progress output and logs.
    """

    __slots__ = ("_value", "_env_name")

    def __init__(self, value: str, *, _env_name: str | None = None):
        if not isinstance(value, str):
            raise ConfigError(f"Secret value must be a str, got {type(value).__name__}.")
        self._value = value
        self._env_name = _env_name

    @classmethod
    def from_env(cls, name: str) -> "Secret":
        """Read the secret from the environment now, so a missing one fails early."""
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(f"Secret.from_env({name!r}): the environment variable {name} is not set; export it first.")
        return cls(value, _env_name=name)

    def reveal(self) -> str:
        """The plain value; only the code that hands it to a worker calls this."""
        return self._value

    def digest(self, key: bytes) -> str:
        """HMAC-SHA256 of the value under ``key`` (hex)."""
        return hmac.new(key, self._value.encode(), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"Secret.from_env({self._env_name!r})" if self._env_name else "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", hashlib.sha256(self._value.encode()).digest()))

    def __reduce__(self):
        raise TypeError("A Secret cannot be pickled; pass it through Image.env(...) so it reaches workers safely.")

    def __format__(self, spec: str) -> str:
        return repr(self)
