"""``Image``: the worker image as data, built step by step and checked at each step.

Every chained call (``pip_install``, ``env``, ``require``, ...) records data,
never runs anything, so the image can be fingerprinted, diffed into tier
reasons and shipped. Each step is idempotent because notebook cells get run
twice: package lists drop repeats, ``env`` is a mapping, a later ``require``
bound replaces the earlier one on the same column and op, and an exact repeat
of a script, command or copy is ignored. Bad input is a ``ConfigError`` at the
call, saying the fix. ``spec()`` freezes the result into an ``ImageSpec``.
"""
from __future__ import annotations

import math
import numbers
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ._env_string import NAME_PATTERN, check_value
from .errors import ConfigError
from .pricing import DEFAULT_PRICING, offer_type
from .query import Query, default_requirements
from .secret import Secret

__all__ = ["DEFAULT_IMAGE", "DEFAULT_STORAGE", "DEFAULT_PORT", "OffersFunction", "ImageSpec", "Image"]

DEFAULT_IMAGE = "vastai/base-image:@vastai-automatic-tag"
DEFAULT_STORAGE = 16
#: the worker port every image publishes, like the official SDK
DEFAULT_PORT = (3000, "tcp")

#: ``offers(spec, api_key) -> OfferPreview``: how an Image previews matching Vast offers (also given
#: ``pricing=`` when another mode than on-demand is asked)
OffersFunction = Callable[..., Any]

_PORT_TYPES = ("tcp", "udp")
_LOGIN_KEYS = ("docker_login_user", "docker_login_pass", "docker_login_repo")


@dataclass(frozen=True)
class ImageSpec:
    """A frozen image: what the manifest digests, the bundle writes and the backends apply."""

    from_image: str
    storage: float
    pip: tuple[str, ...]
    apt: tuple[str, ...]
    env: tuple[tuple[str, str | Secret], ...]          # insertion order of first set
    requirements: Query
    search: str                                        # str(requirements): the official search string
    runs: tuple[str | tuple[str, ...], ...]            # run_script strings and run_cmd argv, in call order
    copies: tuple[tuple[str, str], ...]                # (absolute src, dst)
    venv: str | None
    system_python: bool
    ports: tuple[tuple[int, str], ...]                 # sorted
    docker_login: tuple[tuple[str, str | Secret], ...]

    def plain_env(self) -> tuple[tuple[str, str], ...]:
        """Env values that may be written to config.json."""
        return tuple((k, v) for k, v in self.env if not isinstance(v, Secret))

    def secret_env(self) -> tuple[tuple[str, Secret], ...]:
        """Env values that reach workers only through the backend's secret channel."""
        return tuple((k, v) for k, v in self.env if isinstance(v, Secret))

    @property
    def python_mode(self) -> str:
        """``"default"`` (the SDK's venv), ``"system"`` or ``"venv:/path"``."""
        if self.system_python:
            return "system"
        return f"venv:{self.venv}" if self.venv else "default"


def _text(value: Any, what: str, fix: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}; {fix}.")
    return value


def _package(value: Any, step: str) -> str:
    name = _text(value, f"{step} package", f"pass one package per argument, e.g. {step}('numpy')")
    if any(ch.isspace() for ch in name):
        raise ConfigError(f"{step} package {name!r} contains whitespace; pass each package as its own "
                          f"argument, e.g. {step}({', '.join(repr(p) for p in name.split())}).")
    return name


def _storage(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"Image storage must be a positive number of GB, got {value!r}; e.g. storage=16.")
    return int(value) if float(value).is_integer() else float(value)


def _login(values: dict[str, Any]) -> tuple[tuple[str, str | Secret], ...]:
    """Docker login fields that are set; a plain password becomes a Secret so no repr shows it."""
    pairs = []
    for key in _LOGIN_KEYS:
        value = values[key]
        if value is None:
            continue
        if not isinstance(value, Secret):
            _text(value, key, f"pass {key}='...' (or a Secret)")
            value = Secret(value) if key == "docker_login_pass" else value
        pairs.append((key, value))
    return tuple(pairs)


