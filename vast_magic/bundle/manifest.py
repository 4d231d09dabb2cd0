"""The Manifest: a deployment described as canonical, comparable data.

``decide_tier`` compares two Manifests and backends store them as JSON, so a
Manifest holds digests and plain strings only, never pickle bytes or secret
values: sources by syntax-tree digest, values by canonical digest, secrets by
HMAC under a per-home random key. ``fingerprint()`` condenses the four groups
that map to tiers (code, image, autoscaling, tag) into four SHA-256 digests.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets as _random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import BundleError, ConfigError
from ..reports import Fingerprint
from ..secret import Secret
from ..capture.model import DeploymentRef, ImportDef, SourceDef, ValueDef, location, qualified
from .registry_spec import ContextSpec, RemoteSpec

__all__ = [
    "Pairs", "CODE_FIELDS", "IMAGE_FIELDS", "AUTOSCALING_FIELDS", "TAG_FIELDS", "Manifest", "build_manifest",
    "copy_digest", "secret_key"
]

Pairs = tuple[tuple[str, Any], ...]

# Which Manifest fields feed which fingerprint digest (and which tier, see tiers.py).
CODE_FIELDS = ("remotes", "contexts", "code", "pip", "apt", "runs", "copies")
IMAGE_FIELDS = ("image", "storage", "env", "secrets", "search", "ports", "python_mode", "docker_login")
AUTOSCALING_FIELDS = ("autoscaling",)
TAG_FIELDS = ("tag",)
_PAIR_FIELDS = ("remotes", "contexts", "code", "copies", "env", "secrets", "docker_login", "autoscaling")


@dataclass(frozen=True)
class Manifest:
    """What a deployment is, as digests; equal Manifests mean nothing to deploy."""

    name: str
    tag: str
    remotes: Pairs = ()        # (function name, digest of source + options + benchmark dataset), sorted
    contexts: Pairs = ()       # (class name, digest of source + constructor args), sorted
    code: Pairs = ()           # ("source:Q" | "import:Q" | "value:Q" | "deployment:Q" | "link:Q" | "file:Q", digest),
                               # sorted; Q = module.name (bare name for notebook cells), see capture.qualified
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    runs: tuple[Any, ...] = ()  # str (shell) or tuple of argv, in order
    copies: Pairs = ()         # (dst, digest of the source bytes), in order
    image: str = ""
    storage: float = 0
    env: Pairs = ()            # (key, value digest), sorted
    secrets: Pairs = ()        # (key, HMAC), sorted
    search: str = ""
    ports: tuple[tuple[int, str], ...] = ()
    python_mode: str = "default"
    docker_login: Pairs = ()   # (key, plain user/repo or HMAC of a password), sorted
    autoscaling: Pairs = ()    # the set fields, sorted

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in _PAIR_FIELDS:
            data[key] = [list(pair) for pair in getattr(self, key)]
        data["runs"] = [run if isinstance(run, str) else list(run) for run in self.runs]
        data["ports"] = [list(port) for port in self.ports]
        data["pip"], data["apt"] = list(self.pip), list(self.apt)
        return data

    def to_json(self) -> str:
        """Stable text: sorted keys, no whitespace choices left to chance."""
        return _canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        try:
            data = json.loads(text)
            known = {f.name for f in fields(cls)}
            values = {key: value for key, value in data.items() if key in known}
            for key in _PAIR_FIELDS:
                values[key] = tuple(tuple(pair) for pair in values.get(key, ()))
            values["runs"] = tuple(r if isinstance(r, str) else tuple(r) for r in values.get("runs", ()))
            values["ports"] = tuple((int(n), str(t)) for n, t in values.get("ports", ()))
            values["pip"], values["apt"] = tuple(values.get("pip", ())), tuple(values.get("apt", ()))
            return cls(**values)
        except (ValueError, TypeError, AttributeError) as exc:
            raise BundleError(f"stored manifest is not valid Manifest JSON ({exc}); redeploy to replace it.") from None

    def group(self, names: tuple[str, ...]) -> dict[str, Any]:
        data = self.to_dict()
        return {name: data[name] for name in names}

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(code=_digest(self.group(CODE_FIELDS)), image=_digest(self.group(IMAGE_FIELDS)),
                           autoscaling=_digest(self.group(AUTOSCALING_FIELDS)), tag=_digest(self.group(TAG_FIELDS)))


def _canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _digest(data: Any) -> str:
    return hashlib.sha256(_canonical_json(data).encode()).hexdigest()


def build_manifest(*, name: str, tag: str, image: Any, autoscaling: Any, code: Any,
                   remotes: tuple[RemoteSpec, ...], contexts: tuple[ContextSpec, ...], secret_key: bytes) -> Manifest:
    """Describe what would be deployed now; pure apart from reading ``copy`` sources."""
    registered = {spec.at for spec in remotes} | {spec.at for spec in contexts}
    return Manifest(
        name=name, tag=tag,
        remotes=tuple(sorted((spec.name, _remote_digest(spec, code)) for spec in remotes)),
        contexts=tuple(sorted((spec.name, _context_digest(spec, code)) for spec in contexts)),
        code=_code_items(code, registered),
        pip=tuple(image.pip), apt=tuple(image.apt),
        runs=tuple(run if isinstance(run, str) else tuple(run) for run in image.runs),
        copies=tuple((dst, copy_digest(src)) for src, dst in image.copies),
        image=image.from_image, storage=image.storage,
        env=tuple(sorted((k, _value_digest(v)) for k, v in image.env if not isinstance(v, Secret))),
        secrets=tuple(sorted((k, v.digest(secret_key)) for k, v in image.env if isinstance(v, Secret))),
        search=image.search, ports=tuple((int(n), str(t)) for n, t in image.ports),
        python_mode=image.python_mode,
        docker_login=tuple(sorted(_login_item(k, v, secret_key) for k, v in image.docker_login)),
        autoscaling=tuple(sorted(autoscaling.set_fields().items())),
    )


def _value_digest(obj: Any) -> str:
    from ..capture.digests import value_digest  # capture imports heavy helpers; load on use
    return value_digest(obj)


def _source_digest(code: Any, spec: RemoteSpec | ContextSpec) -> str:
    """Capture guarantees every registered name has source at its location; the manifest only reads it."""
    item = code.definition(spec.at)
    if item is None:
        raise BundleError(f"internal error: {spec.name!r} is registered at {spec.at!r}, where capture placed no "
                          "source; please report this with the code that defines it.")
    return item.digest


def _remote_digest(spec: RemoteSpec, code: Any) -> str:
    options = spec.to_dict()
    options["benchmark_dataset"] = None if spec.benchmark_dataset is None else _value_digest(list(spec.benchmark_dataset))
    return _digest({"source": _source_digest(code, spec), "options": options})


def _context_digest(spec: ContextSpec, code: Any) -> str:
    arguments = _value_digest([list(spec.args), dict(spec.kwargs), spec.at])
    return _digest({"source": _source_digest(code, spec), "arguments": arguments})


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_KINDS = {SourceDef: "source", ImportDef: "import", ValueDef: "value", DeploymentRef: "deployment"}


def _code_items(code: Any, registered: set[str]) -> Pairs:
    """One item per shipped definition, named by module so a tier reason says which module changed."""
    items = []
    for module in code.source_modules:
        for item in module.items:
            if not (isinstance(item, SourceDef) and location(module.name, item.name) in registered):
                digest = _text_digest(item.name) if isinstance(item, DeploymentRef) else item.digest
                items.append((f"{_KINDS[type(item)]}:{qualified(module.name, item.name)}", digest))
        items += [(f"link:{qualified(module.name, link.name)}", _text_digest(location(link.module, link.attr)))
                  for link in module.links]
    for file in code.file_modules:
        for part, digest in file.parts or (("", file.digest),):
            items.append((f"file:{file.module}" + (f".{part}" if part else ""), digest))
    return tuple(sorted(items))


def _login_item(key: str, value: Any, secret_key: bytes) -> tuple[str, str]:
    """User and repository are shown as they are; a password only ever as an HMAC."""
    if isinstance(value, Secret):
        return key, "hmac:" + value.digest(secret_key)
    if "pass" in key.lower():
        return key, "hmac:" + Secret(str(value)).digest(secret_key)
    return key, str(value)


def copy_digest(src: str) -> str:
    """Digest of a copied file's bytes, or of a directory's sorted walk (relative names and bytes)."""
    path = Path(src)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if not path.is_dir():
        raise ConfigError(f"image.copy source {src!r} does not exist; fix the path (it is resolved when you call copy).")
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix().encode()
        digest.update(len(rel).to_bytes(8, "big") + rel)
        content = file.read_bytes()
        digest.update(len(content).to_bytes(8, "big") + content)
    return digest.hexdigest()


def secret_key(home: Path) -> bytes:
    """The per-home HMAC key for secret digests: read it, or create it once (0600, atomically)."""
    home = Path(home)
    path = home / "secret.key"
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) == 32:
        return key
    if key:
        raise ConfigError(f"{path} is not a 32-byte key; delete it and deploy again (secrets will show as changed once).")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = home / f".secret.key.{os.getpid()}.{_random.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, _random.token_bytes(32))
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)           # fails if another process created it first: then theirs wins
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()
