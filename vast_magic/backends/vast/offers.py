"""``preview_offers``: how many machines match an image's requirements, and at what price.

Posts the requirement query (``Query.to_api_dict()``) plus ``type``, ``order``
and ``limit`` to ``POST /api/v0/bundles/`` (reference 5, the SDK's
``AsyncClient.search``) and summarizes the ``offers``: count, the range of
``dph_total`` and the distinct GPU names. ``pricing`` ("on-demand",
"interruptible" or "reserved") becomes ``type`` (``pricing.offer_type``,
reference 8.5); a bad value fails before any request.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx

from ... import loop
from ...pricing import DEFAULT_PRICING, offer_type
from .api import DEFAULT_WEBSERVER, VastAPI
from .keys import require_api_key

__all__ = [
    "OFFER_LIMIT", "ORDER", "OfferPreview", "search_body", "summarize", "preview_offers_async", "preview_offers"
]

OFFER_LIMIT = 1000
ORDER = [["score", "desc"]]


@dataclass(frozen=True)
class OfferPreview:
    count: int
    min_dph: float | None
    max_dph: float | None
    gpu_names: tuple[str, ...]
    limit_reached: bool = False

    def __str__(self) -> str:
        if self.count == 0:
            return "no offers match these requirements; loosen image.require(...)"
        count = f"{self.count}{'+' if self.limit_reached else ''} offer{'s' if self.count != 1 else ''}"
        price = ""
        if self.min_dph is not None and self.max_dph is not None:
            price = f", ${self.min_dph:.2f}/h" if self.min_dph == self.max_dph else \
                f", ${self.min_dph:.2f}\u2013${self.max_dph:.2f}/h"
        gpus = f": {', '.join(self.gpu_names)}" if self.gpu_names else ""
        return f"{count}{price}{gpus}"

    def __repr__(self) -> str:
        return f"<OfferPreview {self}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else str(self))


def search_body(spec: Any, pricing: str = DEFAULT_PRICING) -> dict[str, Any]:
    """The JSON body of ``POST /api/v0/bundles/`` for an ImageSpec, priced as ``pricing``."""
    kind = offer_type(pricing)
    requirements = getattr(spec, "requirements", None)
    body = dict(requirements.to_api_dict()) if requirements is not None else {}
    body.update({"type": kind, "order": ORDER, "limit": OFFER_LIMIT})
    storage = getattr(spec, "storage", None)
    if storage:
        body["allocated_storage"] = storage
    return body


def summarize(offers: list[Any], limit: int = OFFER_LIMIT) -> OfferPreview:
    prices = [p for p in (_price(o) for o in offers) if p is not None]
    names = sorted({str(o["gpu_name"]) for o in offers if isinstance(o, dict) and o.get("gpu_name")})
    return OfferPreview(count=len(offers), min_dph=min(prices) if prices else None,
                        max_dph=max(prices) if prices else None, gpu_names=tuple(names),
                        limit_reached=len(offers) >= limit)


def _price(offer: Any) -> float | None:
    try:
        value = float(offer.get("dph_total"))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


async def preview_offers_async(spec: Any, api_key: str | None = None, *,
                               transport: httpx.AsyncBaseTransport | None = None,
                               webserver_url: str = DEFAULT_WEBSERVER, pricing: str = DEFAULT_PRICING) -> OfferPreview:
    body = search_body(spec, pricing)
    api = VastAPI(require_api_key(api_key), webserver_url=webserver_url, transport=transport)
    what = "POST /api/v0/bundles/"
    try:
        response = await api.request("POST", api.web("/api/v0/bundles/"), what=what, json=body)
        data = api.json(response, what)
    finally:
        await api.aclose()
    offers = data.get("offers") if isinstance(data, dict) else None
    return summarize(list(offers or []))


def preview_offers(spec: Any, api_key: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None,
                   webserver_url: str = DEFAULT_WEBSERVER, pricing: str = DEFAULT_PRICING) -> OfferPreview:
    """Blocking; works in scripts and notebooks (runs on vast_magic's background loop)."""
    offer_type(pricing)       # a misspelling fails here, in the caller's thread, before anything is sent
    return loop.run_sync(preview_offers_async(spec, api_key, transport=transport, webserver_url=webserver_url,
                                              pricing=pricing))