def _dst(dst: Any) -> str:
    dst = _text(dst, "copy dst", "name where the file goes inside the worker's directory, e.g. 'data'")
    parts = dst.replace("\\", "/").split("/")
    if ".." in parts:
        raise ConfigError(f"copy dst {dst!r} contains '..'; use a path inside the bundle such as 'data/file'.")
    if posixpath.normpath(dst.replace("\\", "/")) == ".":
        raise ConfigError(f"copy dst {dst!r} is the bundle root itself; name a folder, e.g. copy(src, 'data').")
    return dst


class Image:
    """The worker image: base image, storage, packages, env, GPU requirements, steps and ports."""

    def __init__(self, from_image: str, storage: float = DEFAULT_STORAGE, *, docker_login_user: str | None = None,
                 docker_login_pass: str | Secret | None = None, docker_login_repo: str | None = None,
                 offers: "OffersFunction | None" = None):
        """``offers(spec, api_key)`` answers ``preview_offers``; ``app.image(...)`` passes one that asks Vast
        with the deployment's key (this module is data and never reaches the network itself)."""
        from_image = _text(from_image, "Image name", f"use e.g. {DEFAULT_IMAGE!r}")
        if any(ch.isspace() for ch in from_image):
            raise ConfigError(f"Image name {from_image!r} contains whitespace; use e.g. {DEFAULT_IMAGE!r}.")
        self._from_image = from_image
        self._storage = _storage(storage)
        self._docker_login = _login({"docker_login_user": docker_login_user, "docker_login_pass": docker_login_pass,
                                     "docker_login_repo": docker_login_repo})
        self._pip: list[str] = []
        self._apt: list[str] = []
        self._env: dict[str, str | Secret] = {}
        self._required = Query()      # only what the user asked for; defaults are applied in requirements
        self._runs: list[str | tuple[str, ...]] = []
        self._copies: list[tuple[str, str]] = []
        self._venv: str | None = None
        self._system_python = False
        self._ports: set[tuple[int, str]] = {DEFAULT_PORT}
        self._offers = offers

    # -- steps -------------------------------------------------------------------------
    def require(self, *queries: Query) -> "Image":
        """Add GPU/machine filters; a later bound on the same column and op replaces the earlier."""
        for query in queries:
            if not isinstance(query, Query):
                raise ConfigError(f"require() takes queries such as gpu_ram >= 24 (from vast_magic.query), got "
                                  f"{type(query).__name__} {query!r}; for text use parse_requirement('...').")
            self._required = self._required.with_overrides(query)
        return self

    def pip_install(self, *packages: str) -> "Image":
        names = [_package(p, "pip_install") for p in packages]
        self._pip.extend(p for p in dict.fromkeys(names) if p not in self._pip)
        return self

    def apt_get(self, *packages: str) -> "Image":
        names = [_package(p, "apt_get") for p in packages]
        self._apt.extend(p for p in dict.fromkeys(names) if p not in self._apt)
        return self

    def env(self, **variables: str | Secret) -> "Image":
        """Set environment variables (the last value wins); a Secret never reaches config.json.

        Every value must survive Vast's env string and the stock worker's system
        environment file (``_env_string``): no NUL or line break, not both quote
        kinds; checked here for every backend, so an image stays deployable on Vast.
        """
        for key, value in variables.items():
            if not NAME_PATTERN.match(key):
                raise ConfigError(f"env name {key!r} is invalid; use letters, digits and '_' not starting "
                                  "with a digit, e.g. MODEL_ID.")
            if not isinstance(value, (str, Secret)):
                raise ConfigError(f"env {key}={value!r}: values must be str or Secret; write {key}={str(value)!r} "
                                  f"or {key}=Secret.from_env({key!r}).")
            check_value(key, value.reveal() if isinstance(value, Secret) else value)
        self._env.update(variables)
        return self

    def run_script(self, script: str) -> "Image":
        """A shell script run in the bundle directory before contexts start."""
        script = _text(script, "run_script", "pass the script text, e.g. run_script('mkdir -p cache')")
        return self._add_run(script)

    def run_cmd(self, *argv: str) -> "Image":
        """A command (no shell) run in the bundle directory before contexts start."""
        if not argv or not all(isinstance(a, str) for a in argv) or not argv[0].strip():
            raise ConfigError(f"run_cmd takes the program and its arguments as strings, got {argv!r}; "
                              "e.g. run_cmd('python', 'prep.py').")
        return self._add_run(tuple(argv))

    def _add_run(self, run: str | tuple[str, ...]) -> "Image":
        if run not in self._runs:
            self._runs.append(run)
        return self

    def copy(self, src: str | os.PathLike, dst: str) -> "Image":
        """Ship ``src`` (resolved now, from the current directory) to ``dst`` inside the worker's directory."""
        if not isinstance(src, (str, os.PathLike)) or not str(src).strip():
            raise ConfigError(f"copy src must be a path, got {src!r}; e.g. copy('data/', 'data').")
        path = Path(src).expanduser().resolve()
        if not path.exists():
            raise ConfigError(f"copy src {str(src)!r} does not exist (looked at {path}); fix the path, it is "
                              f"resolved from the current directory {os.getcwd()}.")
        pair = (str(path), _dst(dst))
        if pair not in self._copies:
            self._copies.append(pair)
        return self

    def venv(self, path: str) -> "Image":
        """Use an existing venv in the image instead of the SDK-managed one (replaces use_system_python)."""
        self._venv = _text(path, "venv path", "e.g. venv('/venv/main')")
        self._system_python = False
        return self

    def use_system_python(self) -> "Image":
        """Use the image's system Python instead of a venv (replaces venv)."""
        self._system_python, self._venv = True, None
        return self

    def publish_port(self, number: int, type_: str = "tcp") -> "Image":
        if isinstance(number, bool) or not isinstance(number, numbers.Integral) or not 1 <= number <= 65535:
            raise ConfigError(f"publish_port number must be an int in 1..65535, got {number!r}.")
        if type_ not in _PORT_TYPES:
            raise ConfigError(f"publish_port type_ must be 'tcp' or 'udp', got {type_!r}.")
        self._ports.add((int(number), type_))
        return self

    # -- results -----------------------------------------------------------------------
    @property
    def requirements(self) -> Query:
        """The search defaults, minus any default column the user constrained, plus the user's filters."""
        return default_requirements().without_columns(self._required.columns()).with_overrides(self._required)

    def spec(self) -> ImageSpec:
        requirements = self.requirements
        return ImageSpec(
            from_image=self._from_image, storage=self._storage, pip=tuple(self._pip), apt=tuple(self._apt),
            env=tuple(self._env.items()), requirements=requirements, search=str(requirements),
            runs=tuple(self._runs), copies=tuple(self._copies), venv=self._venv,
            system_python=self._system_python, ports=tuple(sorted(self._ports)), docker_login=self._docker_login)

    def preview_offers(self, api_key: str | None = None, *, pricing: str = DEFAULT_PRICING):
        """How many Vast offers match this image's requirements, and at what price (needs an API key).

        ``pricing``: "on-demand" (the default), "interruptible" (Vast's ``bid``) or "reserved"; a
        misspelling is a ``ConfigError`` with a suggestion, before anything is sent.
        """
        offer_type(pricing)
        if self._offers is None:
            raise ConfigError("this Image cannot ask Vast for offers: create it with app.image(...), which asks "
                              "with the deployment's API key, or pass offers= (e.g. "
                              "vast_magic.backends.vast.offers.preview_offers) to Image(...).")
        if pricing == DEFAULT_PRICING:      # offers functions written for two arguments keep working
            return self._offers(self.spec(), api_key)
        return self._offers(self.spec(), api_key, pricing=pricing)

    def __repr__(self) -> str:
        spec = self.spec()
        parts = [repr(spec.from_image), f"storage={spec.storage!r}"]
        optional = {"pip": spec.pip, "apt": spec.apt, "env": dict(spec.env), "runs": spec.runs,
                    "copies": spec.copies, "ports": spec.ports if spec.ports != (DEFAULT_PORT,) else ()}
        parts += [f"{name}={value!r}" for name, value in optional.items() if value]
        if spec.python_mode != "default":
            parts.append(f"python={spec.python_mode!r}")
        if spec.docker_login:
            parts.append(f"docker_login={dict(spec.docker_login)!r}")
        parts.append(f"search={spec.search!r}")
        return f"Image({', '.join(parts)})"
