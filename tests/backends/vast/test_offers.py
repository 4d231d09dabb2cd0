"""preview_offers: POST /api/v0/bundles/ with the query dict (reference 5) and a readable summary."""
from __future__ import annotations

import pytest

from vast_magic.backends.vast.offers import OFFER_LIMIT, OfferPreview, preview_offers, search_body, summarize
from vast_magic.errors import ConfigError, VastAuthError
from vast_magic.testing import FakeVast
from tests.backends.vast.vast_harness import KEY, Image, Query


def offer(gpu, dph):
    return {"id": hash((gpu, dph)) % 10000, "gpu_name": gpu, "dph_total": dph, "num_gpus": 1}


def test_request_body_and_summary():
    fake = FakeVast(api_key=KEY, offers=[offer("RTX 4090", 0.45), offer("H100 SXM", 2.4), offer("RTX 4090", 0.31)])
    spec = Image(storage=32, requirements=Query("gpu_ram>=24", {"gpu_ram": {"gte": 24000}, "verified": {"eq": True}}))
    preview = preview_offers(spec, api_key=KEY, transport=fake.transport())
    (sent,) = fake.sent("POST", "/api/v0/bundles/")
    assert sent.headers["authorization"] == f"Bearer {KEY}" and sent.query == {"api_key": KEY}
    assert sent.body == {"gpu_ram": {"gte": 24000}, "verified": {"eq": True}, "type": "on-demand",
                         "order": [["score", "desc"]], "limit": OFFER_LIMIT, "allocated_storage": 32}
    assert preview == OfferPreview(3, 0.31, 2.4, ("H100 SXM", "RTX 4090"))
    assert str(preview) == "3 offers, $0.31\u2013$2.40/h: H100 SXM, RTX 4090"
    assert repr(preview) == "<OfferPreview 3 offers, $0.31\u2013$2.40/h: H100 SXM, RTX 4090>"


@pytest.mark.parametrize("offers, text", [
    ([], "no offers match these requirements; loosen image.require(...)"),
    ([offer("A100 SXM4", 1.0)], "1 offer, $1.00/h: A100 SXM4"),
    ([{"gpu_name": "L4", "dph_total": None}, {"dph_total": "nan"}], "2 offers: L4"),
    ([offer("L4", 0.2)] * OFFER_LIMIT, f"{OFFER_LIMIT}+ offers, $0.20/h: L4"),
])
def test_summary_text(offers, text):
    assert str(summarize(offers)) == text


def test_pretty_printer_uses_the_summary():
    class Printer:
        def __init__(self):
            self.out = ""

        def text(self, value):
            self.out += value
    printer = Printer()
    summarize([offer("L4", 0.2)])._repr_pretty_(printer, False)
    assert printer.out == "1 offer, $0.20/h: L4"


def test_rejected_key():
    fake = FakeVast(api_key="another-key")
    with pytest.raises(VastAuthError, match="set VAST_API_KEY"):
        preview_offers(Image(), api_key=KEY, transport=fake.transport())


def test_an_apps_image_asks_vast_with_the_apps_key_and_transport(monkeypatch):
    """The seam: Image is data; app.image(...) gives it the function that asks Vast (Deployment's key, transport)."""
    from vast_magic import Deployment
    from vast_magic.query import gpu_ram
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    fake = FakeVast(api_key=KEY, offers=[offer("RTX 4090", 0.45)])
    app = Deployment(name="offers", api_key=KEY, transport=fake.transport())
    image = app.image("vastai/base-image:@vastai-automatic-tag", storage=20).require(gpu_ram >= 24)
    assert str(image.preview_offers()) == "1 offer, $0.45/h: RTX 4090"
    (sent,) = fake.sent("POST", "/api/v0/bundles/")
    assert sent.query == {"api_key": KEY} and sent.body["allocated_storage"] == 20
    with pytest.raises(VastAuthError):
        image.preview_offers(api_key="not-the-key")             # an explicit key wins over the app's
    assert str(app.image_or_default().preview_offers()) == "1 offer, $0.45/h: RTX 4090"


# pricing= -> the body's ``type`` (reference 8.5: the CLI rewrites interruptible to bid)
@pytest.mark.parametrize("pricing, sent", [("on-demand", "on-demand"), ("interruptible", "bid"),
                                           ("reserved", "reserved")])
def test_pricing_is_the_bodys_type(pricing, sent):
    fake = FakeVast(api_key=KEY, offers=[offer("L4", 0.2)])
    preview_offers(Image(), api_key=KEY, transport=fake.transport(), pricing=pricing)
    assert fake.sent("POST", "/api/v0/bundles/")[0].body["type"] == sent
    assert search_body(Image(), pricing)["type"] == sent


PRICING_TYPOS = [
    ("interuptible", "did you mean 'interruptible'?"),
    ("bid", "did you mean 'interruptible'?"),                 # Vast's word for it
    ("spot", "did you mean 'interruptible'?"),
    ("ondemand", "did you mean 'on-demand'?"),                # the API spec's enum spelling
    ("On-Demand", "did you mean 'on-demand'?"),
    ("on_demand", "did you mean 'on-demand'?"),
    ("reserverd", "did you mean 'reserved'?"),
    ("cheapest", ""),
    (None, ""),
    (3, ""),
]


@pytest.mark.parametrize("pricing, hint", PRICING_TYPOS)
def test_pricing_misspelling_is_a_config_error_with_a_suggestion(pricing, hint):
    fake = FakeVast(api_key=KEY)
    with pytest.raises(ConfigError) as info:
        preview_offers(Image(), api_key=KEY, transport=fake.transport(), pricing=pricing)
    suggestion = f" ({hint})" if hint else ""
    assert str(info.value) == (f"pricing={pricing!r} is not a Vast pricing mode{suggestion}; use one of "
                               "'on-demand', 'interruptible', 'reserved'.")
    assert fake.requests == []                                 # raised before anything is sent


def test_an_apps_image_previews_with_pricing(monkeypatch):
    from vast_magic import Deployment
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    fake = FakeVast(api_key=KEY, offers=[offer("RTX 4090", 0.2)])
    image = Deployment(name="offers", api_key=KEY, transport=fake.transport()).image()
    assert str(image.preview_offers(pricing="interruptible")) == "1 offer, $0.20/h: RTX 4090"
    assert fake.sent("POST", "/api/v0/bundles/")[0].body["type"] == "bid"
    with pytest.raises(ConfigError, match="did you mean 'reserved'"):
        image.preview_offers(pricing="reservd")
    assert len(fake.requests) == 1
