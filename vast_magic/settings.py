"""The one place settings are resolved.

Precedence, highest first: an explicit argument, ``%config VastMagic.<name>``
(installed by the notebook layer through ``set_config_source``), the
environment variable ``VAST_MAGIC_<NAME>``, ``[tool.vast_magic]`` in the
nearest ``pyproject.toml`` above the working directory, then the default.
"""
from __future__ import annotations

import functools
import ipaddress
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["SettingSpec", "SETTINGS", "ConfigSource", "set_config_source", "resolve", "home", "is_loopback_url"]

if sys.version_info >= (3, 11):
    import tomllib
else:  # the backport of the same parser, a dependency on 3.10 (pyproject.toml)
    import tomli as tomllib


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text
    return parse


def _positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("expected a positive number of seconds")
    return number


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is ``localhost`` or a loopback IP literal (127.0.0.0/8, ::1)."""
    host = urlsplit(str(url)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _service_url(value: Any) -> str:
    """An https:// base URL (plain http:// only on loopback), without a trailing slash."""
    text = str(value).strip().rstrip("/")
    split = urlsplit(text)
    if split.scheme not in ("http", "https") or not split.hostname:
        raise ValueError("expected a base URL like https://console.vast.ai")
    if split.username or split.password or split.query or split.fragment:
        raise ValueError("write only scheme, host, port and path (no credentials, query or fragment)")
    if split.scheme == "http" and not is_loopback_url(text):
        raise ValueError("plain http:// is accepted only for loopback addresses (127.0.0.1, ::1, localhost); "
                         "use https://")
    return text


def _whole_number(minimum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            number = int(str(value).strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number < minimum:
            raise ValueError(f"expected a whole number >= {minimum}")
        return number
    return parse


def _switch(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected on or off (true/false, 1/0)")


def _path(value: Any) -> str:
    return str(Path(os.path.expanduser(str(value))).absolute())


SETTINGS: dict[str, SettingSpec] = {
    spec.name: spec
    for spec in (
        SettingSpec("backend", "local", _choice("local", "vast"), "where deployments run: local | vast"),
        SettingSpec("display", "auto", _choice("auto", "widget", "text"), "progress display: auto | widget | text"),
        SettingSpec("home", "~/.vast_magic", _path, "state directory of the local engine"),
        SettingSpec("deploy_timeout", 600.0, _positive_float, "seconds ensure_ready waits for workers"),
        SettingSpec("call_timeout", 600.0, _positive_float, "default per-call timeout in seconds"),
        SettingSpec("engine_idle_timeout", 600.0, _positive_float, "seconds an engine with no deployment stays up"),
        SettingSpec("vast_url", "https://console.vast.ai", _service_url, "the Vast API (webserver) base URL"),
        SettingSpec("autoscaler_url", "https://run.vast.ai", _service_url, "the Vast autoscaler base URL"),
        SettingSpec("vast_poll_interval", 5.0, _positive_float,
                    "seconds between readiness polls on Vast (below 5 only for a loopback autoscaler: a testing knob)"),
        SettingSpec("vast_max_request_bytes", 64 << 20, _whole_number(64 << 10),
                    "largest call a Vast worker accepts, in bytes of its envelope (set on the workers at deploy)"),
        SettingSpec("worker_log_bytes", 10 << 20, _whole_number(64 << 10),
                    "bytes of one local worker log file before it rotates (read when the engine starts)"),
        SettingSpec("worker_log_files", 3, _whole_number(1),
                    "log files kept per local worker, the current one included (read when the engine starts)"),
        SettingSpec("worker_fork", True, _switch,
                    "fork new local workers from a template that imported the deployment (read when the engine "
                    "starts); off: every worker is a fresh interpreter"),
    )
}

ConfigSource = Callable[[str], Any]
_config_source: ConfigSource | None = None


def set_config_source(source: ConfigSource | None) -> None:
    """Install the ``%config VastMagic`` lookup (returns None when a name is unset)."""
    global _config_source
    _config_source = source


def _pyproject_table(start: Path) -> Mapping[str, Any]:
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return _parsed_table(candidate, candidate.stat().st_mtime_ns)
    return {}


@functools.lru_cache(maxsize=8)
def _parsed_table(candidate: Path, mtime_ns: int) -> Mapping[str, Any]:
    """Parsed once per file version: a deploy resolves several settings, each must stay cheap."""
    try:
        data = tomllib.loads(candidate.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{candidate} is not valid TOML ({exc}); fix it or remove [tool.vast_magic].") from exc
    return types.MappingProxyType(data.get("tool", {}).get("vast_magic", {}))


def resolve(name: str, explicit: Any = None) -> Any:
    """The effective value of setting ``name`` following the documented precedence."""
    spec = SETTINGS.get(name)
    if spec is None:
        raise ConfigError(f"Unknown setting {name!r}; known settings: {', '.join(SETTINGS)}.")
    candidates = (
        ("argument", lambda: explicit),
        ("%config VastMagic", lambda: _config_source(name) if _config_source else None),
        (f"VAST_MAGIC_{name.upper()}", lambda: os.environ.get(f"VAST_MAGIC_{name.upper()}") or None),
        ("pyproject.toml [tool.vast_magic]", lambda: _pyproject_table(Path.cwd()).get(name)),
    )
    for origin, read in candidates:
        value = read()
        if value is not None:
            try:
                return spec.parse(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"Setting {name}={value!r} from {origin} is invalid: {exc}.") from exc
    return spec.parse(spec.default)


def home(explicit: str | None = None) -> Path:
    """``VAST_MAGIC_HOME``, created 0700 on first use."""
    path = Path(resolve("home", explicit))
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.stat(path).st_mode & 0o777 != 0o700:     # only when needed: a read-only home still serves calls
            os.chmod(path, 0o700)
    except OSError as exc:
        raise ConfigError(f"Cannot use {path} as VAST_MAGIC_HOME ({exc.strerror}); set VAST_MAGIC_HOME to a writable folder.") from exc
    return path
