"""Which deployments exist, and what to say about one that does not.

``vast-magic teardown no-such-name`` used to print "torn down" and exit 0: a
typo looked like success. Status, logs and teardown (CLI and magics) first
ask the backend which (name, tag) pairs it knows (the local engine's records
and worker logs; this machine's Vast records) and, for an unknown one, say so
with the known ones listed closest first. The Python API stays idempotent
(``app.teardown()`` twice is fine); only the commands people type check.
"""
from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["SHOWN", "closest_first", "unknown_deployment"]

SHOWN = 10          # known deployments listed in the message; the rest are counted


def _label(name: str, tag: str | None) -> str:
    return name if tag is None else f"{name}/{tag}"


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def closest_first(wanted: str, candidates: Iterable[str]) -> list[str]:
    """``candidates`` ordered by similarity to ``wanted`` (difflib's ratio), ties alphabetically."""
    return sorted(set(candidates), key=lambda c: (-_similarity(wanted, c), c))


def _closest_pairs(name: str, tag: str | None, pairs: set[tuple[str, str]]) -> list[str]:
    """Labels of the known deployments, the closest name first, then (for the same name) the closest tag."""
    if tag is None:
        return closest_first(name, {n for n, _ in pairs})
    ordered = sorted(pairs, key=lambda p: (-_similarity(name, p[0]), p[0], -_similarity(tag, p[1]), p[1]))
    return [_label(n, t) for n, t in ordered]


_WHERE = {"local": "on the local engine", "vast": "on Vast from this machine"}
_LISTING = {"local": "`vast-magic ls`", "vast": "the Vast console"}


def unknown_deployment(name: str, tag: str | None, known: Iterable[tuple[str, str]], backend: str = "local",
                       hint: str = "") -> str | None:
    """None when (name, tag) is known (any tag of ``name`` when ``tag`` is None); else what to say:
    the known ones closest first, where to list them, and ``hint`` (what to do in this front end)."""
    pairs = {(str(n), str(t)) for n, t in known}
    if any(n == name and (tag is None or t == tag) for n, t in pairs):
        return None
    wanted, where = _label(name, tag), _WHERE.get(backend, f"on {backend}")
    hint = f" {hint}" if hint else ""
    if not pairs:
        return f"there is no deployment {wanted} {where}, and none is known: deploy one first.{hint}"
    ordered = _closest_pairs(name, tag, pairs)
    shown = ", ".join(ordered[:SHOWN]) + (f" and {len(ordered) - SHOWN} more" if len(ordered) > SHOWN else "")
    return (f"there is no deployment {wanted} {where}; known, closest first: {shown} "
            f"({_LISTING.get(backend, 'the backend')} lists them).{hint}")
