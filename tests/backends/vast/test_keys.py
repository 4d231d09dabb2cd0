"""API key lookup (reference 1.1) and the missing-key ConfigError."""
from __future__ import annotations

import pytest

from vast_magic.backends import get_backend
from vast_magic.backends.vast.keys import find_api_key, require_api_key
from vast_magic.errors import ConfigError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("explicit, env, xdg, files, expected", [
    ("arg", "env", True, {"xdg/vastai/vast_api_key": "xdg", ".vast_api_key": "legacy"}, "arg"),
    (None, "env", True, {"xdg/vastai/vast_api_key": "xdg", ".vast_api_key": "legacy"}, "env"),
    (None, None, True, {"xdg/vastai/vast_api_key": "xdg\n", ".vast_api_key": "legacy"}, "xdg"),
    (None, None, False, {".config/vastai/vast_api_key": "cfg", ".vast_api_key": "legacy"}, "cfg"),
    (None, None, True, {".config/vastai/vast_api_key": "ignored-when-xdg-set", ".vast_api_key": "legacy"}, "legacy"),
    (None, None, False, {".config/vastai/vast_api_key": "  \n", ".vast_api_key": "legacy"}, "legacy"),
    ("  ", "", False, {}, None),
])
def test_lookup_order(home, monkeypatch, explicit, env, xdg, files, expected):
    if env is not None:
        monkeypatch.setenv("VAST_API_KEY", env)
    if xdg:
        monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    for rel, text in files.items():
        write(home / rel, text)
    assert find_api_key(explicit) == expected


def test_missing_key_is_a_config_error_that_says_what_to_do(home):
    with pytest.raises(ConfigError, match="set VAST_API_KEY, pass api_key="):
        require_api_key(None)
    with pytest.raises(ConfigError, match="set VAST_API_KEY"):
        get_backend("vast", home=str(home / "vm"), api_key=None)


def test_get_backend_builds_the_vast_backend(home):
    backend = get_backend("vast", home=str(home / "vm"), api_key="k-123456")
    assert backend.kind == "vast" and "k-123456" not in repr(backend)


@pytest.mark.parametrize("explicit, env, expected", [
    (None, "  env-key \n", "env-key"),          # VAST_API_KEY is stripped, as by find_api_key
    (" arg-key\n", "env-key", "arg-key"),
    (None, None, None),
])
def test_deployment_api_key_is_find_api_key(home, monkeypatch, explicit, env, expected):
    from vast_magic import Deployment
    if env is not None:
        monkeypatch.setenv("VAST_API_KEY", env)
    app = Deployment(name="keys", api_key=explicit)
    assert app.api_key() == expected == find_api_key(explicit)
