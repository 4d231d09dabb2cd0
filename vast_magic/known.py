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


def closest_first(wanted: str, candidates: Iterable[str]) -> list[str]:
    """``candidates`` ordered by similarity to ``wanted`` (difflib's ratio), ties alphabetically."""
    def similarity(candidate: str) -> float:
        return difflib.SequenceMatcher(None, wanted, candidate, autojunk=False).ratio()
    return sorted(set(candidates), key=lambda c: (-similarity(c), c))


_WHERE = {"local": "local engine", "vast": "Vast from this machine"}
_LISTING = {"local": "`vast-magic ls`", "vast": "the Vast console"}


def unknown_deployment(name: str, tag: str | None, known: Iterable[tuple[str, str]], backend: str = "local",
                       hint: str = "") -> str | None:
    """None when (name, tag) is known (any tag of ``name`` when ``tag`` is None); else what to say:
    the known ones closest first, where to list them, and ``hint`` (what to do in this front end)."""
    pairs = {(str(n), str(t)) for n, t in known}
    if any(n == name and (tag is None or t == tag) for n, t in pairs):
        return None
    wanted, where = _label(name, tag), _WHERE.get(backend, backend)
    hint = f" {hint}" if hint else ""
    if not pairs:
        return f"there is no deployment {wanted} on the {where}, and none is known: deploy one first.{hint}"
    labels = [_label(n, t) for n, t in pairs] if tag is not None else sorted({n for n, _ in pairs})
    ordered = closest_first(wanted, labels)
    shown = ", ".join(ordered[:SHOWN]) + (f" and {len(ordered) - SHOWN} more" if len(ordered) > SHOWN else "")
    return (f"there is no deployment {wanted} on the {where}; known, closest first: {shown} "
            f"({_LISTING.get(backend, 'the backend')} lists them).{hint}")
