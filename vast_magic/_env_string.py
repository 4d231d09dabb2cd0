"""Environment values as Vast's deployment ``env`` string carries them (reference 8.4).

The ``env`` field holds docker-run style flags (``-e NAME=value``). Vast's CLI
parses such a string (``vastai.utils.parse_env``) by splitting on spaces outside
quotes, where each ``'`` and each ``"`` toggles its own quote state whatever the
other one is doing (no escapes, no nesting); a value is everything after the
first ``=``, with every leading and trailing quote character stripped. Whether
Vast's server reads the string the same way is not confirmed, so we write only
values that this parser gives back exactly, and refuse the others before
anything is sent:

- a NUL, a newline or a carriage return: no process environment can hold a NUL,
  and a line break would also add lines to the worker's system environment
  file, to which the stock worker appends ``Image.env`` values unescaped
  (weakness 20), so ``Image.env`` checks its values with the same rule;
- both quote kinds: without escapes nothing can quote such a value;
- a quote character first or last: the parser strips it.

A value holding a space or a quote is wrapped in the quote kind it does not
contain; any other value is written bare, like the official SDK's own flags.
When the value holds an odd number of its quote kind (``it's``), one more of
that kind follows the closing quote (``"it's"'``): the parser's quote state for
that kind would otherwise stay open and swallow the flags that follow, and the
stripping of outer quote characters removes the extra one again.
Error messages name the variable and never show the value (it may be a secret).
"""
from __future__ import annotations

import re

from .errors import ConfigError

__all__ = ["NAME_PATTERN", "value_problem", "check_value", "render_value", "render_flag"]

#: what an environment variable may be called (``Image.env`` and every flag we write)
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_QUOTES = "'\""
_LINE_BREAKS = {"\x00": "a NUL character", "\n": "a newline", "\r": "a carriage return"}
_AS_FILE = "or ship it as a file with Image.copy(...) and read that file"


def _problem(value: str) -> tuple[str, str] | None:
    """(why the value cannot travel, what to do instead), or None when it can."""
    for char, what in _LINE_BREAKS.items():
        if char in value:
            return f"contains {what}", f"put the value on one line, {_AS_FILE}"
    if "'" in value and '"' in value:
        return "contains both kinds of quote (' and \")", f"use only one kind of quote in it, {_AS_FILE}"
    if value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
        return ("starts or ends with a quote character, which Vast's parser strips",
                f"leave out the outer quotes (values are quoted for you when needed), {_AS_FILE}")
    return None


def value_problem(value: str) -> str | None:
    """Why ``value`` cannot travel in the env string (a phrase), or None when it can."""
    found = _problem(value)
    return found[0] if found else None


def check_value(name: str, value: str, where: str = "env") -> None:
    """ConfigError naming ``name`` (never showing the value) when the value cannot be carried."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(f"{where} name {name!r} is invalid; use letters, digits and '_' not starting with a digit, "
                          "e.g. MODEL_ID.")
    if not isinstance(value, str):
        raise ConfigError(f"{where} {name}: values must be str, got {type(value).__name__}.")
    found = _problem(value)
    if found is not None:
        raise ConfigError(f"{where} {name}: the value {found[0]}, so Vast's env string cannot carry it unchanged "
                          f"(its parser has no escapes); {found[1]}.")


def render_value(value: str) -> str:
    """The value as the parser reads it back (call ``check_value`` first)."""
    if not any(c == " " or c in _QUOTES for c in value):
        return value
    quote, inner = ("'", '"') if '"' in value else ('"', "'")
    closer = inner if value.count(inner) % 2 else ""
    return f"{quote}{value}{quote}{closer}"


def render_flag(name: str, value: str) -> str:
    """``-e NAME=value``, checked: a ConfigError names the variable when its value cannot round-trip."""
    check_value(name, value)
    return f"-e {name}={render_value(value)}"
