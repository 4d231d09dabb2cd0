"""Offer pricing modes: the ``pricing=`` a user writes -> the ``type`` of Vast's offer search (reference 8.5).

Vast prices an offer three ways: ``on-demand`` (fixed price, high priority;
the default), interruptible (a minimum bid, paused when outbid; the API calls
it ``bid``, and the CLI rewrites ``interruptible`` to ``bid``) and ``reserved``
(a prepaid discount). We take the three words a user reads in Vast's console
and send what the CLI and SDK send. Anything else is a ``ConfigError`` raised
before a request, with the closest mode as a suggestion (Vast's own spellings,
``bid`` and the spec's ``ondemand``, point to ours).
"""
from __future__ import annotations

import difflib
from typing import Any

from .errors import ConfigError

__all__ = ["PRICING_TYPES", "DEFAULT_PRICING", "offer_type"]

#: what the user writes -> the ``type`` of ``POST /api/v0/bundles/``
PRICING_TYPES = {"on-demand": "on-demand", "interruptible": "bid", "reserved": "reserved"}
DEFAULT_PRICING = "on-demand"
#: Vast's own words for a mode, and common synonyms: the mode we suggest for them
_SYNONYMS = {"bid": "interruptible", "spot": "interruptible", "preemptible": "interruptible",
             "ondemand": "on-demand", "on_demand": "on-demand", "on demand": "on-demand", "reserve": "reserved"}


def offer_type(pricing: Any) -> str:
    """``pricing`` -> the search body's ``type``; a ``ConfigError`` with a suggestion for anything else."""
    if isinstance(pricing, str) and pricing in PRICING_TYPES:
        return PRICING_TYPES[pricing]
    raise ConfigError(f"pricing={pricing!r} is not a Vast pricing mode{_suggestion(pricing)}; use one of "
                      f"{', '.join(repr(mode) for mode in PRICING_TYPES)}.")


def _suggestion(pricing: Any) -> str:
    if not isinstance(pricing, str):
        return ""
    word = pricing.strip().lower()
    if word in PRICING_TYPES:
        return f" (did you mean {word!r}?)"
    if word in _SYNONYMS:
        return f" (did you mean {_SYNONYMS[word]!r}?)"
    close = difflib.get_close_matches(word, [*PRICING_TYPES, *_SYNONYMS], n=1, cutoff=0.6)
    return f" (did you mean {_SYNONYMS.get(close[0], close[0])!r}?)" if close else ""
