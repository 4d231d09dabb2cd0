"""runtime/sealed.py: what a worker's ``Opener`` accepts, and its bounded memory of nonces."""
from __future__ import annotations

import pytest

from vast_magic.runtime import sealed

KEY = bytes(range(32))
NOW = 1_800_000_000.0


def opener(**kw) -> sealed.Opener:
    return sealed.Opener(KEY, url="http://10.0.0.1:4000", clock=lambda: NOW, **kw)


def seal(payload=b"data", **kw) -> str:
    fields = dict(function="f", version="v1", url="http://10.0.0.1:4000/", now=NOW) | kw
    return sealed.seal(KEY, payload, **fields)


def test_a_sealed_envelope_opens_once():
    o = opener()
    text = seal()
    header, payload = o.open(text, "f")
    assert payload == b"data" and (header.function, header.version, header.url) == ("f", "v1", "http://10.0.0.1:4000")
    with pytest.raises(sealed.Refused, match="replayed"):
        o.open(text, "f")


# (envelope, function it is sent to, error)
REFUSED = [
    (seal(url="http://10.0.0.2:4000"), "f", "signed for worker http://10.0.0.2:4000, not this one"),
    (seal(), "g", "signed for function 'f', sent to 'g'"),
    (seal(now=NOW - 301), "f", r"timestamp is \+301s from this worker's clock \(limit 300s\)"),
    (sealed.seal(bytes(32), b"data", function="f", version=None, now=NOW), "f", "bad signature"),
    ("vm2.e30.AAAA.ZGF0YQ==", "f", "bad signature"),
    ("vm2.!!.AAAA.ZGF0YQ==", "f", "malformed header|bad signature"),
    (seal()[:-4] + "AAAA", "f", "payload does not match its signed digest"),
    ("gASVAAAA", "f", "not a signed vast_magic envelope"),
    (None, "f", "expected text, got NoneType"),
    (seal(b"x" * 2000), "f", r"\d+ bytes is over this worker's limit of 2000"),
]


@pytest.mark.parametrize("text,function,error", REFUSED, ids=[e.split()[0] for _, _, e in REFUSED])
def test_refused(text, function, error):
    with pytest.raises(sealed.Refused, match=error) as info:
        opener(max_bytes=2000).open(text, function)
    assert info.value.message.startswith("vast_magic envelope refused: ")


def test_nonce_memory_is_bounded_and_never_reopens_a_forgotten_nonce():
    o = opener(max_nonces=3)
    texts = [seal(now=NOW - 10 + i) for i in range(5)]
    for text in texts:
        o.open(text, "f")
    assert len(o._seen) == 3 and len(o._heap) == 3
    for text in texts:                       # forgotten ones are refused by age, the rest by nonce
        with pytest.raises(sealed.Refused, match="replayed"):
            o.open(text, "f")
    o.open(seal(now=NOW), "f")               # a newer envelope still opens


def test_expired_nonces_are_forgotten_without_raising_the_floor():
    clock = [NOW]
    o = sealed.Opener(KEY, clock=lambda: clock[0], max_age=10.0)
    o.open(sealed.seal(KEY, b"a", function="f", version=None, now=NOW), "f")
    clock[0] = NOW + 11
    o.open(sealed.seal(KEY, b"b", function="f", version=None, now=NOW + 11), "f")
    assert len(o._seen) == 1 and o._floor == float("-inf")


def test_worker_url_and_limit_from_the_environment():
    env = {"WORKER_PORT": "3000", "VAST_TCP_PORT_3000": "41234", "PUBLIC_IPADDR": "1.2.3.4"}
    assert sealed.worker_url(env) == "http://1.2.3.4:41234"
    assert sealed.worker_url(env | {"USE_SSL": "true"}) == "https://1.2.3.4:41234"
    assert sealed.worker_url({}) == ""
    assert sealed.max_bytes_from_env({sealed.MAX_BYTES_ENV: "1000"}) == 1000
    assert sealed.max_bytes_from_env({sealed.MAX_BYTES_ENV: "lots"}) == sealed.DEFAULT_MAX_BYTES
